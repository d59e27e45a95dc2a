package relay

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	return addr
}

// electingStandby answers every call as a standby does during an election:
// a 307 to the dead leader, and 474 on sys/health.
func electingStandby(t *testing.T, dead string) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/sys/health" {
			w.WriteHeader(474)
			return
		}
		calls.Add(1)
		http.Redirect(w, r, dead+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestNodes_tokenRequestGoesToTheNodeThatAnswers(t *testing.T) {
	dead := deadAddr(t)
	standby, redirected := electingStandby(t, dead)
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, dead+","+standby.URL+","+fv.URL)
	// No health round before the first call: one that finished first
	// (the nodes are all on loopback) would name the answering node
	// active, and the call would go straight there.
	s.vault.nodes.checked.Store(time.Now().UnixNano())

	for i := range 3 {
		w := get(s, "service=registry&scope=repository:a/b:pull", basic("alice", "pw"))
		if w.Code != http.StatusOK {
			t.Fatalf("request %d: %d %s, want 200 from the third node", i, w.Code, w.Body)
		}
	}
	if n := fv.tokens.Load(); n != 3 {
		t.Errorf("the answering node minted %d tokens, want 3", n)
	}
	if got := failovers(t, s); got < 2 {
		t.Errorf("godoauth_relay_vault_failovers_total = %v, want at least 2 (dead node, then the redirecting standby)", got)
	}
	if redirected.Load() == 0 {
		t.Error("the standby was never tried")
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, `"`+dead+`":"unreachable"`) ||
		!strings.Contains(body, `"`+standby.URL+`":"standby_no_active"`) || !strings.Contains(body, `"`+fv.URL+`":"active"`) {
		t.Errorf("/healthz: %d %s, want 200 naming each node's state", w.Code, body)
	}
}

// The node learned active from sys/health gets the calls, not the first
// node listed.
func TestNodes_learnsTheActiveNode(t *testing.T) {
	dead := deadAddr(t)
	standby, redirected := electingStandby(t, dead)
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, standby.URL+","+fv.URL)
	if n := redirected.Load(); n != 0 {
		t.Fatalf("standby called %d times before any request", n)
	}
	s.vault.nodes.refresh(t.Context())
	for range 5 {
		if w := get(s, "service=registry", basic("alice", "pw")); w.Code != http.StatusOK {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if n := redirected.Load(); n != 0 {
		t.Errorf("the standby got %d calls after sys/health named the active node, want 0", n)
	}
	if got := failovers(t, s); got != 0 {
		t.Errorf("failovers = %v, want 0", got)
	}
}

// A password the relay has not seen succeed is not retried after an
// answer that says the call may have run: a wrong password could count a
// second lockout failure. A proven one is retried on the next node.
func TestNodes_maybeRunIsRetriedOnlyWhenSafe(t *testing.T) {
	var brokenCalls atomic.Int32
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/sys/health" {
			w.WriteHeader(200) // believed active: it gets the calls first
			return
		}
		if strings.HasSuffix(r.URL.Path, "/ca/pem") {
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
			return
		}
		brokenCalls.Add(1)
		vaultError(w, http.StatusInternalServerError, "error forwarding request: leadership lost")
	}))
	t.Cleanup(broken.Close)
	fv := newPluginVault(t, "registry")
	fv.health = func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(429) } // a standby
	s, _ := newTestRelay(t, broken.URL+","+fv.URL)
	s.vault.nodes.refresh(t.Context())

	// Unproven: the 500 may have counted a failure; no retry, a 503.
	if w := get(s, "service=registry", basic("mallory", "guess")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("unproven password after a 500: %d %s, want 503", w.Code, w.Body)
	}
	if n := fv.tokens.Load(); n != 0 {
		t.Fatalf("the unproven password was retried on the second node (%d calls)", n)
	}
	// Proven (it minted once, through the second node): retried.
	s.vault.nodes.list[0].downUntil.Store(0)
	s.vault.nodes.refresh(t.Context())
	s.vault.credentials.remember(mustID(t, s, "alice", "pw"))
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != http.StatusOK {
		t.Fatalf("proven password after a 500: %d %s, want 200 from the second node", w.Code, w.Body)
	}
	if brokenCalls.Load() != 2 || fv.tokens.Load() != 1 {
		t.Errorf("calls: broken node %d, good node %d; want 2 and 1", brokenCalls.Load(), fv.tokens.Load())
	}
}

