package relay

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// fillUnproven takes every place for unproven passwords, as a flood of
// wrong passwords does, until the returned function gives them back.
func fillUnproven(s *Server) (release func()) {
	for range maxUnprovenCalls {
		s.vault.credentials.unproven <- struct{}{}
	}
	return func() {
		for range maxUnprovenCalls {
			<-s.vault.credentials.unproven
		}
	}
}

// aliceGotAToken is a relay with the given http.timeout whose first token
// went to alice; her Authorization header is returned.
func aliceGotAToken(t *testing.T, timeout time.Duration) (*pluginVault, *Server, *syncBuffer, string) {
	t.Helper()
	fv := newPluginVault(t, "registry")
	s, logs := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.Timeout = Duration(timeout) })
	alice := basic("alice", "pw")
	if w := get(s, "service=registry", alice); w.Code != http.StatusOK {
		t.Fatalf("first token: %d %s", w.Code, w.Body)
	}
	return fv, s, logs, alice
}

func TestMint_onlyUnprovenPasswordsWaitForTheirPlaces(t *testing.T) {
	fv, s, logs, alice := aliceGotAToken(t, 400*time.Millisecond)
	release := fillUnproven(s)
	defer release()

	if w := get(s, "service=registry", alice); w.Code != http.StatusOK {
		t.Errorf("a credential that got a token waited for a place: %d %s", w.Code, w.Body)
	}
	if w := post(s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {fv.refreshToken(t, "alice", "pw")},
		"service": {"registry"}}); w.Code != http.StatusOK {
		t.Errorf("a refresh token waited for a place: %d %s", w.Code, w.Body)
	}
	if w := get(s, "service=registry", ""); w.Code != http.StatusOK {
		t.Errorf("an anonymous request waited for a place: %d %s", w.Code, w.Body)
	}
	for _, who := range []string{basic("alice", "other password"), basic("bob", "pw")} {
		start := time.Now()
		w := get(s, "service=registry", who)
		took := time.Since(start)
		if code, msg := registryErrorCode(t, w); w.Code != http.StatusTooManyRequests || code != "TOOMANYREQUESTS" ||
			w.Header().Get("Retry-After") != "1" || !strings.Contains(msg, "too many password checks") {
			t.Errorf("unproven password with every place taken: %d %v %s", w.Code, w.Header(), w.Body)
		}
		if took < 150*time.Millisecond || took > time.Second {
			t.Errorf("unproven password waited %s for a place; want about half of http.timeout", took)
		}
	}
	if !strings.Contains(logs.String(), "too many requests with passwords") {
		t.Errorf("the refusals are not in the log:\n%s", logs)
	}
	if strings.Contains(logs.String(), "[ERROR]") {
		t.Errorf("the refusals were logged as a Vault outage:\n%s", logs)
	}
}

func TestMint_credentialRefusedIsForgotten(t *testing.T) {
	fv, s, _, alice := aliceGotAToken(t, 200*time.Millisecond)
	fv.mu.Lock()
	fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		vaultError(w, http.StatusUnauthorized, "invalid username or password") // the password changed
	}
	fv.mu.Unlock()
	if w := get(s, "service=registry", alice); w.Code != http.StatusUnauthorized {
		t.Fatalf("after the change: %d %s", w.Code, w.Body)
	}
	fv.mu.Lock()
	fv.token = nil
	fv.mu.Unlock()
	defer fillUnproven(s)()
	if w := get(s, "service=registry", alice); w.Code != http.StatusTooManyRequests {
		t.Errorf("a refused credential still passes as proven: %d %s", w.Code, w.Body)
	}
}

