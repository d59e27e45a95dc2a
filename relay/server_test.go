package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

func TestAuth_GETMintsAndForwardsTheRequest(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	w := get(s, "service=registry&scope=repository:linux/app:pull,push&scope=repository:linux/db:pull"+
		"&account=alice&client_id=docker&offline_token=true", basic("alice", "s3cret"))
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Error("token answer may be cached")
	}
	body := decodeJSON(t, w)
	for _, k := range []string{"token", "access_token", "expires_in", "issued_at", "refresh_token"} {
		if _, ok := body[k]; !ok {
			t.Errorf("answer lacks %s: %v", k, body)
		}
	}
	if body["token"] != body["access_token"] || body["expires_in"] != float64(300) {
		t.Errorf("answer = %v", body)
	}
	path, sent, auth := fv.last()
	if path != "PUT registry/token" || auth != relayToken {
		t.Errorf("vault call = %s with token %q", path, auth)
	}
	// client_addr: httptest's peer, the client's address for the plugin.
	want := map[string]any{"username": "alice", "password": "s3cret", "account": "alice", "client_id": "docker",
		"offline_token": true, "ttl": float64(800), "client_addr": "192.0.2.1",
		"scope": []any{"repository:linux/app:pull,push", "repository:linux/db:pull"}}
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("vault body = %v\nwant %v", sent, want)
	}
}

func TestAuth_POSTPasswordGrantAnswersOAuth2(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	w := post(s, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw"},
		"service": {"registry"}, "client_id": {"containerd-client"},
		"scope": {"repository:a/b:pull,push repository:c:pull"}, "access_type": {"offline"}})
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	body := decodeJSON(t, w)
	if rt, _ := body["refresh_token"].(string); body["scope"] != "repository:a/b:pull,push repository:c:pull" || rt == "" ||
		body["token_type"] != "Bearer" || body["access_token"] == "" || body["expires_in"] != float64(300) {
		t.Errorf("answer = %v", body)
	}
	if _, ok := body["issued_at"]; !ok {
		t.Error("no issued_at")
	}
	_, sent, _ := fv.last()
	if sent["offline_token"] != true || !reflect.DeepEqual(sent["scope"], []any{"repository:a/b:pull,push", "repository:c:pull"}) {
		t.Errorf("vault body = %v", sent)
	}
}

func TestAuth_POSTRefreshGrant(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	rt := fv.refreshToken(t, "alice", "pw")
	w := post(s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"service": {"registry"}, "client_id": {"docker"}, "scope": {"repository:a:pull"}})
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	path, sent, _ := fv.last()
	want := map[string]any{"refresh_token": rt, "client_id": "docker", "scope": []any{"repository:a:pull"},
		"ttl": float64(800), "client_addr": "192.0.2.1"}
	if path != "PUT registry/token/refresh" || !reflect.DeepEqual(sent, want) {
		t.Errorf("vault call %s %v", path, sent)
	}
	if got, _ := decodeJSON(t, w)["refresh_token"].(string); got == "" {
		t.Error("refresh token not returned")
	}
}

func TestAuth_invalidRefreshTokenIsInvalidGrant401(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	w := post(s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"revoked"}, "service": {"registry"}})
	if w.Code != 401 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	body := decodeJSON(t, w)
	if body["error"] != "invalid_grant" || !strings.Contains(body["error_description"].(string), "invalid refresh token") {
		t.Errorf("answer = %v", body)
	}
	if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic realm=") {
		t.Errorf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
	}
}

func TestAuth_unsupportedGrantType(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	w := post(s, url.Values{"grant_type": {"client_credentials"}, "service": {"registry"}})
	if w.Code != 400 || decodeJSON(t, w)["error"] != "unsupported_grant_type" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if fv.tokens.Load()+fv.probes.Load() != 0 {
		t.Error("vault was called")
	}
}

