package relay

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

// ciJWT stands for a CI job's JWT of n bytes that the stand-in jwt mount
// accepts for role "ci": it starts with "good.".
func ciJWT(n int) string { return "good." + strings.Repeat("j", n-len("good.")) }

// jwtLogin is the identity Vault's jwt auth mount at "jwt", written by
// hand (Vault's jwt method needs Vault): role "ci" takes a JWT made by
// ciJWT and answers a token of entity group/app, hvs.ci-<n> for the nth
// login; other JWTs are refused the ways Vault's jwt method refuses them.
func (iv *identityVault) jwtLogin(req *plugintest.Request, _ string, body map[string]any) (string, plugintest.Token, error) {
	jwt, _ := body["jwt"].(string)
	refuse := func(status int, msg string) (string, plugintest.Token, error) {
		return "", plugintest.Token{}, &plugintest.Error{Status: status, Message: msg}
	}
	switch {
	case req.Token != "":
		return refuse(400, "a login carries no token")
	case body["role"] != "ci":
		return refuse(400, fmt.Sprintf("role %q could not be found", body["role"]))
	case strings.HasPrefix(jwt, "good."):
		n := iv.logins.Add(1)
		return fmt.Sprintf("hvs.ci-%d", n), plugintest.Token{EntityID: "e-ci", TTL: iv.lease}, nil
	case jwt == "expired":
		return refuse(400, "error validating token: token is expired (exp)")
	case jwt == "audience":
		return refuse(400, "error validating claims: invalid audience (aud) claim: audience provided does not match any bound_audiences")
	case jwt == "denied":
		return refuse(403, "permission denied")
	}
	return refuse(401, "invalid JWT")
}

func jwtRelay(t *testing.T, iv *identityVault, role string) (*Server, *syncBuffer) {
	return newTestRelay(t, iv.URL, func(c *Config) {
		c.Identity.PasswordMounts = []string{"ldap"}
		c.Identity.JWTLogins = []JWTLogin{{User: "gitlab-ci", Mount: "jwt/", Role: role}}
	})
}

func TestJWTLogin_routesToItsMountAndReusesTheVaultToken(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := jwtRelay(t, iv, "ci")
	jwt := ciJWT(3000)
	for i := range 5 {
		w := get(s, "service=registry&scope=repository:group/app:push", basic("gitlab-ci", jwt))
		if w.Code != 200 {
			t.Fatalf("request %d: %d %s", i, w.Code, w.Body)
		}
	}
	if n := iv.logins.Load(); n != 1 {
		t.Errorf("5 token requests made %d jwt logins; want 1 (the Vault token is reused)", n)
	}
	if n := iv.calls(); n != 5 {
		t.Errorf("%d token/identity calls, want 5", n)
	}
	// The plugin and the password mounts never see a JWT user: one login
	// at auth/jwt, nothing at auth/ldap.
	if n := iv.auth(); n != 1 {
		t.Errorf("%d calls to auth/ paths, want 1 (auth/jwt/login once)", n)
	}
	// A plugin user and a password-mount user still work beside it.
	if w := get(s, "service=registry", basic("bob", "pw")); w.Code != 200 {
		t.Errorf("plugin user: %d", w.Code)
	}
	if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 {
		t.Errorf("password-mount user: %d", w.Code)
	}
	if strings.Contains(logs.String(), jwt[:64]) || strings.Contains(logs.String(), "hvs.ci") {
		t.Error("the log holds the JWT or its Vault token")
	}
}

func TestJWTLogin_everyRefusalAnswersAlike(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := jwtRelay(t, iv, "ci")
	_, want := registryErrorCode(t, get(s, "service=registry", basic("bob", "wrong")))
	for _, jwt := range []string{"expired", "audience", "denied", "made-up", ""} {
		w := get(s, "service=registry", basic("gitlab-ci", jwt))
		_, msg := registryErrorCode(t, w)
		if w.Code != 401 || msg != want {
			t.Errorf("JWT %q: %d %q, want 401 %q", jwt, w.Code, msg, want)
		}
	}
	// A role Vault does not know answers alike too (a mistake of the
	// relay's file shows in Vault's audit log, not to clients).
	s2, _ := jwtRelay(t, iv, "other")
	if w := get(s2, "service=registry", basic("gitlab-ci", ciJWT(100))); w.Code != 401 {
		t.Errorf("unknown role: %d %s", w.Code, w.Body)
	} else if _, msg := registryErrorCode(t, w); msg != want {
		t.Errorf("unknown role: %q, want %q", msg, want)
	}
	if n := iv.calls(); n != 0 {
		t.Errorf("%d token/identity calls after refused logins", n)
	}
	for _, secret := range []string{"expired", "audience", "made-up"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds the JWT %q", secret)
		}
	}
}

