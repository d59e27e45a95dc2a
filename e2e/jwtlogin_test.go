//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

// ciIssuer signs CI-shaped JWTs (GitLab's id_tokens) with an ES256 key.
type ciIssuer struct {
	t   testing.TB
	key *ecdsa.PrivateKey
}

func newCIIssuer(t testing.TB) *ciIssuer {
	t.Helper()
	return &ciIssuer{t: t, key: testcert.NewKey(t)}
}

// publicPEM is the key Vault's jwt_validation_pubkeys takes.
func (c *ciIssuer) publicPEM() string {
	return testcert.PublicKeyPEM(c.t, c.key)
}

const ciJWTIssuer = "https://gitlab.example.test"

// job signs a job's JWT for project with audience aud, ending at exp. aud
// is a single string, as GitLab writes it.
func (c *ciIssuer) job(project, aud string, exp time.Time) string {
	c.t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": ciJWTIssuer, "aud": aud, "sub": "project_path:" + project + ":ref_type:branch:ref:main",
		"project_path": project, "ref_protected": "true", "iat": now.Add(-time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "exp": exp.Unix(),
	})
	s, err := tok.SignedString(c.key)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// ciAudience is the audience the jwt role is bound to.
const ciAudience = "registry.example.test"

// acmePushRole is the jwt role of the CI jobs of projects acme/*, on
// protected refs, for audience ciAudience; the project path names the
// entity alias.
var acmePushRole = map[string]any{
	"role_type": "jwt", "user_claim": "project_path", "bound_audiences": []string{ciAudience},
	"bound_claims":      map[string]any{"project_path": "acme/*", "ref_protected": "true"},
	"bound_claims_type": "glob",
	"token_policies":    identityPolicy, "token_type": "batch", "token_ttl": "10m",
}

// newJWTStack is an identity stack whose relay has jwt_logins user
// gitlab-ci at Vault's jwt mount "gitlab", role acme-push (audience
// ciAudience, project_path acme/*, protected refs), and the entity of
// project acme/app (its alias, the user_claim) with push and pull on
// acme/app/**. Plugin user dave owns dave/*.
func newJWTStack(t *testing.T) (*identityStack, *ciIssuer) {
	t.Helper()
	st := newIdentityStack(t, "identity:\n  jwt_logins:\n    - {user: gitlab-ci, mount: gitlab, role: acme-push}\n"+
		"    - {user: oidc-ci, mount: oidc, role: acme-push}\n")
	v := st.Vault
	ci := newCIIssuer(t)
	v.CLI(t, "auth", "enable", "-path=gitlab", "jwt")
	v.root(t, http.MethodPut, "auth/gitlab/config", map[string]any{"jwt_validation_pubkeys": []string{ci.publicPEM()}, "bound_issuer": ciJWTIssuer})
	v.root(t, http.MethodPut, "auth/gitlab/role/acme-push", acmePushRole)
	out := v.root(t, http.MethodPut, "identity/entity", map[string]any{"name": "ci-acme-app"})
	v.root(t, http.MethodPut, "identity/entity-alias", map[string]any{
		"name": "acme/app", "canonical_id": jsonField(out, "data", "id"), "mount_accessor": v.authAccessor(t, "gitlab"),
	})
	v.CLI(t, "write", "registry/entities/ci-acme-app", "access=repository:acme/app/**:push,pull")
	st.svc.WriteUser(t, "dave", "dave-pw", "repository:dave/*:*")
	return st, ci
}