func TestAuth_anonymousForwardsEmptyUserAnd401AsksForPassword(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if body["username"] == "" {
			pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeInvalidCredentials, Message: "credentials required"})
			return
		}
		fv.Answer(w, r)
	}
	s, _ := newTestRelay(t, fv.URL)
	w := get(s, "service=registry&scope=repository:a:pull", "")
	if w.Code != 401 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="godoauth-relay", charset="UTF-8"` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	if code, msg := registryErrorCode(t, w); code != "UNAUTHORIZED" || msg != "credentials required" {
		t.Errorf("error = %s %q", code, msg)
	}
	_, sent, _ := fv.last()
	if sent["username"] != "" || sent["password"] != "" {
		t.Errorf("anonymous request sent %v", sent)
	}
}

// TestAuth_answerTable walks docs/OPERATING.md's answer table: what Vault or the
// plugin answers and what the client gets, for GET and POST. The plugin's
// refusals carry a code (code set here); Vault's own carry only a status.
func TestAuth_answerTable(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		code        tokenapi.Code // the plugin's refusal code; empty: Vault's own refusal
		retry       int64         // the refusal's retry_after
		msg         string
		want        int
		regCode     string // registry code (GET)
		oauth       string // OAuth2 error (POST)
		retryAfter  string
		log         string // in the relay's log
		forgetMount bool
	}{
		{"plugin 400", 400, tokenapi.CodeInvalidRequest, 0, `account "bob" does not match`, 400, "BAD_REQUEST", "invalid_request", "", "", false},
		{"malformed scope", 400, tokenapi.CodeInvalidScope, 0, `malformed scope "repository:a"`, 400, "BAD_REQUEST", "invalid_scope", "", "", false},
		{"plugin 401", 401, tokenapi.CodeInvalidCredentials, 0, "invalid username or password", 401, "UNAUTHORIZED", "invalid_grant", "", "", false},
		{"locked out", 429, tokenapi.CodeLockedOut, 123, `user "alice" is locked out; retry after 123s`, 429, "TOOMANYREQUESTS",
			"temporarily_unavailable", "123", "", false},
		{"busy", 429, tokenapi.CodeBusy, 1, "too many password checks in progress", 429, "TOOMANYREQUESTS",
			"temporarily_unavailable", "1", "", false},
		{"locked out without a time", 429, tokenapi.CodeLockedOut, 0, "locked out", 429, "TOOMANYREQUESTS",
			"temporarily_unavailable", "60", "", false},
		{"vault's rate limit", 429, "", 0, "rate limit quota exceeded", 429, "TOOMANYREQUESTS",
			"temporarily_unavailable", "60", "", false},
		{"relay token refused", 403, "", 0, "permission denied", 503, "UNAVAILABLE", "temporarily_unavailable", "5",
			"vault refused the relay's token (403): check its policy allows update on registry/token", false},
		{"sealed", 503, "", 0, "Vault is sealed", 503, "UNAVAILABLE", "temporarily_unavailable", "5", "sealed", false},
		{"internal error", 500, "", 0, "internal error", 503, "UNAVAILABLE", "temporarily_unavailable", "5",
			"vault answered an error", false},
		{"bad gateway", 502, "", 0, "upstream", 503, "UNAVAILABLE", "temporarily_unavailable", "5", "vault answered an error", false},
		{"odd status", 418, "", 0, "teapot", 503, "UNAVAILABLE", "temporarily_unavailable", "5", "unexpected status", false},
		{"unmounted since the probe", 404, "", 0, "unsupported path", 400, "BAD_REQUEST", "invalid_request", "", "", true},
	}
	for _, c := range cases {
		for _, viaPOST := range []bool{false, true} {
			name := c.name + map[bool]string{false: " GET", true: " POST"}[viaPOST]
			t.Run(name, func(t *testing.T) {
				fv := newPluginVault(t, "registry")
				fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
					if c.code != "" {
						pluginRefusal(w, tokenapi.Refusal{Code: c.code, Message: c.msg, RetryAfter: c.retry})
						return
					}
					vaultError(w, c.status, c.msg)
				}
				s, logs := newTestRelay(t, fv.URL)
				var w *httptest.ResponseRecorder
				if viaPOST {
					w = post(s, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw"},
						"service": {"registry"}})
				} else {
					w = get(s, "service=registry", basic("alice", "pw"))
				}
				if w.Code != c.want {
					t.Fatalf("status %d, want %d: %s", w.Code, c.want, w.Body)
				}
				if got := w.Header().Get("Retry-After"); got != c.retryAfter {
					t.Errorf("Retry-After = %q, want %q", got, c.retryAfter)
				}
				if (c.want == 401) != (w.Header().Get("WWW-Authenticate") != "") {
					t.Errorf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
				}
				var msg string
				if viaPOST {
					body := decodeJSON(t, w)
					if body["error"] != c.oauth {
						t.Errorf("error = %v, want %s", body["error"], c.oauth)
					}
					msg, _ = body["error_description"].(string)
				} else {
					var code string
					code, msg = registryErrorCode(t, w)
					if code != c.regCode {
						t.Errorf("code = %s, want %s", code, c.regCode)
					}
				}
				switch {
				case c.want == 503 && strings.Contains(msg, c.msg):
					t.Errorf("the cause reached the client: %q", msg)
				case c.code != "" && msg != c.msg:
					t.Errorf("message %q, want the plugin's %q as it is", msg, c.msg)
				}
				if c.log != "" && !strings.Contains(logs.String(), c.log) {
					t.Errorf("log lacks %q:\n%s", c.log, logs)
				}
				if c.forgetMount {
					get(s, "service=registry", basic("alice", "pw"))
					if fv.probes.Load() != 2 {
						t.Errorf("probes = %d: a 404 must make the relay probe the mount again", fv.probes.Load())
					}
				}
			})
		}
	}
}

func TestAuth_vaultTransportFailuresAre503(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	cases := map[string]func(w http.ResponseWriter, r *http.Request, _ map[string]any){
		"timeout": func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		},
		"connection reset": func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // a RST, not a FIN
				}
				conn.Close()
			}
		},
		"garbage answer": func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			writeJSON(w, 200, map[string]any{"data": map[string]any{"token": "not-a-jwt", "expires_in": 300}})
		},
		"no expiry": func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			writeJSON(w, 200, map[string]any{"data": map[string]any{"token": fakeJWT(nil)}})
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			fv := newPluginVault(t, "registry")
			fv.token = h
			s, logs := newTestRelay(t, fv.URL, func(c *Config) { c.Storage.Vault.Timeout = Duration(500 * time.Millisecond) })
			w := get(s, "service=registry", basic("alice", "pw"))
			if w.Code != 503 || w.Header().Get("Retry-After") == "" {
				t.Fatalf("status %d, Retry-After %q: %s", w.Code, w.Header().Get("Retry-After"), w.Body)
			}
			if !strings.Contains(logs.String(), "[ERROR]") {
				t.Errorf("no error in the log:\n%s", logs)
			}
		})
	}
}

func TestAuth_vaultDownIs503AtOnce(t *testing.T) {
	fv := newPluginVault(t, "registry")
	addr := fv.URL
	fv.Close() // connection refused from now on
	s, logs := newTestRelay(t, addr)
	w := get(s, "service=registry", basic("alice", "pw"))
	if w.Code != 503 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if !strings.Contains(logs.String(), "vault is unreachable") {
		t.Errorf("log:\n%s", logs)
	}
	// The relay now knows Vault is down and answers without trying.
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != 503 {
		t.Fatalf("second status %d", w.Code)
	}
}

func TestAuth_probeDecidesWhichServicesExist(t *testing.T) {
	cases := []struct {
		name  string
		probe func(w http.ResponseWriter, r *http.Request)
		want  int
	}{
		{"no mount", func(w http.ResponseWriter, _ *http.Request) { vaultError(w, 404, "no handler") }, 400},
		{"mount needs a token", func(w http.ResponseWriter, _ *http.Request) { vaultError(w, 403, "permission denied") }, 400},
		{"PKI mount", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/pem-file")
			_, _ = io.WriteString(w, "-----BEGIN CERTIFICATE-----\n")
		}, 400},
		{"not PEM", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = io.WriteString(w, "{}")
		}, 400},
		{"redirect", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Location", "http://127.0.0.1:1/")
			w.WriteHeader(307)
		}, 400},
		{"sealed", func(w http.ResponseWriter, _ *http.Request) { vaultError(w, 503, "Vault is sealed") }, 503},
		{"server error", func(w http.ResponseWriter, _ *http.Request) { vaultError(w, 500, "boom") }, 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fv := newPluginVault(t, "registry")
			fv.probe = c.probe
			s, _ := newTestRelay(t, fv.URL)
			for i := range 2 {
				w := get(s, "service=registry", basic("alice", "pw"))
				if w.Code != c.want {
					t.Fatalf("request %d: status %d, want %d: %s", i, w.Code, c.want, w.Body)
				}
				if code, msg := registryErrorCode(t, w); c.want == 400 && (code != "BAD_REQUEST" || !strings.Contains(msg, "unknown service")) {
					t.Errorf("error = %s %q", code, msg)
				}
			}
			if fv.tokens.Load() != 0 {
				t.Error("the token path was called for a mount that is not the plugin's")
			}
			// A missing mount is remembered; an outage is not.
			wantProbes := int32(1)
			if c.want == 503 {
				wantProbes = 2
			}
			if got := fv.probes.Load(); got != wantProbes {
				t.Errorf("probes = %d, want %d", got, wantProbes)
			}
		})
	}
}

func TestAuth_probeIsRememberedAndOnceForABurst(t *testing.T) {
	fv := newPluginVault(t, "registry")
	release := make(chan struct{})
	fv.probe = func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = io.WriteString(w, "-----BEGIN CERTIFICATE-----\n")
	}
	s, _ := newTestRelay(t, fv.URL)
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for range 50 {
		wg.Go(func() { codes <- get(s, "service=registry", basic("alice", "pw")).Code })
	}
	time.Sleep(100 * time.Millisecond) // let the burst gather behind the probe
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("status %d", c)
		}
	}
	get(s, "service=registry", basic("alice", "pw"))
	if got := fv.probes.Load(); got != 1 {
		t.Errorf("probes = %d, want 1", got)
	}
}

func TestAuth_invalidServicesNeverReachVault(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	for _, svc := range []string{"", "sys%2Fmounts", "..%2Fsys", "a%20b", "registry%2Ftoken", url.QueryEscape(strings.Repeat("a", 129))} {
		w := get(s, "service="+svc, basic("alice", "pw"))
		if w.Code != 400 {
			t.Errorf("service=%s: status %d", svc, w.Code)
		}
	}
	if n := fv.probes.Load() + fv.tokens.Load(); n != 0 {
		t.Errorf("vault got %d calls", n)
	}
}

func TestAuth_issuerMismatchIsLoggedOnce(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.MustCall("registry", logical.UpdateOperation, "config", map[string]any{"issuer": "vault-plugin-registry"})
	s, logs := newTestRelay(t, fv.URL)
	for range 3 {
		if w := get(s, "service=registry", basic("alice", "pw")); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	}
	if n := strings.Count(logs.String(), "token.issuer differs"); n != 1 {
		t.Errorf("mismatch logged %d times:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "vault write registry/config issuer=Token") {
		t.Errorf("no fix in the log:\n%s", logs)
	}
}

func TestAuth_methodsAndBodies(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)

	r := httptest.NewRequest(http.MethodPut, "/auth?service=registry", nil)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != 405 || w.Header().Get("Allow") != "GET, POST" {
		t.Errorf("PUT: %d %q", w.Code, w.Header().Get("Allow"))
	}

	big := "grant_type=password&username=a&password=" + strings.Repeat("x", maxBodyBytes)
	r = httptest.NewRequest(http.MethodPost, "/auth", strings.NewReader(big))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != 413 || decodeJSON(t, w)["error"] != "invalid_request" {
		t.Errorf("huge body: %d %s", w.Code, w.Body)
	}

	r = httptest.NewRequest(http.MethodPost, "/auth", strings.NewReader(`{"grant_type":"password"}`))
	r.Header.Set("Content-Type", "application/json")
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != 400 {
		t.Errorf("JSON body: %d %s", w.Code, w.Body)
	}

	r = httptest.NewRequest(http.MethodGet, "/auth?service=registry", nil)
	r.Header.Add("Authorization", basic("a", "b"))
	r.Header.Add("Authorization", basic("c", "d"))
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != 400 {
		t.Errorf("two Authorization headers: %d", w.Code)
	}
}

func TestServerPing_answersAsGodoauth(t *testing.T) {
	fv := newPluginVault(t)
	s, _ := newTestRelay(t, fv.URL)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/server-ping", nil))
	if w.Code != 200 || w.Body.String() != "{\"message\": \"Save the Whales !\"}\n\r" ||
		w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%d %q", w.Code, w.Body)
	}
}

func TestHealthz_followsVault(t *testing.T) {
	cases := map[string]struct {
		health func(w http.ResponseWriter, r *http.Request)
		want   int
		state  string
	}{
		"unsealed": {nil, 200, "unsealed"},
		"sealed": {func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, 299, map[string]any{"initialized": true, "sealed": true})
		}, 503, "sealed"},
		"not initialized": {func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, 299, map[string]any{"initialized": false, "sealed": true})
		}, 503, "not initialized"},
		"broken": {func(w http.ResponseWriter, _ *http.Request) { vaultError(w, 500, "boom") }, 503, "unreachable"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			fv := newPluginVault(t)
			fv.health = c.health
			s, _ := newTestRelay(t, fv.URL)
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if w.Code != c.want || decodeJSON(t, w)["vault"] != c.state {
				t.Errorf("%d %s", w.Code, w.Body)
			}
		})
	}
	fv := newPluginVault(t)
	addr := fv.URL
	fv.Close()
	s, _ := newTestRelay(t, addr)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if w.Code != 503 {
		t.Errorf("vault down: %d", w.Code)
	}
}

func TestMetrics_boundedLabels(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	get(s, "service=registry", basic("alice", "pw"))
	get(s, "service=made-up-1", basic("alice", "pw"))
	get(s, "service=made%2Fup", basic("alice", "pw"))
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	text := w.Body.String()
	for _, want := range []string{
		`godoauth_relay_requests_total{outcome="minted",service="registry"} 1`,
		`godoauth_relay_requests_total{outcome="bad_request",service="invalid"} 2`,
		`godoauth_relay_request_duration_seconds_bucket{outcome="minted"`,
		`godoauth_relay_vault_errors_total{kind="unreachable"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "made") {
		t.Error("a made-up service became a label")
	}
}