func TestJWTLogin_onlyJWTUsersSendLongPasswords(t *testing.T) {
	iv := newIdentityVault(t)
	s, _ := jwtRelay(t, iv, "ci")
	for _, c := range []struct {
		user     string
		password string
		want     int
	}{
		{"gitlab-ci", ciJWT(maxJWTBytes), 200},
		{"gitlab-ci", ciJWT(maxJWTBytes + 1), 400},
		{"alice", strings.Repeat("p", maxPasswordBytes+1), 400},
		{"vault", strings.Repeat("p", maxPasswordBytes+1), 400},
	} {
		if w := get(s, "service=registry", basic(c.user, c.password)); w.Code != c.want {
			t.Errorf("%s, %d-byte password: %d %s, want %d", c.user, len(c.password), w.Code, w.Body, c.want)
		}
		form := map[string][]string{"grant_type": {"password"}, "service": {"registry"},
			"username": {c.user}, "password": {c.password}}
		if w := post(s, form); w.Code != c.want {
			t.Errorf("POST %s, %d-byte password: %d, want %d", c.user, len(c.password), w.Code, c.want)
		}
	}
}

func TestJWTLogin_configKeys(t *testing.T) {
	ok := minimal + "identity:\n  jwt_logins:\n    - user: gitlab-ci\n      mount: gitlab/\n      role: ci-push\n    - {user: github-actions, mount: jwt, role: gha}\n"
	cfg, err := ParseConfig([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.identityDefaults().JWTLogins
	if len(got) != 2 || got[0] != (JWTLogin{"gitlab-ci", "gitlab", "ci-push"}) || got[1] != (JWTLogin{"github-actions", "jwt", "gha"}) {
		t.Errorf("jwt_logins = %+v", got)
	}
	item := func(user, mount, role string) string {
		return fmt.Sprintf("identity:\n  jwt_logins:\n    - {user: %q, mount: %q, role: %q}\n", user, mount, role)
	}
	var many strings.Builder
	many.WriteString("identity:\n  jwt_logins:\n")
	for i := range maxJWTLogins + 1 {
		fmt.Fprintf(&many, "    - {user: ci%d, mount: jwt, role: r}\n", i)
	}
	for yaml, mention := range map[string]string{
		item("vault", "jwt", "ci"): "is identity.vault_token_user",
		"identity:\n  vault_token_user: ci\n" + item("ci", "jwt", "r")[len("identity:\n"):]: "is identity.vault_token_user",
		item("a:b", "jwt", "ci"):   "user: want a user name",
		item("..", "jwt", "ci"):    "user: want a user name",
		item("ci", "../sys", "ci"): "mount: want a jwt auth mount path",
		item("ci", "", "ci"):       "mount: want a jwt auth mount path",
		item("ci", "jwt", ""):      "role: want a Vault role name",
		item("ci", "jwt", "a/b"):   "role: want a Vault role name",
		item("ci", "jwt", "r") + "    - {user: ci, mount: gitlab, role: r}\n":         "listed twice",
		"identity:\n  jwt_logins:\n    - {user: ci, mount: jwt, role: r, claim: x}\n": "unknown key",
		"identity:\n  jwt_logins: ci\n":                                               "identity.jwt_logins",
		many.String():                                                                 fmt.Sprintf("at most %d logins", maxJWTLogins),
	} {
		if _, err := ParseConfig([]byte(minimal + yaml)); err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("%q: err %v, want one mentioning %q", yaml, err, mention)
		}
	}
}