// A credential the plugin refuses for any reason but busy is no longer
// proven: a locked-out user's right password (429 locked_out) included,
// or it would keep the proven path, past the bound on unproven checks and
// into the batches (issue 20, point 1). A busy refusal checked nothing:
// the credential stays proven.
func TestMint_credentialRefusedForAnyReasonButBusyIsForgotten(t *testing.T) {
	for _, c := range []struct {
		refusal tokenapi.Refusal
		status  int
		proven  bool
	}{
		{tokenapi.Refusal{Code: tokenapi.CodeLockedOut, Message: "user \"alice\" is locked out; retry after 300s", RetryAfter: 300}, 429, false},
		{tokenapi.Refusal{Code: tokenapi.CodeInvalidScope, Message: "malformed scope"}, 400, false},
		{tokenapi.Refusal{Code: tokenapi.CodeBusy, Message: "too many password checks in progress; retry after 1s", RetryAfter: 1}, 429, true},
	} {
		t.Run(string(c.refusal.Code), func(t *testing.T) {
			fv, s, _, alice := aliceGotAToken(t, 300*time.Millisecond)
			fv.mu.Lock()
			fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) { pluginRefusal(w, c.refusal) }
			fv.mu.Unlock()
			if w := get(s, "service=registry", alice); w.Code != c.status {
				t.Fatalf("refused: %d %s, want %d", w.Code, w.Body, c.status)
			}
			fv.mu.Lock()
			fv.token = nil
			fv.mu.Unlock()
			defer fillUnproven(s)()
			w := get(s, "service=registry", alice)
			if proven := w.Code == http.StatusOK; proven != c.proven {
				t.Errorf("after a %s refusal, with every unproven place taken: %d %s; want proven=%v",
					c.refusal.Code, w.Code, w.Body, c.proven)
			}
		})
	}
}

// With batching off, one credential holds at most maxProvenPerCredential
// calls on the proven path; more go as unproven: a locked-out user's right
// password from many connections, sent before the first refusal came
// back, cannot take every Vault call slot (issue 20, point 1).
func TestMint_batchingOffBoundsOneCredentialsProvenCalls(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL, func(c *Config) {
		off := false
		c.Storage.Vault.Batch = &off
		c.HTTP.Timeout = Duration(5 * time.Second)
	})
	alice := basic("alice", "pw")
	if w := get(s, "service=registry", alice); w.Code != http.StatusOK {
		t.Fatalf("first token: %d %s", w.Code, w.Body)
	}
	hold := make(chan struct{})
	fv.mu.Lock()
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		<-hold
		fv.Answer(w, r)
	}
	fv.mu.Unlock()
	var wg sync.WaitGroup
	for range maxProvenPerCredential {
		wg.Go(func() {
			if w := get(s, "service=registry", alice); w.Code != http.StatusOK {
				t.Errorf("proven request: %d %s", w.Code, w.Body)
			}
		})
	}
	defer wg.Wait()
	defer close(hold)
	for i := 0; len(s.vault.admission.slots) < maxProvenPerCredential; i++ {
		if i == 1000 {
			t.Fatalf("%d calls in flight, want %d", len(s.vault.admission.slots), maxProvenPerCredential)
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer fillUnproven(s)()
	if w := get(s, "service=registry", alice); w.Code != http.StatusTooManyRequests {
		t.Errorf("request past the credential's proven calls, every unproven place taken: %d %s, want 429", w.Code, w.Body)
	}
	if n := len(s.vault.admission.slots); n != maxProvenPerCredential {
		t.Errorf("%d Vault calls in flight, want %d", n, maxProvenPerCredential)
	}
}

func TestProvenCredentials_bounded(t *testing.T) {
	p := newProvenCredentials()
	var first credentialID
	for i := range maxProven + 100 {
		id, ok := p.id(&tokenRequest{Service: "registry", Username: "u", Password: strings.Repeat("x", i+1)})
		if !ok {
			t.Fatal("a password request has no credential id")
		}
		if i == 0 {
			first = id
		}
		p.remember(id)
	}
	if n := p.known.len(); n > maxProven {
		t.Errorf("%d credentials remembered; want at most %d", n, maxProven)
	}
	other, _ := p.id(&tokenRequest{Service: "other", Username: "u", Password: "x"})
	if other == first {
		t.Error("the same credential on another service has the same id")
	}
	if _, ok := p.id(&tokenRequest{Service: "registry", RefreshToken: "rt"}); ok {
		t.Error("a refresh token request counts as a password check")
	}
}
