package relay

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// identityVault is Vault with the real plugin at "registry" (pluginVault,
// with one plugin user, bob, password pw) and Vault's identities as
// plugintest serves them: entity alice (e-alice) and entity group/app
// (e-ci, a CI job's); Vault tokens hvs.alice and hvs.ci of those entities
// and hvs.root of none; token/identity, its identity sessions and their
// leases run in the plugin. Two auth methods issue tokens: userpass-like
// "ldap" (alice, ldap-pw: hvs.alice-<n>) and "jwt" (jwtlogin_test.go:
// hvs.ci-<n>). Those two are written by hand: an auth method is Vault's
// own code, which needs Vault (the e2e tests log in at Vault's userpass
// and jwt mounts). The fields below are the faults the tests inject.
type identityVault struct {
	*pluginVault
	lease  int // TTL of a login's token, seconds
	logins atomic.Int32
	// slow delays the answer to token/identity for hvs.slow, a made-up
	// token Vault is slow to refuse.
	slow time.Duration
	// loginDelay delays each LDAP login's answer.
	loginDelay time.Duration
	// delay delays token/identity and token/batch answers, so that
	// concurrent requests overlap.
	delay time.Duration
}

func newIdentityVault(t *testing.T) *identityVault {
	t.Helper()
	iv := &identityVault{pluginVault: newPluginVault(t, "registry"), lease: 120}
	iv.ownUsers = true
	iv.MustCall("registry", logical.UpdateOperation, "users/bob", map[string]any{"password": "pw", "access": testUserAccess})
	iv.SetEntity(&logical.Entity{ID: "e-alice", Name: "alice"})
	iv.SetEntity(&logical.Entity{ID: "e-ci", Name: "group/app"})
	iv.AddToken("hvs.alice", plugintest.Token{EntityID: "e-alice", TTL: 3600})
	iv.AddToken("hvs.ci", plugintest.Token{EntityID: "e-ci", TTL: 3600})
	iv.AddToken("hvs.root", plugintest.Token{}) // no entity, as a root token
	iv.SetLogin("ldap", iv.ldapLogin)
	iv.SetLogin("jwt", iv.jwtLogin)
	iv.SetHook(iv.serve)
	return iv
}

// serve injects the delays, and refuses a token/identity call carrying
// what the relay must never send there (the plugin would ignore it); the
// rest goes to the pluginVault's hook and the plugin.
func (iv *identityVault) serve(w http.ResponseWriter, r *http.Request, req *plugintest.Request) bool {
	switch req.Rest {
	case tokenapi.PathIdentityToken:
		time.Sleep(iv.delay)
		var body map[string]any
		_ = json.Unmarshal(req.Body, &body)
		for field, why := range map[string]string{
			tokenapi.FieldOfflineToken: "the relay asked a refresh token for an identity",
			tokenapi.FieldPassword:     "the relay sent a password to token/identity",
			// The caller is the user's token: an address here would be
			// the user's word, so the relay never sends one.
			tokenapi.FieldClientAddr: "the relay sent a client address to token/identity",
		} {
			if v, ok := body[field]; ok && v != false {
				vaultError(w, 400, why)
				return true
			}
		}
		if req.Token == "hvs.slow" {
			time.Sleep(iv.slow) // then Vault refuses it: a token it does not know
		}
	case tokenapi.PathTokenBatch:
		time.Sleep(iv.delay)
	}
	return iv.pluginVault.serve(w, r, req)
}

// ldapLogin is the "ldap" auth mount: alice with ldap-pw gets a token of
// entity alice, hvs.alice-<n> for the nth login.
func (iv *identityVault) ldapLogin(req *plugintest.Request, name string, body map[string]any) (string, plugintest.Token, error) {
	switch {
	case req.Token != "":
		return "", plugintest.Token{}, &plugintest.Error{Status: 400, Message: "a login carries no token"}
	case name != "alice" || body["password"] != "ldap-pw":
		return "", plugintest.Token{}, &plugintest.Error{Status: 400, Message: "invalid username or password"}
	}
	time.Sleep(iv.loginDelay)
	n := iv.logins.Add(1)
	return fmt.Sprintf("hvs.alice-%d", n), plugintest.Token{EntityID: "e-alice", TTL: iv.lease}, nil
}