// The request in flight is held in Vault until the shutdown has begun (the
// relay no longer accepts connections), then answered: no sleep races a
// timeout, and storage.vault.timeout is far longer than the test.
func TestServe_finishesRequestsInFlightOnShutdown(t *testing.T) {
	fv := newPluginVault(t, "registry")
	started, release := make(chan struct{}), make(chan struct{})
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		close(started)
		<-release
		fv.Answer(w, r)
	}
	s, _ := newTestRelay(t, fv.URL, func(c *Config) {
		c.Storage.Vault.Timeout = Duration(5 * time.Minute)
		c.HTTP.Timeout = Duration(5 * time.Minute)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/auth?service=registry", nil)
		req.SetBasicAuth("alice", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-started
	cancel()
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	if got := <-status; got != 200 {
		t.Errorf("request in flight got %d", got)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still listening after shutdown")
	}
}

func TestServe_slowClientCannotPinTheRelay(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.Timeout = Duration(300 * time.Millisecond) })
	addr := serveLoopback(t, s)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /auth?service=registry HTTP/1.1\r\nHost: x\r\n") // and never finishes
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the relay kept a half-sent request open past http.timeout")
	}

	huge, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer huge.Close()
	_, _ = io.WriteString(huge, "GET /auth HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufioReader(huge), nil)
	if err != nil || resp.StatusCode != 431 {
		t.Fatalf("huge header: %v %v", resp, err)
	}
}

