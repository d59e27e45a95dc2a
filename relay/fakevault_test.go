package relay

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
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

const relayToken = "hvs.relay-token-value-0123456789"

// fakeRequestID and fakeBatchRequestID are the request_id of the fake's
// single and batch answers, as Vault's audit log would have them.
const (
	fakeRequestID      = "3f0c1a52-9d7e-4b7c-8e0f-0a1b2c3d4e5f"
	fakeBatchRequestID = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
)

// fakeVault stands in for Vault with the plugin mounted at some paths:
// ca/pem without a token, token and token/refresh with the relay's token.
type fakeVault struct {
	srv    *httptest.Server
	mounts map[string]bool // services with the plugin

	probes  atomic.Int32
	tokens  atomic.Int32 // token requests, single or in a batch
	batches atomic.Int32 // token/batch calls
	// revoked makes Vault refuse the relay's token as revoked.
	revoked atomic.Bool
	// batchStatus, when not 0, is Vault's answer to token/batch (403: a
	// policy without the path; 404: an older plugin).
	batchStatus atomic.Int32

	mu       sync.Mutex
	lastPath string
	lastBody map[string]any
	lastAuth string

	// token answers token and token/refresh requests; nil: mint.
	token func(w http.ResponseWriter, r *http.Request, body map[string]any)
	// probe answers ca/pem; nil: the plugin's PEM for known mounts.
	probe  func(w http.ResponseWriter, r *http.Request)
	health func(w http.ResponseWriter, r *http.Request)
	issuer string
}

func newFakeVault(t *testing.T, mounts ...string) *fakeVault {
	fv := &fakeVault{mounts: map[string]bool{}, issuer: "Token"}
	for _, m := range mounts {
		fv.mounts[m] = true
	}
	fv.srv = httptest.NewServer(http.HandlerFunc(fv.serve))
	t.Cleanup(fv.srv.Close)
	return fv
}