// revoke revokes a Vault token, as `vault token revoke` does: Vault
// refuses it, and revokes its leases (its sessions) with it.
func (iv *identityVault) revoke(tok string) { iv.RevokeToken(tok) }

// revokedBySelf reports whether the relay revoked tok (revoke-self with
// it, which Vault took).
func (iv *identityVault) revokedBySelf(tok string) bool {
	for _, r := range iv.Requests() {
		if r.Path == "auth/token/revoke-self" && r.Token == tok && r.Status == http.StatusNoContent {
			return true
		}
	}
	return false
}

// count is the number of requests Vault received that match.
func (iv *identityVault) count(match func(r *plugintest.Request) bool) int32 {
	n := int32(0)
	for _, r := range iv.Requests() {
		if match(r) {
			n++
		}
	}
	return n
}

// calls is the number of token/identity calls.
func (iv *identityVault) calls() int32 {
	return iv.count(func(r *plugintest.Request) bool { return r.Rest == tokenapi.PathIdentityToken })
}

// auth is the number of calls to any auth/ path.
func (iv *identityVault) auth() int32 {
	return iv.count(func(r *plugintest.Request) bool { return strings.HasPrefix(r.Path, "auth/") })
}

// pluginCalls is the number of registry/token calls.
func (iv *identityVault) pluginCalls() int32 {
	return iv.count(func(r *plugintest.Request) bool { return r.Rest == "token" })
}

// batchCalls is the number of token/batch calls.
func (iv *identityVault) batchCalls() int32 {
	return iv.count(func(r *plugintest.Request) bool { return r.Rest == tokenapi.PathTokenBatch })
}

