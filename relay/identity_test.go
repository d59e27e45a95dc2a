package relay

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// identityVault stands in for Vault with the plugin at "registry" and a
// userpass mount at "ldap": plugin user bob (pw), auth-mount user alice
// (ldap-pw, token hvs.alice). The e2e tests use the real Vault.
type identityVault struct {
	srv    *httptest.Server
	lease  int // lease_duration of a login, seconds
	logins atomic.Int32
	calls  atomic.Int32 // token/identity calls
	auth   atomic.Int32 // calls to any auth/ path
	// slow delays the answer to token/identity for hvs.slow, a made-up
	// token Vault is slow to refuse.
	slow time.Duration
	// loginDelay delays each LDAP login's answer.
	loginDelay time.Duration
	plugin     atomic.Int32 // registry/token calls
	// distinct makes each login's token its own (hvs.alice-<n>).
	distinct bool
	// delay delays token/identity and token/batch answers, so that
	// concurrent requests overlap.
	delay time.Duration
	// Identity sessions (identitysession.go): asked on token/identity,
	// used in token/batch (one request each in sessionUses).
	sessionsAsked, sessionUses, batches atomic.Int32

	mu      sync.Mutex
	revoked map[string]bool // Vault tokens revoked (revoke-self, or the test)
}

// revoke revokes a Vault token, as `vault token revoke` does: Vault
// refuses it, and revokes its leases (its sessions) with it.
func (iv *identityVault) revoke(tok string) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.revoked == nil {
		iv.revoked = map[string]bool{}
	}
	iv.revoked[tok] = true
}

func (iv *identityVault) isRevoked(tok string) bool {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	return iv.revoked[tok]
}

// identityOf is the subject the plugin grants a live Vault token of the
// stand-in, "" for none.
func (iv *identityVault) identityOf(tok string) string {
	switch {
	case iv.isRevoked(tok):
		return ""
	case tok == "hvs.ci":
		return "group/app"
	case tok == "hvs.alice" || strings.HasPrefix(tok, "hvs.alice-"):
		return "alice"
	}
	return ""
}

// identityBatch answers token/batch's session requests as the plugin does:
// each for the entity of the Vault token that asked for the session, while
// that token is live.
func (iv *identityVault) identityBatch(w http.ResponseWriter, tok string, body map[string]any) {
	iv.batches.Add(1)
	time.Sleep(iv.delay)
	if tok != relayToken {
		vaultError(w, 403, "permission denied")
		return
	}
	requests, _ := body["requests"].([]any)
	answers := make([]map[string]any, len(requests))
	for i, r := range requests {
		req, _ := r.(map[string]any)
		session, _ := req[tokenapi.FieldIdentitySession].(string)
		_, password := req["password"]
		_, addr := req["client_addr"]
		sub := iv.identityOf(strings.TrimPrefix(session, "session-of-"))
		switch {
		case password || addr || req["offline_token"] != nil:
			answers[i] = map[string]any{"status": 400, "data": map[string]any{"code": "invalid_request", "message": "not a session request"}}
		case !strings.HasPrefix(session, "session-of-") || sub == "":
			answers[i] = map[string]any{"status": 401, "data": map[string]any{"code": "invalid_credentials", "message": "identity session unknown, expired or revoked"}}
		default:
			iv.sessionUses.Add(1)
			jwt := fakeJWT(map[string]any{"iss": "Token", "sub": sub, "aud": "registry", "access": []any{}})
			answers[i] = map[string]any{"status": 200, "data": map[string]any{"token": jwt, "expires_in": 300, "sub": sub, "iss": "Token", "access": []any{}}}
		}
	}
	writeJSON(w, 200, map[string]any{"data": map[string]any{"answers": answers}})
}

func newIdentityVault(t *testing.T) *identityVault {
	iv := &identityVault{lease: 120}
	iv.srv = httptest.NewServer(http.HandlerFunc(iv.serve))
	t.Cleanup(iv.srv.Close)
	return iv
}