// TestJWTLogin_ciJobLogsInWithItsJWT: a CI job without a vault binary
// logs in with crane as user gitlab-ci and its JWT as the password
// (identity.jwt_logins); the relay logs in at Vault's jwt auth (a role
// bound to an audience and a project path) and asks token/identity. The
// job pushes to its project's repositories (access of its entity, whose
// alias is the project path) on registry 2.8 and v3, and nowhere else; a
// wrong audience, an expired JWT, another project, another key: each 401
// with the body of a wrong password. One Vault login serves the job's
// requests. No JWT and no Vault token in the relay's or Vault's log.
func TestJWTLogin_ciJobLogsInWithItsJWT(t *testing.T) {
	st, ci := newJWTStack(t)
	v := st.Vault
	good := ci.job("acme/app", ciAudience, time.Now().Add(10*time.Minute))
	if len(good) <= 0 || len(good) > 8<<10 {
		t.Fatalf("a %d-byte JWT", len(good))
	}
	before := identityLogins(t, st.relay)
	st.pushPullAs(t, "gitlab-ci", good, "acme/app/api:build-1")
	st.pushFails(t, "gitlab-ci", good, "acme/other:build-1")
	st.pushFails(t, "gitlab-ci", good, "dave/app:build-1")
	after := identityLogins(t, st.relay)
	if n := after["login"] - before["login"]; n != 1 {
		t.Errorf("%v Vault logins for one job's JWT; want 1 (its Vault token reused)", n)
	}
	if n := after["reused"] - before["reused"]; n < 3 {
		t.Errorf("the job's Vault token reused %v times; want several", n)
	}
	claims := scopedToken(t, st.relay, "gitlab-ci", good, "repository:acme/app/api:push,pull", "repository:acme/other:push")
	if g := grantString(claims); !strings.HasPrefix(g, "repository:acme/app/api:") || !strings.Contains(g, "push") || strings.Contains(g, "acme/other") {
		t.Errorf("the job's grant %q", g)
	}

	other := newCIIssuer(t)
	_, _, wrongPassword := st.relay.Token(t, "registry", "dave", "wrong")
	bad := map[string]string{
		"wrong audience":  ci.job("acme/app", "vault", time.Now().Add(10*time.Minute)),
		"expired":         ci.job("acme/app", ciAudience, time.Now().Add(-time.Minute)),
		"another project": ci.job("evil/app", ciAudience, time.Now().Add(10*time.Minute)),
		"another key":     other.job("acme/app", ciAudience, time.Now().Add(10*time.Minute)),
		"not a JWT":       "not-a-jwt",
	}
	for what, jobJWT := range bad {
		code, _, body := st.relay.Token(t, "registry", "gitlab-ci", jobJWT, "repository:acme/app/api:pull")
		if code != http.StatusUnauthorized || string(body) != string(wrongPassword) {
			t.Errorf("%s: %d %s; want 401 %s", what, code, truncate(body, 200), wrongPassword)
		}
	}
	if n := identityLogins(t, st.relay)["refused"] - after["refused"]; n != float64(len(bad)) {
		t.Errorf("%v refused logins counted, want %d", n, len(bad))
	}
	// And a client sees the refusal: crane cannot push with them.
	c := NewClient(t, Crane)
	mustOK(t, c.Login(st.regs[0], "gitlab-ci", bad["expired"]))
	mustFail(t, "push with an expired JWT", c.Push(st.regs[0], "acme/app/api:build-2", NewTestImage(t)))

	secrets := []string{good, "hvb."}
	for _, b := range bad {
		secrets = append(secrets, b)
	}
	// A JWT's header and payload are the same for every job of a kind; its
	// signature is what is secret to the job.
	for _, j := range append([]string{good}, bad["expired"], bad["another key"]) {
		secrets = append(secrets, j[strings.LastIndex(j, ".")+1:])
	}
	assertLogsFree(t, secrets, st.relay.Proc, v.Proc)
}

// TestJWTLogin_dockerLogin: `echo "$CI_JOB_JWT" | docker login -u
// gitlab-ci --password-stdin` (the daemon asks the relay), then docker
// pushes and pulls the project's image on registry 2.8 and v3 and is
// denied another project's; docker login with an expired JWT fails as
// with a wrong password. No JWT in any log, the daemons' included.
func TestJWTLogin_dockerLogin(t *testing.T) {
	st, ci := newJWTStack(t)
	ctrd := StartContainerd(t)
	dockerd := StartDockerd(t, ctrd)
	good := ci.job("acme/app", ciAudience, time.Now().Add(10*time.Minute))
	expired := ci.job("acme/app", ciAudience, time.Now().Add(-time.Minute))
	for _, reg := range st.regs {
		d := NewDocker(t, dockerd)
		mustFailWith(t, "docker login with an expired JWT", d.Login(reg, "gitlab-ci", expired), "unauthorized")
		mustOK(t, d.Login(reg, "gitlab-ci", good))
		ref := reg.Ref("acme/app/api:docker")
		mustOK(t, d.Run("", buildContext(t, "FROM scratch\nCOPY "+payloadName+" /\n"), classicBuilder, "build", "-t", ref, "."))
		mustOK(t, d.Run("", "", nil, "push", ref))
		mustOK(t, d.Run("", "", nil, "image", "rm", ref))
		mustOK(t, d.Run("", "", nil, "pull", ref))
		other := reg.Ref("dave/app:docker")
		mustOK(t, d.Run("", "", nil, "tag", ref, other))
		mustFailWith(t, "docker push to another project", d.Run("", "", nil, "push", other), "denied")
	}
	assertLogsFree(t, []string{good, expired, good[strings.LastIndex(good, ".")+1:], "hvb."},
		st.relay.Proc, st.Vault.Proc, dockerd.Proc, ctrd.Proc)
}

