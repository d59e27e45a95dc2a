//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	configv1 "k8s.io/kubelet/config/v1"

	"github.com/vault-registry/vault-plugin-registry/credprovider/kubeletexec"
	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

// The kubelet credential provider without a cluster, with real parts: a
// service-account token signed here as the API server would sign it,
// Vault's jwt auth verifying it with the public key (mounted at
// "kubernetes", the path the shipped configuration names), the provider
// run as the kubelet runs it (deploy/kubernetes's configuration: its args,
// env and token audience), and containerd's CRI pulling with the answer
// (`crictl pull --creds`, what the kubelet asks of containerd).

const (
	saIssuer        = "https://kubernetes.default.svc.cluster.local"
	providerConfig  = "../deploy/kubernetes/credential-provider-config.yaml"
	roleAnnotation  = "vault-registry.io/role"
	criNamespace    = "k8s.io" // the containerd namespace of CRI's images
	kubeletTokenTTL = 10 * time.Minute
)

// serviceAccount is a Kubernetes service account and what Vault knows of it.
type serviceAccount struct {
	namespace, name string
	role            string // its Vault role (a jwt role bound to it)
	annotations     map[string]string
}

func (sa serviceAccount) subject() string {
	return "system:serviceaccount:" + sa.namespace + ":" + sa.name
}

// saIssuerKey signs service-account tokens as an API server does.
type saIssuerKey struct {
	key *ecdsa.PrivateKey
}

func newSAIssuer(t testing.TB) *saIssuerKey {
	t.Helper()
	return &saIssuerKey{key: testcert.NewKey(t)}
}

func (k *saIssuerKey) publicPEM(t testing.TB) string {
	t.Helper()
	return testcert.PublicKeyPEM(t, k.key)
}

// token is a projected service-account token for a pod of sa, with the
// claims the API server writes, for audience aud, expiring at exp.
func (k *saIssuerKey) token(t testing.TB, sa serviceAccount, aud string, exp time.Time) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": saIssuer, "aud": []string{aud}, "sub": sa.subject(), "jti": randomHex(t, 16),
		"iat": now.Add(-time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": exp.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      sa.namespace,
			"node":           map[string]any{"name": "node-1", "uid": randomHex(t, 8)},
			"pod":            map[string]any{"name": "app-0", "uid": randomHex(t, 8)},
			"serviceaccount": map[string]any{"name": sa.name, "uid": randomHex(t, 8)},
		},
	})
	tok.Header["kid"] = "e2e"
	s, err := tok.SignedString(k.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// bindServiceAccount gives sa a Vault jwt role bound to its subject and
// namespace, an entity named after it, and membership of its namespace's
// group, which the registry mount grants the namespace's repositories.
func bindServiceAccount(t testing.TB, v *Vault, svc *Service, accessor, audience string, sa serviceAccount) {
	t.Helper()
	v.root(t, http.MethodPut, "auth/kubernetes/role/"+sa.role, map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_subject": sa.subject(),
		"bound_audiences": []string{audience},
		"bound_claims": map[string]any{
			"/kubernetes.io/namespace":           sa.namespace,
			"/kubernetes.io/serviceaccount/name": sa.name,
		},
		"token_policies": identityPolicy, "token_type": "batch", "token_ttl": kubeletTokenTTL.String(),
	})
	entity := jsonField(v.root(t, http.MethodPost, "identity/entity", map[string]any{"name": "k8s-" + sa.namespace + "-" + sa.name}), "data", "id")
	v.root(t, http.MethodPost, "identity/entity-alias", map[string]any{"name": sa.subject(), "canonical_id": entity, "mount_accessor": accessor})
	group := "k8s-ns-" + sa.namespace
	v.root(t, http.MethodPost, "identity/group", map[string]any{"name": group, "member_entity_ids": []string{entity}})
	v.CLI(t, "write", svc.Name+"/groups/"+group, "access=repository:"+sa.namespace+"/*:pull")
}

// crictl runs crictl against containerd's CRI socket.
func crictl(t testing.TB, ctrd *Containerd, args ...string) Result {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "crictl.yaml")
	ep := "unix://" + ctrd.Address
	mustWrite(t, cfg, []byte("runtime-endpoint: "+ep+"\nimage-endpoint: "+ep+"\ntimeout: 60\n"))
	return RunCommand(t, baseEnv(dir), "", "", tool(t, "crictl"), append([]string{"--config", cfg}, args...)...)
}

// criHasLayer checks that containerd's CRI namespace holds img's layer.
func criHasLayer(t testing.TB, ctrd *Containerd, img *TestImage) {
	t.Helper()
	r := RunCommand(t, baseEnv(t.TempDir()), "", "", tool(t, "ctr"), "--address", ctrd.Address, "--namespace", criNamespace,
		"content", "get", img.LayerDigest)
	mustOK(t, r)
	if r.Stdout != string(img.Layer) {
		t.Errorf("the layer containerd pulled through CRI differs from the one pushed")
	}
}