func mustID(t *testing.T, s *Server, user, password string) credentialID {
	t.Helper()
	req, f := parseTokenQuery("service=registry", basic(user, password), nil)
	if f != nil {
		t.Fatal(f.msg)
	}
	id, _ := s.vault.credentials.id(req)
	return id
}

// Every node down: the call gives up within the request's deadline with a 503.
func TestNodes_allDownIs503WithinTheDeadline(t *testing.T) {
	s, _ := newTestRelay(t, deadAddr(t)+","+deadAddr(t))
	w := get(s, "service=registry", basic("alice", "pw"))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503", w.Code, w.Body)
	}
}

func TestConfig_vaultAddresses(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
storage:
  vault:
    addresses: [ "http://10.0.0.1:8200", "http://10.0.0.2:8200" ]
    auth_token: x
http:
  addr: ":5002"
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.VaultAddresses(), " "); got != "http://10.0.0.1:8200 http://10.0.0.2:8200" {
		t.Errorf("addresses: %s", got)
	}
	if err := cfg.ApplyEnv(func(k string) string {
		if k == "VAULT_ADDR" {
			return "https://a:8200, https://b:8200"
		}
		return ""
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.VaultAddresses(), " "); got != "https://a:8200 https://b:8200" {
		t.Errorf("VAULT_ADDR list: %s", got)
	}

	for _, bad := range []struct{ yaml, want string }{
		{`addresses: "http://a:8200"`, "storage.vault.addresses"},
		{`addresses: [ "ftp://a" ]`, "storage.vault.addresses"},
		{`addresses: [ "http://a:1", "http://a:1" ]`, "given twice"},
		{`addresses: [ [ "http://a:1" ] ]`, "storage.vault.addresses"},
	} {
		_, err := ParseConfig([]byte("storage:\n  vault:\n    " + bad.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want one naming %q", bad.yaml, err, bad.want)
		}
	}
	c := &Config{}
	if err := c.ApplyEnv(func(string) string { return "http://a:1,nope" }); err == nil {
		t.Error("VAULT_ADDR with a bad second URL accepted")
	}
}

var failoversLine = regexp.MustCompile(`(?m)^godoauth_relay_vault_failovers_total (\S+)$`)

// failovers reads godoauth_relay_vault_failovers_total from /metrics.
func failovers(t *testing.T, s *Server) float64 {
	t.Helper()
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	m := failoversLine.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatal("no godoauth_relay_vault_failovers_total in /metrics")
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The plugin's busy 429 is answered before any password is compared or
// counted: the relay waits and asks again, even for an unproven password.
// A lockout 429 is the answer and is not retried.
func TestNodes_busyIsRetriedLockoutIsNot(t *testing.T) {
	fv := newPluginVault(t, "registry")
	var busyLeft, lockedCalls atomic.Int32
	busyLeft.Store(2)
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			raw, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(raw))
			var body struct{ Username string }
			_ = json.Unmarshal(raw, &body)
			if body.Username == "lars" {
				lockedCalls.Add(1)
				pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeLockedOut, Message: `user "lars" is locked out; retry after 60s`, RetryAfter: 60})
				return
			}
			if busyLeft.Add(-1) >= 0 {
				// Known by its code, whatever its words.
				pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeBusy, Message: "any words at all", RetryAfter: 1})
				return
			}
		}
		fv.ServeHTTP(w, r)
	}))
	t.Cleanup(node.Close)
	s, _ := newTestRelay(t, node.URL+","+deadAddr(t))
	s.vault.nodes.refresh(t.Context())

	if w := get(s, "service=registry", basic("mallory", "first-try")); w.Code != http.StatusOK {
		t.Fatalf("after two busy answers: %d %s, want 200", w.Code, w.Body)
	}
	if n := fv.tokens.Load(); n != 1 || busyLeft.Load() != -1 {
		t.Errorf("minted %d tokens, busy answers left %d; want 1 token after both busy answers", n, busyLeft.Load())
	}
	w := get(s, "service=registry", basic("lars", "pw"))
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "locked out") {
		t.Fatalf("locked-out user: %d %s, want 429 naming the lockout", w.Code, w.Body)
	}
	if n := lockedCalls.Load(); n != 1 {
		t.Errorf("the lockout 429 was sent to Vault %d times, want once", n)
	}
}