func TestNew_refusesMissingTLSFiles(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:8200")
	cfg.HTTP.TLS = TLSConfig{Certificate: "testdata/missing.pem", Key: "testdata/missing.key"}
	_, err := New(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "http.tls") || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("err = %v", err)
	}
}

func TestNew_refusesAnIncompleteConfig(t *testing.T) {
	cfg := testConfig("")
	if _, err := New(cfg, nil); err == nil {
		t.Fatal("no Vault address accepted")
	}
}

func TestMintedToken_readsThePluginAnswerStrictly(t *testing.T) {
	good := func() map[string]any {
		return map[string]any{"token": "a.b.c", "access_token": "a.b.c", "expires_in": 300,
			"issued_at": "2024-01-02T03:04:05Z", "iss": "Token", "sub": "alice",
			"access": []map[string]any{{"type": "repository", "name": "a", "actions": []string{"pull"}}}}
	}
	read := func(d map[string]any) (*mintedToken, error) {
		b, err := json.Marshal(map[string]any{"data": d})
		if err != nil {
			t.Fatal(err)
		}
		var a tokenapi.Answer
		if err := readAnswer(bytes.NewReader(b), maxAnswerBytes, &vaultAnswer{Data: &a}); err != nil {
			return nil, err
		}
		return checkMinted(&a) // as tokenCall reads a token
	}
	m, err := read(good())
	if err != nil || m.Subject != "alice" || m.Issuer != "Token" || m.grantedScope() != "repository:a:pull" || m.ExpiresIn != 300 {
		t.Fatalf("%+v %v", m, err)
	}
	bad := map[string]func(map[string]any){
		"no token":             func(d map[string]any) { delete(d, "token") },
		"token not a string":   func(d map[string]any) { d["token"] = 5 },
		"access_token differs": func(d map[string]any) { d["access_token"] = "x.y.z" },
		"negative expiry":      func(d map[string]any) { d["expires_in"] = -1 },
		"fractional expiry":    func(d map[string]any) { d["expires_in"] = 1.5 },
		"issued_at not a time": func(d map[string]any) { d["issued_at"] = "yesterday" },
		"refresh not a string": func(d map[string]any) { d["refresh_token"] = 1 },
		"sub not a string":     func(d map[string]any) { d["sub"] = []string{"alice"} },
		"access not a list":    func(d map[string]any) { d["access"] = "repository:a:pull" },
		"no access":            func(d map[string]any) { delete(d, "access") },
		"no issuer":            func(d map[string]any) { delete(d, "iss") },
	}
	for name, edit := range bad {
		d := good()
		edit(d)
		if _, err := read(d); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func TestAuth_clientGoneIsCanceledNotAnOutage(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, logs := newTestRelay(t, fv.URL)
	get(s, "service=registry", basic("alice", "pw")) // probe once while Vault still answers
	release := make(chan struct{})
	fv.mu.Lock()
	fv.token = func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		<-release // Vault is slow; the client gives up meanwhile
		vaultError(w, 500, "too late")
	}
	fv.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest(http.MethodGet, "/auth?service=registry", nil).WithContext(ctx)
	r.Header.Set("Authorization", basic("alice", "pw"))
	done := make(chan struct{})
	go func() {
		s.Handler().ServeHTTP(httptest.NewRecorder(), r)
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	close(release)

	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	text := w.Body.String()
	if !strings.Contains(text, `godoauth_relay_requests_total{outcome="canceled",service="registry"} 1`) {
		t.Errorf("the abandoned request is not counted as canceled:\n%s", grepLines(text, "requests_total"))
	}
	if strings.Contains(text, `outcome="unavailable"`) || strings.Contains(logs.String(), "[ERROR]") {
		t.Errorf("an abandoned request was taken for a Vault outage:\n%s", logs)
	}
	// Vault is not marked down: the next request reaches it.
	fv.mu.Lock()
	fv.token = nil
	fv.mu.Unlock()
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != 200 {
		t.Fatalf("next request: %d %s", w.Code, w.Body)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