func (fv *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	if fv.revoked.Load() && r.Header.Get("X-Vault-Token") == relayToken && path != "sys/health" {
		vaultError(w, 403, vaultInvalidToken)
		return
	}
	switch {
	case path == "sys/health":
		if fv.health != nil {
			fv.health(w, r)
			return
		}
		writeJSON(w, 200, map[string]any{"initialized": true, "sealed": false, "standby": false})
	case strings.HasSuffix(path, "/ca/pem") && r.Method == http.MethodGet:
		fv.probes.Add(1)
		if r.Header.Get("X-Vault-Token") != "" {
			http.Error(w, "the probe must not carry a token", 500)
			return
		}
		if fv.probe != nil {
			fv.probe(w, r)
			return
		}
		if !fv.mounts[strings.TrimSuffix(path, "/ca/pem")] {
			vaultError(w, 404, "no handler for route")
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = io.WriteString(w, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	case strings.HasSuffix(path, "/"+tokenapi.PathTokenBatch):
		fv.batch(w, r)
	case strings.HasSuffix(path, "/token") || strings.HasSuffix(path, "/token/refresh"):
		fv.tokens.Add(1)
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		fv.mu.Lock()
		fv.lastPath, fv.lastBody, fv.lastAuth = r.Method+" "+path, body, r.Header.Get("X-Vault-Token")
		fv.mu.Unlock()
		if r.Header.Get("X-Vault-Token") != relayToken {
			vaultError(w, 403, "permission denied")
			return
		}
		fv.mu.Lock()
		token := fv.token
		fv.mu.Unlock()
		if token != nil {
			token(w, r, body)
			return
		}
		fv.mint(w, body)
	case path == "auth/token/lookup-self":
		// The relay looks its token up at start (vaulttoken.go): a token
		// of the fake's is valid; any other, Vault's answer to an unknown one.
		switch tok := r.Header.Get("X-Vault-Token"); {
		case tok == relayToken || strings.HasPrefix(tok, "hvs.other"):
			writeJSON(w, 200, map[string]any{"data": map[string]any{"ttl": fakeTokenPeriod, "renewable": true}})
		default:
			vaultError(w, 403, vaultInvalidToken)
		}
	case path == "auth/token/renew-self":
		// The relay renews its own token (vaulttoken.go): a periodic one here.
		if r.Header.Get("X-Vault-Token") != relayToken {
			vaultError(w, 403, "permission denied")
			return
		}
		writeJSON(w, 200, map[string]any{"auth": map[string]any{
			"client_token": relayToken, "renewable": true, "lease_duration": fakeTokenPeriod}})
	default:
		vaultError(w, 404, "unsupported path")
	}
}

// batch answers token/batch: each request as the single path would.
func (fv *fakeVault) batch(w http.ResponseWriter, r *http.Request) {
	fv.batches.Add(1)
	if r.Header.Get("X-Vault-Token") != relayToken {
		vaultError(w, 403, "permission denied")
		return
	}
	if status := fv.batchStatus.Load(); status != 0 {
		vaultError(w, int(status), "refused")
		return
	}
	var body struct {
		Requests []map[string]any `json:"requests"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Requests) == 0 || len(body.Requests) > tokenapi.MaxBatch {
		vaultError(w, 400, "requests: want a list of 1 to 32 token requests")
		return
	}
	answers := make([]map[string]any, len(body.Requests))
	var wg sync.WaitGroup
	for i, req := range body.Requests {
		wg.Go(func() {
			fv.tokens.Add(1)
			fv.mu.Lock()
			fv.lastPath, fv.lastBody, fv.lastAuth = r.Method+" "+strings.TrimPrefix(r.URL.Path, "/v1/"), req, r.Header.Get("X-Vault-Token")
			token := fv.token
			fv.mu.Unlock()
			rec := httptest.NewRecorder()
			if token != nil {
				token(rec, r, req)
			} else {
				fv.mint(rec, req)
			}
			var one struct {
				Data any `json:"data"`
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &one)
			answers[i] = map[string]any{"status": rec.Code, "data": one.Data}
		})
	}
	wg.Wait()
	writeJSON(w, 200, map[string]any{"request_id": fakeBatchRequestID, "data": map[string]any{"answers": answers}})
}

// fakeTokenPeriod is the period of the relay's token in fakeVault, seconds.
const fakeTokenPeriod = 3600

// mint answers like the plugin: a token whose access grants what was asked.
func (fv *fakeVault) mint(w http.ResponseWriter, body map[string]any) {
	user, _ := body["username"].(string)
	if rt, _ := body["refresh_token"].(string); rt != "" {
		if rt != "good-refresh-token" {
			pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeInvalidGrant, Message: "invalid refresh token"})
			return
		}
		user = "alice"
	}
	access := []tokenapi.Grant{}
	scopes, _ := body["scope"].([]any)
	for _, s := range scopes {
		for _, one := range strings.Fields(s.(string)) {
			parts := strings.Split(one, ":")
			if len(parts) == 3 {
				access = append(access, tokenapi.Grant{Type: parts[0], Name: parts[1], Actions: strings.Split(parts[2], ",")})
			}
		}
	}
	tok := fakeJWT(map[string]any{"iss": fv.issuer, "sub": user, "aud": "registry", "access": access})
	a := tokenapi.Answer{Token: tok, AccessToken: tok, ExpiresIn: 300, IssuedAt: time.Now().UTC().Format(time.RFC3339),
		Subject: user, Issuer: fv.issuer, Access: access}
	if off, _ := body["offline_token"].(bool); off || body["refresh_token"] != nil {
		a.RefreshToken = "good-refresh-token"
	}
	writeJSON(w, 200, map[string]any{"request_id": fakeRequestID, "data": a.Data()})
}

// pluginRefusal answers as the plugin refuses: the code's status, Vault's
// error list and the refusal as data.
func pluginRefusal(w http.ResponseWriter, r tokenapi.Refusal) {
	writeJSON(w, r.Code.Status(), map[string]any{"errors": []string{r.Message}, "data": r})
}

func fakeJWT(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	return "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9." + base64.RawURLEncoding.EncodeToString(payload) + ".c2lnbmF0dXJl"
}

// vaultError answers as Vault itself refuses: a status and an error list.
func vaultError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"errors": []string{msg}})
}

// vaultInvalidToken is Vault 1.21's error for a call with a revoked,
// expired or unknown token: its multierror, as one string.
const vaultInvalidToken = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"

func (fv *fakeVault) last() (string, map[string]any, string) {
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
