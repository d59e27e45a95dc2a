package credprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/credprovider/kubeletexec"
)

// fakeVault answers logins and lookup-self; what it got is in calls.
type fakeVault struct {
	*httptest.Server
	calls []vaultCall
}

type vaultCall struct {
	Path  string
	Token string
	Body  map[string]any
}

// startVault serves answer(path) as JSON with its status; VAULT_ADDR points
// at it for the test.
func startVault(t *testing.T, answer func(path string) (int, string)) *fakeVault {
	t.Helper()
	v := &fakeVault{}
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := vaultCall{Path: strings.TrimPrefix(r.URL.Path, "/v1/"), Token: r.Header.Get("X-Vault-Token")}
		_ = json.NewDecoder(r.Body).Decode(&c.Body)
		v.calls = append(v.calls, c)
		code, body := answer(c.Path)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write([]byte(body))
	}))
	t.Cleanup(v.Close)
	t.Setenv("VAULT_ADDR", v.URL)
	t.Setenv("VAULT_TOKEN", "env-token-must-not-be-used")
	t.Setenv("VAULT_MAX_RETRIES", "0")
	return v
}

func loginAnswer(token string, ttl int) string {
	return `{"auth":{"client_token":"` + token + `","lease_duration":` + itoa(ttl) + `,"renewable":false}}`
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

const saToken = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2lnbmF0dXJl"

// request is the kubelet's JSON, as it writes it.
func request(image, token string, annotations map[string]string) string {
	r := map[string]any{"kind": "CredentialProviderRequest", "apiVersion": "credentialprovider.kubelet.k8s.io/v1", "image": image}
	if token != "" {
		r["serviceAccountToken"] = token
	}
	if annotations != nil {
		r["serviceAccountAnnotations"] = annotations
	}
	b, _ := json.Marshal(r)
	return string(b)
}

// run runs Main as the binary would, and returns stdout and the error.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Main(context.Background(), args, func(string) string { return "" }, strings.NewReader(stdin), &out)
	return out.String(), err
}

