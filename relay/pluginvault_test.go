package relay

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"

	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

const relayToken = "hvs.relay-token-value-0123456789"

// testUserAccess is the access of every user a test names: whatever it
// asks of repositories, and the catalog.
const testUserAccess = "repository:**:*;registry:catalog:*"

// pluginVault is Vault with the real plugin mounted at some paths
// (plugintest.Server), taking the relay's token, set up as the relay's
// tests expect: issuer Token, tokens of 300 s, anonymous pulls, and every
// user a request names made on first sight with the password it presents
// (a later other password is wrong). The fields below are hooks for the
// faults the tests inject, and counts of what reached Vault.
type pluginVault struct {
	*plugintest.Server

	probes  atomic.Int32 // ca/pem calls
	tokens  atomic.Int32 // token requests, single or in a batch
	batches atomic.Int32 // token/batch calls
	// batchStatus, when not 0, is Vault's answer to token/batch (403: a
	// policy without the path; 404: an older plugin).
	batchStatus atomic.Int32

	mu       sync.Mutex
	lastPath string
	lastBody map[string]any // the last token request (a batch's last one)
	lastAuth string
	// ownUsers: the users are the test's own, none made on first sight.
	ownUsers bool
	users    map[string]bool   // made in the plugin
	hashes   map[string]string // password → its bcrypt hash

	// token answers token, token/refresh and token/batch calls (body: the
	// call's, with "requests" for a batch) instead of the plugin; nil: the
	// plugin answers. A hook that only waits passes on with Answer(w, r).
	token func(w http.ResponseWriter, r *http.Request, body map[string]any)
	// probe answers ca/pem; nil: the plugin's PEM for its mounts.
	probe func(w http.ResponseWriter, r *http.Request)
	// health answers sys/health; nil: an active, unsealed node.
	health func(w http.ResponseWriter, r *http.Request)
}

func newPluginVault(t testing.TB, mounts ...string) *pluginVault {
	t.Helper()
	fv := &pluginVault{Server: plugintest.NewServer(t, plugin.Factory, relayToken, mounts...), users: map[string]bool{}, hashes: map[string]string{}}
	for _, m := range mounts {
		fv.MustCall(m, logical.UpdateOperation, "config", map[string]any{
			"issuer": "Token", "ttl": 300, "max_ttl": 300, "anonymous_access": "repository:**:pull"})
	}
	// Another valid token, whose policy lacks renew-self.
	fv.AddToken(otherToken, plugintest.Token{TTL: fakeTokenPeriod, Deny: []string{"auth/token/renew-self"}})
	fv.SetHook(fv.serve)
	return fv
}

// otherToken is a valid Vault token other than the relay's, which may not
// renew itself.
const otherToken = "hvs.other-token"

// serve applies the hooks and counts; what they leave, the plugin answers.
func (fv *pluginVault) serve(w http.ResponseWriter, r *http.Request, req *plugintest.Request) bool {
	path := req.Path
	switch {
	case path == "sys/health":
		if fv.health != nil {
			fv.health(w, r)
			return true
		}
	case strings.HasSuffix(path, "/ca/pem") && r.Method == http.MethodGet:
		fv.probes.Add(1)
		if req.Token != "" {
			http.Error(w, "the probe must not carry a token", 500)
			return true
		}
		if fv.probe != nil {
			fv.probe(w, r)
			return true
		}
	case req.Mount != "" && (req.Rest == "token" || req.Rest == "token/refresh" || req.Rest == tokenapi.PathTokenBatch):
		var body map[string]any
		_ = json.Unmarshal(req.Body, &body)
		requests := []map[string]any{body}
		if req.Rest == tokenapi.PathTokenBatch {
			fv.batches.Add(1)
			requests = nil
			items, _ := body["requests"].([]any)
			for _, it := range items {
				m, _ := it.(map[string]any)
				requests = append(requests, m)
			}
		}
		fv.tokens.Add(int32(len(requests)))
		fv.mu.Lock()
		if len(requests) > 0 {
			fv.lastPath, fv.lastBody, fv.lastAuth = r.Method+" "+path, requests[len(requests)-1], req.Token
		}
		token := fv.token
		fv.mu.Unlock()
		if req.Token != relayToken {
			vaultError(w, 403, "permission denied")
			return true
		}
		if status := fv.batchStatus.Load(); status != 0 && req.Rest == tokenapi.PathTokenBatch {
			vaultError(w, int(status), "refused")
			return true
		}
		for _, one := range requests {
			fv.makeUser(req.Mount, one)
		}
		if token != nil {
			token(w, r, body)
			return true
		}
	}
	return false
}

