package relay

import (
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// A plugin process that died answers the calls that reach it before Vault
// notices with a 500: the gRPC error of the dead connection from its
// handler, or Vault's redacted "internal error" from its existence check.
// The relay tries such a call again, within pluginRelaunchBudget, when it
// is safe to; everything else of the kind stays a 503.
func TestAuth_deadOrBusyPluginProcessIsRetried(t *testing.T) {
	budget := pluginRelaunchBudget
	pluginRelaunchBudget = 500 * time.Millisecond // pauses 50, 100, 200: four calls
	t.Cleanup(func() { pluginRelaunchBudget = budget })
	const unavailable = `rpc error: code = Unavailable desc = error reading from server: EOF`
	cases := []struct {
		name     string
		errors   []string // Vault's error list for the first failures
		status   int      // 429: the plugin's busy refusal instead of a 500
		failures int32    // how many calls fail before the plugin answers
		proven   bool     // the password got a token before
		query    string
		form     url.Values // a refresh grant instead of GET
		want     int
		calls    int32 // calls of the failing request
	}{
		{name: "handler of the dead process", errors: []string{unavailable}, failures: 1, proven: true, want: 200, calls: 2},
		{name: "existence check of the dead process", errors: []string{"internal error"}, failures: 1, proven: true, want: 200, calls: 2},
		{name: "existence check, as Vault's multierror", errors: []string{"1 error occurred:\n\t* internal error\n\n"}, failures: 1, proven: true, want: 200, calls: 2},
		{name: "handler, as Vault's multierror", errors: []string{"1 error occurred:\n\t* " + unavailable + "\n\n"}, failures: 1, proven: true, want: 200, calls: 2},
		{name: "two errors, one internal", errors: []string{"2 errors occurred:\n\t* internal error\n\t* audit failed\n\n"}, failures: 1, proven: true, want: 503, calls: 1},
		{name: "anonymous", errors: []string{unavailable}, failures: 1, query: "service=registry", want: 200, calls: 2},
		{name: "refresh token", errors: []string{unavailable}, failures: 1,
			form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"(a refresh token of alice)"}, "service": {"registry"}, "client_id": {"c"}},
			want: 200, calls: 2},
		{name: "until the plugin is back", errors: []string{unavailable}, failures: 3, proven: true, want: 200, calls: 4},
		{name: "within the budget", errors: []string{"internal error"}, failures: 100, proven: true, want: 503, calls: 4},
		// A password the relay has not seen succeed: the dead process may
		// have counted a failure for it.
		{name: "unproven password", errors: []string{unavailable}, failures: 1, want: 503, calls: 1},
		{name: "busy new process", status: 429, failures: 1, want: 200, calls: 2},
		{name: "busy new process, proven", status: 429, failures: 2, proven: true, want: 200, calls: 3},
		{name: "another 500", errors: []string{"failed to persist lockout: storage is full"}, failures: 1, proven: true, want: 503, calls: 1},
		{name: "internal error among others", errors: []string{"internal error", "audit failed"}, failures: 1, proven: true, want: 503, calls: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fv := newPluginVault(t, "registry")
			// A request deadline that leaves time to retry a busy refusal.
			s, logs := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.Timeout = Duration(10 * time.Second) })
			auth := basic("alice", "s3cret")
			query := c.query
			if query == "" {
				query = "service=registry&scope=repository:alice/app:pull"
			}
			if c.form != nil {
				c.form.Set("refresh_token", fv.refreshToken(t, "alice", "s3cret"))
			}
			if c.proven {
				if w := get(s, query, auth); w.Code != 200 {
					t.Fatalf("first token: %d %s", w.Code, w.Body)
				}
			}
			var failed atomic.Int32
			fv.mu.Lock()
			fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
				if failed.Add(1) <= c.failures {
					if c.status == http.StatusTooManyRequests {
						pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeBusy, Message: "too many password checks in progress"})
						return
					}
					writeJSON(w, 500, map[string]any{"errors": c.errors})
					return
				}
				fv.Answer(w, r)
			}
			fv.mu.Unlock()
			before := fv.tokens.Load()
			code := 0
			if c.form != nil {
				code = post(s, c.form).Code
			} else {
				if c.query != "" {
					auth = ""
				}
				code = get(s, query, auth).Code
			}
			if code != c.want {
				t.Errorf("status %d, want %d\n%s", code, c.want, logs)
			}
			if n := fv.tokens.Load() - before; n != c.calls {
				t.Errorf("vault saw %d calls, want %d", n, c.calls)
			}
			if c.want == 200 && !strings.Contains(logs.String(), "the call is tried again") {
				t.Errorf("the retry is not in the log:\n%s", logs)
			}
		})
	}
}

// A plugin still gone when the call's own timeout nears: the relay answers
// 503 from the last 500 before the timeout, so Vault is not marked down
// and the next request is tried at once.
func TestAuth_deadPluginRetriesEndBeforeTheVaultTimeout(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, logs := newTestRelay(t, fv.URL, func(c *Config) {
		c.Storage.Vault.Timeout = Duration(time.Second)
		c.HTTP.Timeout = Duration(10 * time.Second)
	})
	auth := basic("alice", "s3cret")
	query := "service=registry&scope=repository:alice/app:pull"
	if w := get(s, query, auth); w.Code != 200 {
		t.Fatalf("first token: %d %s", w.Code, w.Body)
	}
	fv.mu.Lock()
	fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		writeJSON(w, 500, map[string]any{"errors": []string{"internal error"}})
	}
	fv.mu.Unlock()
	if w := get(s, query, auth); w.Code != 503 {
		t.Fatalf("status %d, want 503", w.Code)
	}
	if strings.Contains(logs.String(), "did not answer in time") {
		t.Errorf("the retries ran into the timeout:\n%s", logs)
	}
	before := fv.tokens.Load()
	if w := get(s, query, auth); w.Code != 503 {
		t.Fatalf("second status %d, want 503", w.Code)
	}
	if fv.tokens.Load() == before {
		t.Error("the next request was refused without asking Vault: Vault was marked down")
	}
}