func TestMain_serviceAccountTokenLogsInAndAnswersTheKubelet(t *testing.T) {
	v := startVault(t, func(string) (int, string) { return 200, loginAnswer("hvb.vault-token", 600) })
	out, err := run(t, request("registry.example.com:5000/team-a/app:v1", saToken, nil), "-auth-mount=jwt", "-role=team-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.calls) != 1 || v.calls[0].Path != "auth/jwt/login" || v.calls[0].Token != "" ||
		v.calls[0].Body["role"] != "team-a" || v.calls[0].Body["jwt"] != saToken {
		t.Fatalf("Vault got %+v, want one login at auth/jwt/login with role team-a, the token, and no Vault token", v.calls)
	}
	resp, err := kubeletexec.DecodeResponse([]byte(out))
	if err != nil {
		t.Fatalf("the kubelet would refuse %s: %v", out, err)
	}
	a, ok := resp.Auth["registry.example.com:5000"]
	if !ok || len(resp.Auth) != 1 || a.Username != "vault" || a.Password != "hvb.vault-token" {
		t.Errorf("auth %+v, want vault:<token> for registry.example.com:5000 only", resp.Auth)
	}
	if resp.CacheKeyType != "Registry" || resp.CacheDuration == nil || resp.CacheDuration.Duration != 5*time.Minute {
		t.Errorf("cache %s %v, want Registry for 5m (half of 10m)", resp.CacheKeyType, resp.CacheDuration)
	}
}

func TestMain_roleFromServiceAccountAnnotation(t *testing.T) {
	v := startVault(t, func(string) (int, string) { return 200, loginAnswer("hvb.t", 600) })
	ann := map[string]string{"vault-registry.io/role": "team-b-pull"}
	if _, err := run(t, request("localhost:5000/b/app:v1", saToken, ann), "-role=default-role"); err != nil {
		t.Fatal(err)
	}
	if len(v.calls) != 1 || v.calls[0].Path != "auth/kubernetes/login" || v.calls[0].Body["role"] != "team-b-pull" {
		t.Fatalf("Vault got %+v, want a login at auth/kubernetes/login with the annotation's role", v.calls)
	}
	// A role name that is no role name never reaches Vault.
	ann["vault-registry.io/role"] = "../sys/x"
	if _, err := run(t, request("localhost:5000/b/app:v1", saToken, ann)); err == nil || !strings.Contains(err.Error(), "vault-registry.io/role") {
		t.Errorf("a bad annotation: %v", err)
	}
	if len(v.calls) != 1 {
		t.Errorf("a bad annotation reached Vault: %+v", v.calls)
	}
}

func TestMain_refusalIsOneLineWithoutSecrets(t *testing.T) {
	// Vault's answer even echoes the token: it must not reach stderr.
	startVault(t, func(string) (int, string) {
		return 400, `{"errors":["error validating token: invalid audience (aud) claim","jwt was ` + saToken + `"]}`
	})
	_, err := run(t, request("localhost:5000/a/app:v1", saToken, nil), "-role=r")
	if err == nil {
		t.Fatal("a refused login succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || strings.Contains(msg, saToken) || strings.Contains(msg, "env-token") ||
		!strings.Contains(msg, "Vault answered 400: error validating token: invalid audience") || !strings.Contains(msg, "auth/kubernetes") {
		t.Errorf("error line %q: want one line with Vault's reason and the mount, without the token", msg)
	}
}

func TestMain_vaultUnreachableIsOneLine(t *testing.T) {
	v := startVault(t, nil)
	v.Close()
	_, err := run(t, request("localhost:5000/a/app:v1", saToken, nil), "-role=r")
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "auth/kubernetes") {
		t.Errorf("Vault down: %v", err)
	}
}

func TestMain_badRequestsAndSettings(t *testing.T) {
	startVault(t, func(string) (int, string) { return 200, loginAnswer("hvb.t", 600) })
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"not JSON", "{", nil, "not a CredentialProviderRequest"},
		{"another kind", `{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"a"}`, nil, "want a CredentialProviderRequest"},
		{"an old version", `{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1","image":"a"}`, nil, "v1alpha1"},
		{"no image", request("", saToken, nil), []string{"-role=r"}, "no image"},
		{"a bad image", request("UPPER/Case::x", saToken, nil), []string{"-role=r"}, "UPPER"},
		{"too big", strings.Repeat(" ", maxRequestBytes+1), nil, "over"},
		{"no role", request("a/b", saToken, nil), nil, "no Vault role"},
		{"no token, no fallback", request("a/b", "", nil), nil, "no service-account token"},
		{"unknown flag", request("a/b", saToken, nil), []string{"-nope"}, "-nope"},
		{"bad mount", request("a/b", saToken, nil), []string{"-auth-mount=../sys"}, "-auth-mount"},
		{"approle without files", request("a/b", "", nil), []string{"-fallback=approle"}, "-secret-id-file"},
		{"bad fallback", request("a/b", "", nil), []string{"-fallback=x"}, "-fallback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.stdin, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || out != "" {
				t.Errorf("got %v (stdout %q), want an error with %q and no output", err, out, tc.want)
			}
		})
	}
}

func TestMain_fallbacksToTheNodesIdentity(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("AppRole with a secret-id file", func(t *testing.T) {
		v := startVault(t, func(string) (int, string) { return 200, loginAnswer("hvb.node", 120) })
		out, err := run(t, request("localhost:5000/a/b:v1", "", nil), "-fallback=approle", "-approle-mount=nodes",
			"-role-id-file="+write("role-id", "rid\n"), "-secret-id-file="+write("secret-id", "sid\n"))
		if err != nil {
			t.Fatal(err)
		}
		if len(v.calls) != 1 || v.calls[0].Path != "auth/nodes/login" || v.calls[0].Body["role_id"] != "rid" || v.calls[0].Body["secret_id"] != "sid" {
			t.Fatalf("Vault got %+v", v.calls)
		}
		if !strings.Contains(out, `"password":"hvb.node"`) || !strings.Contains(out, `"cacheDuration":"1m0s"`) {
			t.Errorf("response %s", out)
		}
	})
	t.Run("a Vault Agent token file", func(t *testing.T) {
		v := startVault(t, func(string) (int, string) { return 200, `{"data":{"ttl":3600,"id":"hvs.agent"}}` })
		out, err := run(t, request("localhost:5000/a/b:v1", "", nil), "-fallback=token-file", "-token-file="+write("token", "hvs.agent\n"), "-max-cache=10m")
		if err != nil {
			t.Fatal(err)
		}
		if len(v.calls) != 1 || v.calls[0].Path != "auth/token/lookup-self" || v.calls[0].Token != "hvs.agent" {
			t.Fatalf("Vault got %+v, want lookup-self with the file's token", v.calls)
		}
		if !strings.Contains(out, `"password":"hvs.agent"`) || !strings.Contains(out, `"cacheDuration":"10m0s"`) {
			t.Errorf("response %s, want the token cached for -max-cache", out)
		}
	})
	t.Run("a missing token file names the file, not a token", func(t *testing.T) {
		startVault(t, nil)
		_, err := run(t, request("a/b", "", nil), "-fallback=token-file", "-token-file="+filepath.Join(dir, "none"))
		if err == nil || !strings.Contains(err.Error(), "-token-file") {
			t.Errorf("got %v", err)
		}
	})
}