func (iv *identityVault) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	tok := r.Header.Get("X-Vault-Token")
	if strings.HasPrefix(path, "auth/") {
		iv.auth.Add(1)
	}
	answer := func(sub string) {
		jwt := fakeJWT(map[string]any{"iss": "Token", "sub": sub, "aud": "registry", "access": []any{}})
		data := map[string]any{"token": jwt, "expires_in": 300, "sub": sub, "iss": "Token", "access": []any{}}
		if ask, _ := body[tokenapi.FieldIdentitySession].(bool); ask {
			iv.sessionsAsked.Add(1)
			data[tokenapi.FieldIdentitySession], data[tokenapi.FieldIdentitySessionTTL] = "session-of-"+tok, 60
		}
		writeJSON(w, 200, map[string]any{"data": data})
	}
	switch path {
	case "sys/health":
		writeJSON(w, 200, map[string]any{"initialized": true, "sealed": false})
	case "registry/ca/pem":
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = io.WriteString(w, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	case "registry/token":
		iv.plugin.Add(1)
		if tok != relayToken {
			vaultError(w, 403, "permission denied")
		} else if body["username"] == "bob" && body["password"] == "pw" {
			answer("bob")
		} else {
			vaultError(w, 401, "invalid username or password")
		}
	case "registry/token/batch":
		iv.identityBatch(w, tok, body)
	case "auth/token/revoke-self":
		iv.revoke(tok)
		w.WriteHeader(http.StatusNoContent)
	case "registry/token/identity":
		iv.calls.Add(1)
		time.Sleep(iv.delay)
		if off, _ := body["offline_token"].(bool); off {
			vaultError(w, 400, "the relay asked a refresh token for an identity")
			return
		}
		if _, ok := body["client_addr"]; ok {
			// The caller is the user's token: an address here would be
			// the user's word, so the relay never sends one.
			vaultError(w, 400, "the relay sent a client address to token/identity")
			return
		}
		switch {
		case tok == "hvs.slow":
			time.Sleep(iv.slow)
			vaultError(w, 403, "permission denied")
			return
		case tok == "hvs.root":
			// The plugin's refusal of a token without an entity.
			pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeInvalidRequest,
				Message: "this Vault token has no identity entity (a root token, or a token of no auth method)"})
			return
		case body["password"] != nil || iv.identityOf(tok) == "":
			vaultError(w, 403, "permission denied")
			return
		}
		answer(iv.identityOf(tok))
	case "auth/ldap/login/alice":
		if tok != "" {
			vaultError(w, 400, "a login carries no token")
			return
		}
		if body["password"] != "ldap-pw" {
			vaultError(w, 400, "invalid username or password")
			return
		}
		time.Sleep(iv.loginDelay)
		n := iv.logins.Add(1)
		token := "hvs.alice"
		if iv.distinct {
			token = fmt.Sprintf("hvs.alice-%d", n)
		}
		writeJSON(w, 200, map[string]any{"auth": map[string]any{"client_token": token, "lease_duration": iv.lease}})
	case "auth/jwt/login":
		iv.jwtLogin(w, tok, body)
	default:
		if strings.HasPrefix(path, "auth/ldap/login/") {
			vaultError(w, 400, "invalid username or password")
			return
		}
		vaultError(w, 404, "unsupported path")
	}
}

