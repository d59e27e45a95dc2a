package relay

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// TestAuth_refusalCodeDecidesNotTheMessage: the plugin's refusal code
// alone decides the client's answer. The same code with other words gives
// the same status, Retry-After and error codes, and the words reach the
// client as they are; words the relay once looked for change nothing.
func TestAuth_refusalCodeDecidesNotTheMessage(t *testing.T) {
	cases := []struct {
		code       tokenapi.Code
		retry      int64
		status     int
		oauth      string
		retryAfter string
	}{
		{tokenapi.CodeInvalidRequest, 0, 400, "invalid_request", ""},
		{tokenapi.CodeInvalidScope, 0, 400, "invalid_scope", ""},
		{tokenapi.CodeInvalidCredentials, 0, 401, "invalid_grant", ""},
		{tokenapi.CodeInvalidGrant, 0, 401, "invalid_grant", ""},
		{tokenapi.CodeLockedOut, 42, 429, "temporarily_unavailable", "42"},
		{tokenapi.CodeBusy, 2, 429, "temporarily_unavailable", "2"},
	}
	messages := []string{
		"the usual words",
		"invalid refresh token",      // the words the relay once matched
		"locked out; retry after 7s", // a Retry-After in words that must not count
		"Ein ganz anderer Satz",
	}
	for _, c := range cases {
		for _, msg := range messages {
			for _, grant := range []string{"password", "refresh_token"} {
				fv := newPluginVault(t, "registry")
				fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
					pluginRefusal(w, tokenapi.Refusal{Code: c.code, Message: msg, RetryAfter: c.retry})
				}
				s, _ := newTestRelay(t, fv.URL)
				form := url.Values{"grant_type": {grant}, "service": {"registry"}}
				if grant == "password" {
					form.Set("username", "alice")
					form.Set("password", "pw")
				} else {
					form.Set("refresh_token", "rt")
				}
				w := post(s, form)
				body := decodeJSON(t, w)
				if w.Code != c.status || body["error"] != c.oauth || w.Header().Get("Retry-After") != c.retryAfter {
					t.Errorf("%s %q (%s): %d %v Retry-After %q; want %d %s %q", c.code, msg, grant,
						w.Code, body["error"], w.Header().Get("Retry-After"), c.status, c.oauth, c.retryAfter)
				}
				if body["error_description"] != msg {
					t.Errorf("%s %q: the client got %q, want the plugin's words as they are", c.code, msg, body["error_description"])
				}
				g := get(s, "service=registry", basic("alice", "pw"))
				if g.Code != c.status {
					t.Errorf("%s %q GET: %d, want %d", c.code, msg, g.Code, c.status)
				}
				if _, m := registryErrorCode(t, g); m != msg {
					t.Errorf("%s GET: message %q, want %q", c.code, m, msg)
				}
			}
		}
	}
}

// TestAuth_unknownRefusalCodeFollowsTheStatus: a code newer than this relay
// is answered by the plugin's status.
func TestAuth_unknownRefusalCodeFollowsTheStatus(t *testing.T) {
	for status, want := range map[int]int{400: 400, 401: 401, 429: 429} {
		fv := newPluginVault(t, "registry")
		fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			writeJSON(w, status, map[string]any{"errors": []string{"new"},
				"data": tokenapi.Refusal{Code: "some_new_code", Message: "new", RetryAfter: 3}})
		}
		s, _ := newTestRelay(t, fv.URL)
		if w := get(s, "service=registry", basic("alice", "pw")); w.Code != want {
			t.Errorf("unknown code with status %d: %d, want %d", status, w.Code, want)
		}
	}
}

// TestAuth_answerReadAfterTheHeaders: Vault sends the headers before the
// whole body; the relay reads the body to its end (a client call that
// cancels its context on return would lose it).
func TestAuth_answerReadAfterTheHeaders(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.(http.Flusher).Flush()
		time.Sleep(100 * time.Millisecond)
		_, _ = w.Write([]byte(`{"errors":["late words"],"data":{"code":"invalid_credentials","message":"late words"}}`))
	}
	s, _ := newTestRelay(t, fv.URL)
	w := get(s, "service=registry", basic("alice", "pw"))
	if _, m := registryErrorCode(t, w); w.Code != 401 || m != "late words" {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	fv.mu.Lock()
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(100 * time.Millisecond)
		fv.Answer(w, r)
	}
	fv.mu.Unlock()
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