func TestCacheDuration_halfTheTTLAtMostTheCap(t *testing.T) {
	for _, tc := range []struct{ ttl, cap, want time.Duration }{
		{10 * time.Minute, time.Hour, 5 * time.Minute},
		{4 * time.Hour, time.Hour, time.Hour},
		{0, 30 * time.Minute, 30 * time.Minute}, // no expiry
		{9 * time.Second, time.Hour, 0},         // too short to cache
		{11 * time.Second, time.Hour, 5 * time.Second},
	} {
		if got := cacheDuration(tc.ttl, tc.cap); got != tc.want {
			t.Errorf("cacheDuration(%v, %v) = %v, want %v", tc.ttl, tc.cap, got, tc.want)
		}
	}
}

func TestRegistryOf_imageNames(t *testing.T) {
	for image, want := range map[string]string{
		"nginx":                 "docker.io",
		"localhost:5000/a/b:v1": "localhost:5000",
		"registry.example.com/team-a/app@sha256:" + strings.Repeat("a", 64): "registry.example.com",
		"127.0.0.1:5000/x": "127.0.0.1:5000",
	} {
		if got, err := registryOf(image); err != nil || got != want {
			t.Errorf("registryOf(%q) = %q, %v; want %q", image, got, err, want)
		}
	}
}

// TestShippedConfig_kubeletAcceptsIt: deploy/kubernetes's
// CredentialProviderConfig decodes strictly into the kubelet's type,
// passes the kubelet's checks, and its args and env parse here.
func TestShippedConfig_kubeletAcceptsIt(t *testing.T) {
	cfg, err := kubeletexec.LoadConfig("../deploy/kubernetes/credential-provider-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Providers[0]
	if len(cfg.Providers) != 1 || p.Name != Name || p.TokenAttributes == nil {
		t.Fatalf("want one provider %s with tokenAttributes, got %+v", Name, cfg.Providers)
	}
	env := map[string]string{}
	for _, e := range p.Env {
		env[e.Name] = e.Value
	}
	c, err := ParseConfig(p.Args, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the shipped args: %v", err)
	}
	if !slices.Contains(p.TokenAttributes.OptionalServiceAccountAnnotationKeys, c.RoleAnnotation) {
		t.Errorf("-role-annotation %q is not let through by tokenAttributes", c.RoleAnnotation)
	}
	if env["VAULT_ADDR"] == "" {
		t.Error("the shipped config sets no VAULT_ADDR")
	}
}

func TestParseConfig_environmentUnderFlags(t *testing.T) {
	env := map[string]string{"VAULT_REGISTRY_ROLE": "from-env", "VAULT_REGISTRY_AUTH_MOUNT": "jwt", "VAULT_REGISTRY_MAX_CACHE": "2m"}
	c, err := ParseConfig([]string{"-auth-mount=k8s"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Role != "from-env" || c.AuthMount != "k8s" || c.MaxCache != 2*time.Minute {
		t.Errorf("got role %q mount %q max-cache %v; want the environment's role and cap, the flag's mount", c.Role, c.AuthMount, c.MaxCache)
	}
}