// TestKubelet_credentialProviderPullsThroughCRI: a pod's service account
// pulls its namespace's image through containerd's CRI with what the
// provider answered; another namespace's service account is refused by
// the registry; an expired or wrong-audience token makes the provider fail
// with one line on stderr; a static pod (no service account) pulls with the
// node's Vault Agent token.
func TestKubelet_credentialProviderPullsThroughCRI(t *testing.T) {
	cfg, err := kubeletexec.LoadConfig(providerConfig)
	if err != nil {
		t.Fatal(err)
	}
	provider := cfg.Providers[0]
	audience := provider.TokenAttributes.ServiceAccountTokenAudience
	defaultRole := flagValue(t, provider, "-role")

	st := NewStack(t, "registry")
	v, svc := st.Vault, st.Services["registry"]
	svc.AddUsers(t, admin)
	reg := StartRegistry(t, Registry28, st.Relay, svc)
	ctrd := StartContainerdCRI(t)
	mustWrite(t, filepath.Join(ctrd.HostsDir, reg.Host, "hosts.toml"), fmt.Appendf(nil,
		"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg.Host, "http://"+reg.Host))

	// Vault: the jwt method at "kubernetes" trusting the issuer's key.
	issuer := newSAIssuer(t)
	v.CLIInput(t, readFileString(t, filepath.Join("..", "deploy", "policies", "identity.hcl")), "policy", "write", identityPolicy, "-")
	v.CLI(t, "auth", "enable", "-path=kubernetes", "jwt")
	v.root(t, http.MethodPut, "auth/kubernetes/config", map[string]any{"jwt_validation_pubkeys": []string{issuer.publicPEM(t)}, "bound_issuer": saIssuer})
	accessor := v.authAccessor(t, "kubernetes")
	teamA := serviceAccount{namespace: "team-a", name: "puller", role: defaultRole}
	teamB := serviceAccount{namespace: "team-b", name: "puller", role: "registry-pull-team-b"}
	teamB.annotations = map[string]string{roleAnnotation: teamB.role, "unrelated.example/x": "y"}
	for _, sa := range []serviceAccount{teamA, teamB} {
		bindServiceAccount(t, v, svc, accessor, audience, sa)
	}
	imgA := seed(t, reg, Crane, "team-a/app:v1")
	imgB := seed(t, reg, Crane, "team-b/app:v1")
	seed(t, reg, Crane, "team-a/other:v1") // never pulled through CRI before the refusal

	// The provider as the node runs it: the shipped args and env, with this
	// test's Vault and token file.
	nodeTokenFile := filepath.Join(t.TempDir(), "node-token")
	provider = withTestSettings(t, provider, v.Addr, nodeTokenFile)
	// exec runs the provider for image and returns the registry's
	// credentials; the answer must be cached for half the Vault token's TTL.
	exec := func(t *testing.T, image string, pod *kubeletexec.Pod, tokenTTL time.Duration) (user, password string, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		resp, err := kubeletexec.Exec(ctx, bins.credProvider, provider, baseEnv(t.TempDir()), image, pod)
		if err != nil {
			return "", "", err
		}
		a, ok := resp.Auth[reg.Host]
		if !ok || len(resp.Auth) != 1 {
			t.Fatalf("auth %v, want one entry for %s", resp.Auth, reg.Host)
		}
		if d := resp.CacheDuration; resp.CacheKeyType != "Registry" || d == nil || d.Duration > tokenTTL/2 || d.Duration < tokenTTL/2-time.Minute {
			t.Errorf("cache %s for %v, want Registry for half the Vault token's %v", resp.CacheKeyType, d, tokenTTL)
		}
		return a.Username, a.Password, nil
	}
	podOf := func(sa serviceAccount, aud string, exp time.Time) *kubeletexec.Pod {
		return &kubeletexec.Pod{ServiceAccountToken: issuer.token(t, sa, aud, exp), Annotations: sa.annotations}
	}
	pull := func(t *testing.T, user, password, repoTag string) Result {
		t.Helper()
		return crictl(t, ctrd, "pull", "--creds", user+":"+password, reg.Ref(repoTag))
	}
	var secrets []string

	t.Run("a service account pulls its namespace's image through CRI", func(t *testing.T) {
		user, password, err := exec(t, reg.Ref("team-a/app:v1"), podOf(teamA, audience, time.Now().Add(time.Hour)), kubeletTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, password)
		if user != "vault" {
			t.Errorf("user %q, want vault", user)
		}
		mustOK(t, pull(t, user, password, "team-a/app:v1"))
		criHasLayer(t, ctrd, imgA)
	})

	t.Run("a service account of another namespace is refused by the registry", func(t *testing.T) {
		// team-b's role comes from its annotation, let through by tokenAttributes.
		user, password, err := exec(t, reg.Ref("team-a/other:v1"), podOf(teamB, audience, time.Now().Add(time.Hour)), kubeletTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, password)
		delta := outcomesOf(t, st.Relay, func() {
			mustFailWith(t, "team-b pulls team-a's image", pull(t, user, password, "team-a/other:v1"), insufficientScope)
		})
		if !only(delta, Minted) {
			t.Errorf("relay answers: %v, want only minted (a token without team-a's repositories)", delta)
		}
		// The same credentials pull team-b's own image.
		mustOK(t, pull(t, user, password, "team-b/app:v1"))
		criHasLayer(t, ctrd, imgB)
	})

	t.Run("an expired or wrong-audience token fails with one line", func(t *testing.T) {
		for name, pod := range map[string]*kubeletexec.Pod{
			"expired":        podOf(teamA, audience, time.Now().Add(-time.Minute)),
			"wrong audience": podOf(teamA, "api", time.Now().Add(time.Hour)),
			"another role's subject": {ServiceAccountToken: issuer.token(t, teamB, audience, time.Now().Add(time.Hour)),
				Annotations: map[string]string{roleAnnotation: teamA.role}},
		} {
			_, _, err := exec(t, reg.Ref("team-a/app:v1"), pod, kubeletTokenTTL)
			var ee *kubeletexec.ExecError
			if !errors.As(err, &ee) {
				t.Errorf("%s: want the provider to fail, got %v", name, err)
				continue
			}
			line := strings.TrimSuffix(ee.Stderr, "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "vault-registry-credential-provider: ") ||
				!strings.Contains(line, "Vault answered 400") || strings.Contains(line, pod.ServiceAccountToken) {
				t.Errorf("%s: stderr %q, want one line with Vault's refusal and no token", name, ee.Stderr)
			}
			t.Logf("%s: %s", name, line)
		}
	})

	t.Run("a static pod pulls with the node's Vault Agent token", func(t *testing.T) {
		// The node's identity: an AppRole login, the token Vault Agent's
		// sink would hold, in a group granted base images.
		v.CLI(t, "auth", "enable", "approle")
		v.root(t, http.MethodPut, "auth/approle/role/node", map[string]any{"token_policies": identityPolicy, "token_ttl": "1h"})
		roleID := jsonField(v.root(t, http.MethodGet, "auth/approle/role/node/role-id", nil), "data", "role_id")
		secretID := jsonField(v.root(t, http.MethodPost, "auth/approle/role/node/secret-id", nil), "data", "secret_id")
		nodeToken, entity := v.login(t, "auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
		v.root(t, http.MethodPost, "identity/group", map[string]any{"name": "k8s-nodes", "member_entity_ids": []string{entity}})
		v.CLI(t, "write", svc.Name+"/groups/k8s-nodes", "access=repository:base/*:pull")
		mustWrite(t, nodeTokenFile, []byte(nodeToken+"\n"))
		img := seed(t, reg, Crane, "base/pause:v1")
		secrets = append(secrets, nodeToken)

		user, password, err := exec(t, reg.Ref("base/pause:v1"), nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if password != nodeToken {
			t.Errorf("the provider answered another token than the node's")
		}
		mustOK(t, pull(t, user, password, "base/pause:v1"))
		criHasLayer(t, ctrd, img)
	})
	assertLogsFree(t, secrets, st.Relay.Proc, ctrd.Proc)
}

// flagValue returns the value of -name=value in the provider's args.
func flagValue(t testing.TB, p configv1.CredentialProvider, name string) string {
	t.Helper()
	for _, a := range p.Args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Fatalf("%s: no %s in args %v", providerConfig, name, p.Args)
	return ""
}

// withTestSettings is the shipped provider entry with this test's Vault
// address (plain HTTP: no CA file) and the node's token file.
func withTestSettings(t testing.TB, p configv1.CredentialProvider, vaultAddr, tokenFile string) configv1.CredentialProvider {
	t.Helper()
	var env []configv1.ExecEnvVar
	for _, e := range p.Env {
		switch e.Name {
		case "VAULT_ADDR":
			e.Value = vaultAddr
		case "VAULT_CACERT":
			continue
		}
		env = append(env, e)
	}
	p.Env = env
	args := make([]string, len(p.Args))
	for i, a := range p.Args {
		if strings.HasPrefix(a, "-token-file=") {
			a = "-token-file=" + tokenFile
		}
		args[i] = a
	}
	p.Args = args
	if _, err := os.Stat(tokenFile); err == nil {
		t.Fatalf("%s exists before the test wrote it", tokenFile)
	}
	return p
}