// TestJWTLogin_oidcProviderByDiscovery: an OIDC provider on loopback,
// found by its discovery URL: Vault's own identity tokens
// (identity/oidc, ES256 keys published at its JWKS URL) stand for a CI
// system's. A second jwt mount, "oidc", has only oidc_discovery_url; a CI
// runner's entity asks identity/oidc/token/ci for a JWT with a project
// claim, and crane logs in as jwt_logins user oidc-ci with it: pushes to
// the project, refused elsewhere; a token of another audience is refused
// like a wrong password.
func TestJWTLogin_oidcProviderByDiscovery(t *testing.T) {
	st, _ := newJWTStack(t)
	v := st.Vault
	issuer := v.Addr + "/v1/identity/oidc"
	v.root(t, http.MethodPut, "identity/oidc/config", map[string]any{"issuer": v.Addr})
	v.root(t, http.MethodPut, "identity/oidc/key/ci", map[string]any{"algorithm": "ES256", "allowed_client_ids": "*"})
	for _, r := range []struct{ name, aud string }{{"ci", ciAudience}, {"other", "another.example.test"}} {
		v.root(t, http.MethodPut, "identity/oidc/role/"+r.name, map[string]any{
			"key": "ci", "client_id": r.aud, "ttl": "5m",
			"template": `{"project_path": {{identity.entity.metadata.project}}, "ref_protected": "true"}`,
		})
	}
	// The CI runner: a userpass user whose entity carries its project.
	v.CLIInput(t, `path "identity/oidc/token/*" { capabilities = ["read"] }`, "policy", "write", "oidc-ci", "-")
	v.CLI(t, "auth", "enable", "userpass")
	v.root(t, http.MethodPut, "auth/userpass/users/runner", map[string]any{"password": "runner-pw", "token_policies": "oidc-ci"})
	runnerToken, runnerID := v.login(t, "auth/userpass/login/runner", map[string]any{"password": "runner-pw"})
	v.root(t, http.MethodPost, "identity/entity/id/"+runnerID, map[string]any{"metadata": map[string]string{"project": "acme/app"}})
	idToken := func(role string) string {
		t.Helper()
		code, out := v.callAs(t, runnerToken, http.MethodGet, "identity/oidc/token/"+role, nil)
		tok := jsonField(out, "data", "token")
		if code != http.StatusOK || tok == "" {
			t.Fatalf("identity/oidc/token/%s: %d %v", role, code, out)
		}
		return tok
	}

	v.CLI(t, "auth", "enable", "-path=oidc", "jwt")
	v.root(t, http.MethodPut, "auth/oidc/config", map[string]any{"oidc_discovery_url": issuer, "bound_issuer": issuer})
	v.root(t, http.MethodPut, "auth/oidc/role/acme-push", acmePushRole)
	// The project's entity (newJWTStack's) gets this mount's alias too.
	entity := v.root(t, http.MethodGet, "identity/entity/name/ci-acme-app", nil)
	v.root(t, http.MethodPut, "identity/entity-alias", map[string]any{
		"name": "acme/app", "canonical_id": jsonField(entity, "data", "id"), "mount_accessor": v.authAccessor(t, "oidc"),
	})

	good := idToken("ci")
	st.pushPullAs(t, "oidc-ci", good, "acme/app/oidc:build-1")
	st.pushFails(t, "oidc-ci", good, "dave/app:build-1")
	_, _, wrongPassword := st.relay.Token(t, "registry", "dave", "wrong")
	otherAud := idToken("other")
	code, _, body := st.relay.Token(t, "registry", "oidc-ci", otherAud, "repository:acme/app/oidc:pull")
	if code != http.StatusUnauthorized || string(body) != string(wrongPassword) {
		t.Errorf("a token of another audience: %d %s; want 401 %s", code, truncate(body, 200), wrongPassword)
	}
	// The gitlab mount does not take the provider's tokens: another key.
	code, _, body = st.relay.Token(t, "registry", "gitlab-ci", good, "repository:acme/app/oidc:pull")
	if code != http.StatusUnauthorized || string(body) != string(wrongPassword) {
		t.Errorf("the provider's token at the gitlab mount: %d %s", code, truncate(body, 200))
	}
	assertLogsFree(t, []string{good, otherAud, good[strings.LastIndex(good, ".")+1:], runnerToken, "hvb."}, st.relay.Proc, v.Proc)
}