// sessions is the identity sessions the plugin gave on token/identity,
// in order.
func (iv *identityVault) sessions() []string {
	var out []string
	for _, r := range iv.Requests() {
		var a struct{ Data map[string]any }
		if r.Rest == tokenapi.PathIdentityToken && r.Status == http.StatusOK && json.Unmarshal(r.Answer, &a) == nil {
			if s, _ := a.Data[tokenapi.FieldIdentitySession].(string); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// sessionUses is the number of requests in token/batch calls made with an
// identity session that the plugin granted.
func (iv *identityVault) sessionUses() int32 {
	n := int32(0)
	for _, r := range iv.Requests() {
		if r.Rest != tokenapi.PathTokenBatch || r.Status != http.StatusOK {
			continue
		}
		var body struct{ Requests []map[string]any }
		var answer struct {
			Data struct{ Answers []struct{ Status int } }
		}
		if json.Unmarshal(r.Body, &body) != nil || json.Unmarshal(r.Answer, &answer) != nil || len(answer.Data.Answers) != len(body.Requests) {
			continue
		}
		for i, a := range answer.Data.Answers {
			if _, ok := body.Requests[i][tokenapi.FieldIdentitySession]; ok && a.Status == http.StatusOK {
				n++
			}
		}
	}
	return n
}

func TestIdentity_vaultTokenAsPassword(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := newTestRelay(t, iv.URL)
	w := get(s, "service=registry&scope=repository:a/b:pull&offline_token=true&client_id=docker", basic("vault", "hvs.alice"))
	if w.Code != 200 {
		t.Fatalf("valid Vault token: %d %s", w.Code, w.Body)
	}
	w = get(s, "service=registry", basic("vault", "hvs.expired"))
	if code, msg := registryErrorCode(t, w); w.Code != 401 || code != "UNAUTHORIZED" || !strings.Contains(msg, "token/identity") {
		t.Errorf("refused Vault token: %d %s %q", w.Code, code, msg)
	}
	before := iv.calls()
	w = get(s, "service=registry", basic("vault", "hvs.a b"))
	if w.Code != 401 || iv.calls() != before {
		t.Errorf("malformed Vault token: %d %s, sent to Vault: %v", w.Code, w.Body, iv.calls() != before)
	}
	if strings.Contains(logs.String(), "hvs.alice") {
		t.Error("the log holds a Vault token")
	}
}

// Every refusal of the Vault-token way in is the same 401 with the same
// body: a root token (no entity, the plugin's 400), a made-up token
// (Vault's 403) and a malformed one (never sent) cannot be told apart by
// the public endpoint. The reason is in the relay's log, the token never
// (issue 20, point 7).
func TestIdentity_everyVaultTokenRefusalAnswersAlike(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := newTestRelay(t, iv.URL)
	for _, oauth := range []bool{false, true} {
		var first *httptest.ResponseRecorder
		for _, token := range []string{"hvs.made-up-token", "hvs.root", "hvs.a b"} {
			var w *httptest.ResponseRecorder
			if oauth {
				w = post(s, url.Values{"grant_type": {"password"}, "username": {"vault"}, "password": {token}, "service": {"registry"}})
			} else {
				w = get(s, "service=registry&scope=repository:a/b:pull", basic("vault", token))
			}
			if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("oauth=%v, token %.12q: %d %v %s, want 401 with a challenge", oauth, token, w.Code, w.Header(), w.Body)
			}
			if first == nil {
				first = w
			} else if w.Body.String() != first.Body.String() {
				t.Errorf("oauth=%v: token %.12q answers %s, another %s", oauth, token, w.Body, first.Body)
			}
		}
	}
	log := logs.String()
	for _, reason := range []string{"no identity entity", "vault refused the token (403)", "malformed Vault token"} {
		if !strings.Contains(log, reason) {
			t.Errorf("the reason %q is not in the relay's log:\n%s", reason, log)
		}
	}
	if strings.Contains(log, "hvs.made-up-token") || strings.Contains(log, "hvs.root") {
		t.Errorf("the log holds a Vault token:\n%s", log)
	}
}

// A Vault token not seen to get a token lately takes an unproven place, as
// a password does: with every place taken, a made-up token waits and gets
// 429, while a token that got a token before is served. And the timeout
// of such a token does not mark Vault down for everyone (issue 20, point 6).
func TestIdentity_unprovenVaultTokensTakeUnprovenPlaces(t *testing.T) {
	iv := newIdentityVault(t)
	iv.slow = 600 * time.Millisecond
	s, logs := newTestRelay(t, iv.URL, func(c *Config) {
		c.HTTP.Timeout = Duration(400 * time.Millisecond)
		c.Storage.Vault.Timeout = Duration(200 * time.Millisecond)
	})
	if w := get(s, "service=registry", basic("vault", "hvs.alice")); w.Code != http.StatusOK {
		t.Fatalf("valid Vault token: %d %s", w.Code, w.Body)
	}

	release := fillUnproven(s)
	before := iv.calls()
	if w := get(s, "service=registry", basic("vault", "hvs.made-up")); w.Code != http.StatusTooManyRequests || iv.calls() != before {
		t.Errorf("made-up Vault token with every unproven place taken: %d %s, sent to Vault: %v; want 429, not sent",
			w.Code, w.Body, iv.calls() != before)
	}
	if w := get(s, "service=registry", basic("vault", "hvs.alice")); w.Code != http.StatusOK {
		t.Errorf("a Vault token that got a token waited for an unproven place: %d %s", w.Code, w.Body)
	}
	release()

	// Vault is slow to refuse a made-up token: that request times out,
	// and the next one (a plugin user) is served, not refused as "Vault
	// down".
	if w := get(s, "service=registry", basic("vault", "hvs.slow")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("made-up token Vault is slow to refuse: %d %s, want 503", w.Code, w.Body)
	}
	if w := get(s, "service=registry", basic("bob", "pw")); w.Code != http.StatusOK {
		t.Errorf("after an unproven Vault token timed out: %d %s, want 200 (Vault is not down)\n%s", w.Code, w.Body, logs)
	}
}

// A user name made only of dots never reaches an auth mount: "auth/ldap/
// login/.." would be cleaned to "auth/ldap" (issue 20, point 8).
func TestIdentity_dotNamesNeverLeaveTheLoginPath(t *testing.T) {
	iv := newIdentityVault(t)
	s, _ := newTestRelay(t, iv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
	for _, name := range []string{".", "..", "...", "...."} {
		w := get(s, "service=registry", basic(name, "ldap-pw"))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("user %q: %d %s, want 401", name, w.Code, w.Body)
		}
	}
	if n := iv.auth(); n != 0 {
		t.Errorf("%d calls to an auth/ path for user names made of dots, want 0", n)
	}
	if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != http.StatusOK || iv.auth() != 1 {
		t.Errorf("alice: %d %s after %d logins", w.Code, w.Body, iv.auth())
	}
	for _, name := range []string{"a.b", ".alice", "alice."} {
		if !loginName(name) {
			t.Errorf("%q is refused as a login name", name)
		}
	}
}

func TestIdentity_passwordMountBehindThePluginUsers(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := newTestRelay(t, iv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap/"} })
	if w := get(s, "service=registry", basic("bob", "pw")); w.Code != 200 || iv.logins.Load() != 0 {
		t.Fatalf("plugin user: %d, logins %d", w.Code, iv.logins.Load())
	}
	for i := range 3 {
		if w := get(s, "service=registry&offline_token=true", basic("alice", "ldap-pw")); w.Code != 200 {
			t.Fatalf("auth-mount user, try %d: %d %s", i, w.Code, w.Body)
		}
	}
	if n := iv.logins.Load(); n != 1 {
		t.Errorf("3 token requests made %d Vault logins; want 1 (the Vault token is reused)", n)
	}
	// Unknown user, wrong password of an auth-mount user and of a plugin
	// user: one answer.
	var msgs []string
	for _, c := range [][2]string{{"nobody", "x"}, {"alice", "wrong"}, {"bob", "wrong"}, {"../../sys/x", "y"}} {
		w := get(s, "service=registry", basic(c[0], c[1]))
		_, msg := registryErrorCode(t, w)
		if w.Code != 401 {
			t.Errorf("%s: %d %q", c[0], w.Code, msg)
		}
		msgs = append(msgs, msg)
	}
	if msgs[0] != msgs[1] || msgs[1] != msgs[2] || msgs[2] != msgs[3] {
		t.Errorf("refusals differ: %q", msgs)
	}
	if strings.Contains(logs.String(), "ldap-pw") || strings.Contains(logs.String(), "hvs.alice") {
		t.Error("the log holds a password or a Vault token")
	}
}

func TestIdentity_tokenReuseOff(t *testing.T) {
	iv := newIdentityVault(t)
	cfg, err := ParseConfig([]byte(minimal + "identity:\n  password_mounts: [ldap]\n  token_reuse: 0s\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Storage.Vault.Addr, cfg.Storage.Vault.AuthToken = iv.URL, relayToken
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if n := iv.logins.Load(); n != 2 {
		t.Errorf("token_reuse 0s: %d logins for 2 requests", n)
	}
}

func TestIdentity_configKeys(t *testing.T) {
	ok := minimal + "identity:\n  vault_token_user: vtoken\n  password_mounts:\n    - ldap\n    - corp/userpass\n  token_reuse: 30s\n"
	cfg, err := ParseConfig([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Identity; got.VaultTokenUser != "vtoken" || strings.Join(got.PasswordMounts, ",") != "ldap,corp/userpass" || got.TokenReuse != Duration(30e9) {
		t.Errorf("identity = %+v", got)
	}
	// The line of the key under identity:, after minimal's lines.
	line := fmt.Sprintf("line %d: ", strings.Count(minimal, "\n")+2)
	for yaml, mention := range map[string]string{
		"identity:\n  password_mount: [ldap]\n":        line + "identity.password_mount: unknown key",
		"identity:\n  password_mounts: ldap\n":         line + `identity.password_mounts: want a list of names, got "ldap"`,
		"identity:\n  password_mounts: [../sys]\n":     "want auth mount paths",
		"identity:\n  password_mounts: [ldap, ldap]\n": "listed twice",
		"identity:\n  password_mounts: [[ldap]]\n":     line + "identity.password_mounts: want a string, got a list",
		// An item on a line of its own: its line, and the key of its list.
		"identity:\n  password_mounts:\n    - ldap\n    - {a: b}\n": fmt.Sprintf("line %d: identity.password_mounts: want a string, got a mapping", strings.Count(minimal, "\n")+4),
		"identity:\n  vault_token_user: \"a:b\"\n":                  "identity.vault_token_user",
		"identity:\n  token_reuse: 5\n":                             "identity.token_reuse",
	} {
		if _, err := ParseConfig([]byte(minimal + yaml)); err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("%q: err %v, want one mentioning %q", yaml, err, mention)
		}
	}
}

func TestIdentity_tokenReusedAtMostHalfItsTTL(t *testing.T) {
	iv := newIdentityVault(t)
	iv.lease = 2 // a 2s token: reused for 1s, though token_reuse is 1m
	s, _ := newTestRelay(t, iv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
	login := func() {
		t.Helper()
		if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	login()
	login()
	if n := iv.logins.Load(); n != 1 {
		t.Fatalf("%d logins within the reuse time, want 1", n)
	}
	time.Sleep(1100 * time.Millisecond)
	login()
	if n := iv.logins.Load(); n != 2 {
		t.Errorf("%d logins after half the token's TTL, want 2", n)
	}
}

// TestIdentity_oneLoginPerUserAtATime: requests of one user and password
// that arrive while its Vault login runs wait for that login and share
// its token (issue 28: an expired reuse under 64 connections made 65
// logins).
func TestIdentity_oneLoginPerUserAtATime(t *testing.T) {
	iv := newIdentityVault(t)
	iv.loginDelay = 200 * time.Millisecond
	s, _ := newTestRelay(t, iv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() { codes[i] = get(s, "service=registry", basic("alice", "ldap-pw")).Code })
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: %d", i, c)
		}
	}
	if n := iv.logins.Load(); n != 1 {
		t.Errorf("%d Vault logins for 20 concurrent requests of one user, want 1", n)
	}
	// A wrong password shares no login with the right one.
	if w := get(s, "service=registry", basic("alice", "wrong")); w.Code != 401 {
		t.Errorf("wrong password: %d", w.Code)
	}
}

// TestIdentity_reusedTokenRenewedAhead: a steady user never meets the end
// of its token's reuse: in its last fifth one request starts a login in
// the background and goes on with the old token; the next ones use the new
// token, and none goes through the plugin and a login of its own.
func TestIdentity_reusedTokenRenewedAhead(t *testing.T) {
	iv := newIdentityVault(t)
	iv.lease = 4 // reused for 2s (half the TTL); renewed ahead from 1.6s
	s, _ := newTestRelay(t, iv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
	request := func() {
		t.Helper()
		if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	request()
	pluginCalls := iv.pluginCalls() // the first login went through the plugin first
	end := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(end) {
		request()
		time.Sleep(50 * time.Millisecond)
	}
	if n := iv.pluginCalls() - pluginCalls; n != 0 {
		t.Errorf("%d requests met an expired token (plugin check, then a login of their own), want 0", n)
	}
	if n := iv.logins.Load(); n < 3 || n > 4 {
		t.Errorf("%d logins over 4.5s of 2s reuses, want 3 or 4 (one at start, one ahead of each end)", n)
	}
}

// A reused login's token replaced ahead of its end is revoked (revoke-self
// with that token), after the requests that took it finish; the token in
// use is not, and no request meets a revoked token.
func TestIdentity_replacedTokenRevoked(t *testing.T) {
	iv := newIdentityVault(t)
	iv.lease = 4 // reused for 2s; renewed ahead from 1.6s
	s, logs := newTestRelay(t, iv.URL, func(c *Config) {
		c.Identity.PasswordMounts = []string{"ldap"}
		c.Storage.Vault.Timeout = Duration(300 * time.Millisecond)
	})
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := int(iv.logins.Load())
	if n < 2 {
		t.Fatalf("%d logins in 3s of 2s reuses, want 2 or more", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !iv.revokedBySelf("hvs.alice-1") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for i := 1; i <= n; i++ {
		tok := fmt.Sprintf("hvs.alice-%d", i)
		if revoked := iv.revokedBySelf(tok); revoked != (i < n) {
			t.Errorf("%s (login %d of %d): revoked %v, want %v", tok, i, n, revoked, i < n)
		}
	}
	if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 || int(iv.logins.Load()) != n {
		t.Errorf("after the revocations: %d, %d logins (want the last token reused)", w.Code, iv.logins.Load())
	}
	if strings.Contains(logs.String(), "hvs.alice") {
		t.Error("the log holds a Vault token")
	}
}

// concurrently sends n requests at once for each Vault token as the
// password and returns the subjects of the tokens each got ("" refused).
func concurrently(t *testing.T, s *Server, n int, tokens ...string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tok := range tokens {
		for range n {
			wg.Go(func() {
				w := get(s, "service=registry&scope=repository:a/b:pull", basic("vault", tok))
				sub := ""
				if w.Code == 200 {
					sub = jwtSubject(t, w.Body.String())
				} else if w.Code != 401 {
					t.Errorf("%s: %d %s", tok, w.Code, w.Body)
				}
				mu.Lock()
				out[tok] = append(out[tok], sub)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// jwtSubject is the sub claim of the token in a relay's answer.
func jwtSubject(t *testing.T, body string) string {
	t.Helper()
	var a struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(a.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", a.Token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Sub
}

// The requests of two Vault tokens proven lately share token/batch calls,
// each with the session its own token asked for, and each gets its own
// entity's token; the session is never in an answer or the log.
func TestIdentitySession_batchesEachTokenWithItsOwnSession(t *testing.T) {
	iv := newIdentityVault(t)
	iv.delay = 20 * time.Millisecond
	s, logs := newTestRelay(t, iv.URL)
	for _, tok := range []string{"hvs.alice", "hvs.ci"} {
		// The first request proves the token; the second asks a session.
		for range 2 {
			if w := get(s, "service=registry", basic("vault", tok)); w.Code != 200 || strings.Contains(w.Body.String(), "session") {
				t.Fatalf("%s: %d %s", tok, w.Code, w.Body)
			}
		}
	}
	if n := len(iv.sessions()); n != 2 {
		t.Fatalf("%d sessions asked, want 2 (one per token, on its second request)", n)
	}
	calls := iv.calls()
	got := concurrently(t, s, 40, "hvs.alice", "hvs.ci")
	want := map[string]string{"hvs.alice": "alice", "hvs.ci": "group/app"}
	for tok, subs := range got {
		for _, sub := range subs {
			if sub != want[tok] {
				t.Fatalf("a request with %s got a token for %q, want %q", tok, sub, want[tok])
			}
		}
	}
	uses, direct := iv.sessionUses(), iv.calls()-calls
	if uses < 40 || uses+direct != 80 {
		t.Errorf("of 80 requests %d went in batches with a session, %d alone; want most batched", uses, direct)
	}
	if n := len(iv.sessions()); n != 2 {
		t.Errorf("%d sessions asked, want still 2", n)
	}
	for _, secret := range append(iv.sessions(), "hvs.") {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds a session or a Vault token (%.8s…)", secret)
		}
	}
}

// A Vault token revoked: Vault revokes its session with it, the batch
// refuses the session, and each request goes on alone with the token and
// is refused as before; the other token's session goes on.
func TestIdentitySession_revokedTokenIsRefused(t *testing.T) {
	iv := newIdentityVault(t)
	iv.delay = 20 * time.Millisecond
	s, _ := newTestRelay(t, iv.URL)
	for _, tok := range []string{"hvs.alice", "hvs.ci", "hvs.alice", "hvs.ci"} {
		if w := get(s, "service=registry", basic("vault", tok)); w.Code != 200 {
			t.Fatalf("%s: %d %s", tok, w.Code, w.Body)
		}
	}
	iv.revoke("hvs.alice")
	got := concurrently(t, s, 20, "hvs.alice", "hvs.ci")
	for _, sub := range got["hvs.alice"] {
		if sub != "" {
			t.Fatalf("a revoked token got a token for %q", sub)
		}
	}
	for _, sub := range got["hvs.ci"] {
		if sub != "group/app" {
			t.Fatalf("hvs.ci got %q", sub)
		}
	}
	if iv.sessionUses() == 0 {
		t.Error("no request went in a batch with a session")
	}
	// The refused session is dropped: the next request goes alone at once.
	batches := iv.batchCalls()
	if w := get(s, "service=registry", basic("vault", "hvs.alice")); w.Code != 401 || iv.batchCalls() != batches {
		t.Errorf("after the refusal: %d, %d batch calls", w.Code, iv.batchCalls()-batches)
	}
}