func TestIdentity_vaultTokenAsPassword(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := newTestRelay(t, iv.srv.URL)
	w := get(s, "service=registry&scope=repository:a/b:pull&offline_token=true&client_id=docker", basic("vault", "hvs.alice"))
	if w.Code != 200 {
		t.Fatalf("valid Vault token: %d %s", w.Code, w.Body)
	}
	w = get(s, "service=registry", basic("vault", "hvs.expired"))
	if code, msg := registryErrorCode(t, w); w.Code != 401 || code != "UNAUTHORIZED" || !strings.Contains(msg, "token/identity") {
		t.Errorf("refused Vault token: %d %s %q", w.Code, code, msg)
	}
	before := iv.calls.Load()
	w = get(s, "service=registry", basic("vault", "hvs.a b"))
	if w.Code != 401 || iv.calls.Load() != before {
		t.Errorf("malformed Vault token: %d %s, sent to Vault: %v", w.Code, w.Body, iv.calls.Load() != before)
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
	s, logs := newTestRelay(t, iv.srv.URL)
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
	s, logs := newTestRelay(t, iv.srv.URL, func(c *Config) {
		c.HTTP.Timeout = Duration(400 * time.Millisecond)
		c.Storage.Vault.Timeout = Duration(200 * time.Millisecond)
	})
	if w := get(s, "service=registry", basic("vault", "hvs.alice")); w.Code != http.StatusOK {
		t.Fatalf("valid Vault token: %d %s", w.Code, w.Body)
	}

	release := fillUnproven(s)
	before := iv.calls.Load()
	if w := get(s, "service=registry", basic("vault", "hvs.made-up")); w.Code != http.StatusTooManyRequests || iv.calls.Load() != before {
		t.Errorf("made-up Vault token with every unproven place taken: %d %s, sent to Vault: %v; want 429, not sent",
			w.Code, w.Body, iv.calls.Load() != before)
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
	s, _ := newTestRelay(t, iv.srv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
	for _, name := range []string{".", "..", "...", "...."} {
		w := get(s, "service=registry", basic(name, "ldap-pw"))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("user %q: %d %s, want 401", name, w.Code, w.Body)
		}
	}
	if n := iv.auth.Load(); n != 0 {
		t.Errorf("%d calls to an auth/ path for user names made of dots, want 0", n)
	}
	if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != http.StatusOK || iv.auth.Load() != 1 {
		t.Errorf("alice: %d %s after %d logins", w.Code, w.Body, iv.auth.Load())
	}
	for _, name := range []string{"a.b", ".alice", "alice."} {
		if !loginName(name) {
			t.Errorf("%q is refused as a login name", name)
		}
	}
}

func TestIdentity_passwordMountBehindThePluginUsers(t *testing.T) {
	iv := newIdentityVault(t)
	s, logs := newTestRelay(t, iv.srv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap/"} })
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
	cfg.Storage.Vault.Addr, cfg.Storage.Vault.AuthToken = iv.srv.URL, relayToken
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
	s, _ := newTestRelay(t, iv.srv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
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
	s, _ := newTestRelay(t, iv.srv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
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
	s, _ := newTestRelay(t, iv.srv.URL, func(c *Config) { c.Identity.PasswordMounts = []string{"ldap"} })
	request := func() {
		t.Helper()
		if w := get(s, "service=registry", basic("alice", "ldap-pw")); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	request()
	pluginCalls := iv.plugin.Load() // the first login went through the plugin first
	end := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(end) {
		request()
		time.Sleep(50 * time.Millisecond)
	}
	if n := iv.plugin.Load() - pluginCalls; n != 0 {
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
	iv.lease, iv.distinct = 4, true // reused for 2s; renewed ahead from 1.6s
	s, logs := newTestRelay(t, iv.srv.URL, func(c *Config) {
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
	for !iv.isRevoked("hvs.alice-1") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for i := 1; i <= n; i++ {
		tok := fmt.Sprintf("hvs.alice-%d", i)
		if revoked := iv.isRevoked(tok); revoked != (i < n) {
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
	s, logs := newTestRelay(t, iv.srv.URL)
	for _, tok := range []string{"hvs.alice", "hvs.ci"} {
		// The first request proves the token; the second asks a session.
		for range 2 {
			if w := get(s, "service=registry", basic("vault", tok)); w.Code != 200 || strings.Contains(w.Body.String(), "session") {
				t.Fatalf("%s: %d %s", tok, w.Code, w.Body)
			}
		}
	}
	if n := iv.sessionsAsked.Load(); n != 2 {
		t.Fatalf("%d sessions asked, want 2 (one per token, on its second request)", n)
	}
	calls := iv.calls.Load()
	got := concurrently(t, s, 40, "hvs.alice", "hvs.ci")
	want := map[string]string{"hvs.alice": "alice", "hvs.ci": "group/app"}
	for tok, subs := range got {
		for _, sub := range subs {
			if sub != want[tok] {
				t.Fatalf("a request with %s got a token for %q, want %q", tok, sub, want[tok])
			}
		}
	}
	uses, direct := iv.sessionUses.Load(), iv.calls.Load()-calls
	if uses < 40 || uses+direct != 80 {
		t.Errorf("of 80 requests %d went in batches with a session, %d alone; want most batched", uses, direct)
	}
	if n := iv.sessionsAsked.Load(); n != 2 {
		t.Errorf("%d sessions asked, want still 2", n)
	}
	if strings.Contains(logs.String(), "session-of-") || strings.Contains(logs.String(), "hvs.") {
		t.Error("the log holds a session or a Vault token")
	}
}

// A Vault token revoked: Vault revokes its session with it, the batch
// refuses the session, and each request goes on alone with the token and
// is refused as before; the other token's session goes on.
func TestIdentitySession_revokedTokenIsRefused(t *testing.T) {
	iv := newIdentityVault(t)
	iv.delay = 20 * time.Millisecond
	s, _ := newTestRelay(t, iv.srv.URL)
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
	if iv.sessionUses.Load() == 0 {
		t.Error("no request went in a batch with a session")
	}
	// The refused session is dropped: the next request goes alone at once.
	batches := iv.batches.Load()
	if w := get(s, "service=registry", basic("vault", "hvs.alice")); w.Code != 401 || iv.batches.Load() != batches {
		t.Errorf("after the refusal: %d, %d batch calls", w.Code, iv.batches.Load()-batches)
	}
}