// makeUser makes the user a token request names, with its password, the
// first time one is named.
func (fv *pluginVault) makeUser(mount string, body map[string]any) {
	user, _ := body["username"].(string)
	password, _ := body["password"].(string)
	if user == "" || password == "" {
		return
	}
	fv.mu.Lock()
	defer fv.mu.Unlock()
	if fv.ownUsers {
		return
	}
	if fv.users[mount+"/"+user] {
		return
	}
	// One hash a password, given as password_hash: a burst of new users
	// costs storage writes, not a bcrypt hash each.
	hash, ok := fv.hashes[password]
	if !ok {
		b, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			return
		}
		hash = string(b)
		fv.hashes[password] = hash
	}
	// Called in the server's goroutine: a failure shows as the token
	// request's refusal.
	if code, _, _ := fv.Call(mount, logical.UpdateOperation, "users/"+user, map[string]any{"password_hash": hash, "access": testUserAccess}); code < 400 {
		fv.users[mount+"/"+user] = true
	}
}

// refreshToken is a refresh token of user's at the registry mount, got
// from the plugin directly (no call the counts see).
func (fv *pluginVault) refreshToken(t testing.TB, user, password string) string {
	t.Helper()
	body := map[string]any{"username": user, "password": password, "offline_token": true}
	fv.makeUser("registry", body)
	rt, _ := fv.MustCall("registry", logical.UpdateOperation, "token", body).Data["refresh_token"].(string)
	if rt == "" {
		t.Fatal("the plugin gave no refresh token")
	}
	return rt
}

// requestID is the request_id Vault gave its last answer on the registry
// mount's path rest.
func (fv *pluginVault) requestID(t testing.TB, rest string) string {
	t.Helper()
	r := fv.Last(rest)
	if r == nil || r.RequestID == "" {
		t.Fatalf("no answer with a request_id on %s", rest)
	}
	return r.RequestID
}

// fakeTokenPeriod is the period of the relay's token, seconds.
const fakeTokenPeriod = plugintest.TokenPeriod

// pluginRefusal answers as the plugin refuses: the code's status, Vault's
// error list and the refusal as data.
func pluginRefusal(w http.ResponseWriter, r tokenapi.Refusal) {
	writeJSON(w, r.Code.Status(), map[string]any{"errors": []string{r.Message}, "data": r})
}

// fakeJWT is a token-shaped string with claims, for answers the plugin
// would not give.
func fakeJWT(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	return "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9." + base64.RawURLEncoding.EncodeToString(payload) + ".c2lnbmF0dXJl"
}

// vaultError answers as Vault itself refuses: a status and an error list.
func vaultError(w http.ResponseWriter, status int, msg string) {
	plugintest.WriteError(w, status, msg)
}

func (fv *pluginVault) last() (string, map[string]any, string) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return fv.lastPath, fv.lastBody, fv.lastAuth
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testConfig is a relay configuration pointing at addr.
func testConfig(addr string) *Config {
	return &Config{
		// A Vault timeout no answer of the stand-in reaches on a busy
		// machine; tests of timeouts set their own.
		Storage: Storage{Vault: VaultConfig{Addr: addr, AuthToken: relayToken, Timeout: Duration(10 * time.Second)}},
		HTTP:    HTTPConfig{Addr: "127.0.0.1:0", Timeout: Duration(2 * time.Second)},
		Token:   TokenConfig{Issuer: "Token", Expiration: 800},
		Log:     LogConfig{Level: "debug"},
	}
}

// newTestRelay starts a relay in front of addr; its log is returned.
func newTestRelay(t *testing.T, addr string, edit ...func(*Config)) (*Server, *syncBuffer) {
	t.Helper()
	cfg := testConfig(addr)
	for _, e := range edit {
		e(cfg)
	}
	logs := &syncBuffer{}
	s, err := New(cfg, NewLogger(cfg.Log.Level, logs))
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

// get sends GET /auth?query with an Authorization header (if any).
func get(s *Server, query, authorization string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/auth?"+query, nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

// post sends POST /auth with an OAuth2 form.
func post(s *Server, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/auth", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

func decodeJSON(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	return m
}

// registryErrorCode is the code of a GET error answer.
func registryErrorCode(t *testing.T, w *httptest.ResponseRecorder) (string, string) {
	t.Helper()
	var e registryError
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("not a registry error: %q", w.Body.String())
	}
	return e.Errors[0].Code, e.Errors[0].Message
}
