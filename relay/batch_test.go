package relay

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowMint lets the plugin answer after a pause, so that requests arriving
// together find the mount's calls all in flight.
func slowMint(fv *pluginVault, pause time.Duration) func(http.ResponseWriter, *http.Request, map[string]any) {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		time.Sleep(pause)
		fv.Answer(w, r)
	}
}

// burst sends n token requests at once, the i-th for user-i with scope
// repository:team/app-i:pull, and returns the answers in order.
func burst(s *Server, n int, password func(i int) string) []*httpAnswer {
	answers := make([]*httpAnswer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			w := get(s, fmt.Sprintf("service=registry&scope=repository:team/app-%d:pull", i), basic(fmt.Sprintf("user-%d", i), password(i)))
			answers[i] = &httpAnswer{w.Code, w.Body.String()}
		})
	}
	wg.Wait()
	return answers
}

type httpAnswer struct {
	status int
	body   string
}

// The requests of a burst (after each credential got a token once) share
// Vault calls, and each gets its own answer: its user's token for its
// scope, or its own refusal.
func TestBatch_burstSharesCallsAndEachGetsItsOwnAnswer(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.token = slowMint(fv, 20*time.Millisecond)
	s, _ := newTestRelay(t, fv.URL)
	const n = 40
	good := func(int) string { return "pw" }
	for i, a := range burst(s, n, good) { // the credentials get proven
		if a.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
	}
	batchesBefore, tokensBefore := fv.batches.Load(), fv.tokens.Load()
	answers := burst(s, n, func(i int) string {
		if i%5 == 4 {
			return "wrong" // a password changed since: the plugin refuses it
		}
		return "pw"
	})
	for i, a := range answers {
		if i%5 == 4 {
			if a.status != http.StatusUnauthorized {
				t.Errorf("request %d (a wrong password): %d %s, want 401", i, a.status, a.body)
			}
			continue
		}
		if a.status != http.StatusOK {
			t.Errorf("request %d: %d %s", i, a.status, a.body)
			continue
		}
		var tok struct {
			Token string `json:"token"`
		}
		_ = json.Unmarshal([]byte(a.body), &tok)
		claims := jwtPayload(t, tok.Token)
		if want := fmt.Sprintf(`"sub":"user-%d"`, i); !strings.Contains(claims, want) ||
			!strings.Contains(claims, fmt.Sprintf(`"name":"team/app-%d"`, i)) {
			t.Errorf("request %d got another request's token: %s", i, claims)
		}
	}
	batches := fv.batches.Load() - batchesBefore
	tokens := fv.tokens.Load() - tokensBefore
	t.Logf("MEASURE batch requests=%d token_requests_at_vault=%d batch_calls=%d", n, tokens, batches)
	if tokens != n {
		t.Errorf("Vault saw %d token requests for %d", tokens, n)
	}
	if batches == 0 || int(batches)+batchCalls >= n {
		t.Errorf("%d batch calls for %d requests arriving together, want a few", batches, n)
	}
}

// A password that got no token lately is never batched: its check may
// count a lockout failure, so it must not ride in a call that is retried.
func TestBatch_unprovenPasswordsGoAlone(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.token = slowMint(fv, 20*time.Millisecond)
	s, _ := newTestRelay(t, fv.URL)
	for i, a := range burst(s, 30, func(int) string { return "pw" }) {
		if a.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
	}
	if n := fv.batches.Load(); n != 0 {
		t.Errorf("%d batch calls for passwords never seen to succeed, want 0", n)
	}
}

// A relay policy without <mount>/token/batch, or a plugin that predates
// it: every request still gets its token, one by one, and the relay says
// once what to change.
func TestBatch_pathRefusedRequestsGoAlone(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusNotFound} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			fv := newPluginVault(t, "registry")
			fv.token = slowMint(fv, 20*time.Millisecond)
			fv.batchStatus.Store(int32(status))
			s, logs := newTestRelay(t, fv.URL)
			good := func(int) string { return "pw" }
			burst(s, 30, good)
			for round := range 2 {
				for i, a := range burst(s, 30, good) {
					if a.status != http.StatusOK {
						t.Fatalf("round %d, request %d: %d %s", round, i, a.status, a.body)
					}
				}
			}
			if n := fv.batches.Load(); n != 1 {
				t.Errorf("%d batch calls, want 1: the mount's requests go alone after a refusal", n)
			}
			if n := strings.Count(logs.String(), "vault refused the token batch path"); n != 1 {
				t.Errorf("the refusal was logged %d times, want once:\n%s", n, logs)
			}
			// Where operators look: a gauge per mount and /healthz's body
			// (still 200: every token is served, one call each).
			if v := metricValue(t, s, `godoauth_relay_vault_batching{service="registry"}`); v != 0 {
				t.Errorf("the batching gauge is %v, want 0 while the mount's batch path is refused", v)
			}
			hw := httptest.NewRecorder()
			s.Handler().ServeHTTP(hw, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if hw.Code != http.StatusOK || !strings.Contains(hw.Body.String(), `"batching_off":{"registry":"vault refused registry/token/batch (`+fmt.Sprint(status)+`)`) {
				t.Errorf("/healthz: %d %s", hw.Code, hw.Body)
			}
		})
	}
}

// jwtPayload is the claims segment of a token, decoded.
func jwtPayload(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// storage.vault.batch: false sends every request in a call of its own.
func TestBatch_offSendsEachAlone(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.token = slowMint(fv, 20*time.Millisecond)
	off := false
	s, _ := newTestRelay(t, fv.URL, func(c *Config) { c.Storage.Vault.Batch = &off })
	good := func(int) string { return "pw" }
	burst(s, 30, good)
	for i, a := range burst(s, 30, good) {
		if a.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
	}
	if n := fv.batches.Load(); n != 0 {
		t.Errorf("%d batch calls with storage.vault.batch false, want 0", n)
	}
}

// FuzzReadBatchAnswer: whatever Vault answers to a batch of two, each
// request gets a token that passed checkMinted or a failure with a status
// the relay answers; never a panic.
func FuzzReadBatchAnswer(f *testing.F) {
	tok := fakeJWT(map[string]any{"sub": "alice"})
	f.Add(`{"data":{"answers":[{"status":200,"data":{"token":"` + tok + `","access_token":"` + tok +
		`","expires_in":300,"issued_at":"2026-01-02T03:04:05Z","sub":"alice","iss":"Token","access":[]}},` +
		`{"status":401,"data":{"code":"invalid_credentials","message":"invalid username or password"}}]}}`)
	f.Add(`{"data":{"answers":[{"status":500,"data":{"message":"internal error"}},{"status":429,"data":{"code":"busy","retry_after":1}}]}}`)
	f.Add(`{"data":{"answers":[]}}`)
	f.Add(`{"data":null}`)
	f.Add(`{"data":{"answers":[{"status":"x"},{"data":[1]}]}}`)
	v := &vault{log: NewLogger("error", &syncBuffer{}), metrics: newMetrics()}
	f.Fuzz(func(t *testing.T, body string) {
		var answer struct {
			Answers []batchAnswer `json:"answers"`
		}
		if err := readAnswer(strings.NewReader(body), maxBatchAnswerBytes, &vaultAnswer{Data: &answer}); err != nil || len(answer.Answers) != 2 {
			return
		}
		for i := range answer.Answers {
			r := v.readBatchAnswer("registry/token/batch", &answer.Answers[i])
			switch {
			case (r.t == nil) == (r.f == nil):
				t.Fatalf("answer %d: token %v and failure %v", i, r.t, r.f)
			case r.t != nil && (r.t.Token == "" || r.t.ExpiresIn <= 0):
				t.Fatalf("answer %d: unchecked token %+v", i, r.t)
			case r.f != nil && r.f.status != http.StatusBadRequest && r.f.status != http.StatusUnauthorized &&
				r.f.status != http.StatusTooManyRequests && r.f.status != http.StatusServiceUnavailable:
				t.Fatalf("answer %d: status %d", i, r.f.status)
			}
		}
	})
}

// Requests whose clients left while they waited for the next batch are
// not sent to Vault.
func TestBatch_requestsOfClientsGoneAreNotSent(t *testing.T) {
	fv := newPluginVault(t, "registry")
	release := make(chan struct{})
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		<-release
		fv.Answer(w, r)
	}
	s, _ := newTestRelay(t, fv.URL)
	b := s.vault.batcher("registry")
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range batchCalls { // the calls in flight, held by the stand-in
		wg.Go(func() { b.submit(t.Context(), &tokenRequest{Service: "registry"}) })
	}
	waitFor(t, func() bool { return fv.tokens.Load() == batchCalls })
	// Two clients wait for the next batch, then leave.
	var fs [2]*failure
	var gone sync.WaitGroup
	for i := range fs {
		gone.Go(func() { _, fs[i] = b.submit(ctx, &tokenRequest{Service: "registry"}) })
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) == 2 })
	cancel()
	gone.Wait() // the waiters gave up; the held calls still hold
	close(release)
	wg.Wait()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.calls == 0 })
	for i, f := range fs {
		if f != errCanceled {
			t.Errorf("gone client %d: %+v, want errCanceled", i, f)
		}
	}
	if n, calls := fv.tokens.Load(), fv.batches.Load(); n != batchCalls || calls != 0 {
		t.Errorf("Vault got %d token requests in %d batch calls, want %d and 0: the gone clients' were sent", n, calls, batchCalls)
	}
}

// holdTokens makes fv answer token requests only once the returned
// function is called.
func holdTokens(fv *pluginVault) (release func()) {
	hold := make(chan struct{})
	fv.mu.Lock()
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		<-hold
		fv.Answer(w, r)
	}
	fv.mu.Unlock()
	return func() { close(hold) }
}

// queued is the number of requests waiting for the mount's next batch.
func queued(s *Server) int {
	b := s.vault.batcher("registry")
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// waitQueued waits until n requests wait for the next batch.
func waitQueued(t *testing.T, s *Server, n int) {
	t.Helper()
	for i := 0; queued(s) < n; i++ {
		if i == 2000 {
			t.Fatalf("%d requests queued, want %d", queued(s), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A mount's batch queue is bounded: with both calls held by a slow Vault
// and maxBatchQueue requests waiting, the next request is answered 503
// with Retry-After at once, not queued until its deadline (issue 20,
// point 1).
func TestBatch_queueIsBounded(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.Timeout = Duration(20 * time.Second) })
	const bound = 128 // a smaller queue than maxBatchQueue, the same code
	s.vault.batchQueue = bound
	const n = batchCalls + bound + 1
	users := make([]string, n)
	for i := range users {
		users[i] = basic(fmt.Sprintf("user-%d", i), "pw")
		if w := get(s, "service=registry", users[i]); w.Code != http.StatusOK { // proven: batched from now on
			t.Fatalf("first token: %d %s", w.Code, w.Body)
		}
	}
	release := holdTokens(fv)
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for _, u := range users[:n-1] {
		wg.Go(func() { codes <- get(s, "service=registry", u).Code })
	}
	defer func() {
		release()
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != http.StatusOK {
				t.Errorf("a queued request got %d, want 200", c)
			}
		}
	}()
	waitQueued(t, s, bound)
	w := get(s, "service=registry", users[n-1]) // Vault still holds every call
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
		t.Errorf("request past a full batch queue: %d Retry-After %q %s, want 503 with Retry-After 1",
			w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := queued(s); n != bound {
		t.Errorf("%d requests queued, want %d", n, bound)
	}
}

// One credential holds at most maxProvenPerCredential places on the proven
// path, so its flood (a locked-out user's right password from many
// connections) leaves room in the batch queue for the others: their
// requests are queued and served, not refused as a full queue.
func TestBatch_oneCredentialCannotFillTheQueue(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.Timeout = Duration(4 * time.Second) })
	mallory, gina := basic("mallory", "pw"), basic("gina", "pw")
	for _, u := range []string{mallory, gina} {
		if w := get(s, "service=registry", u); w.Code != http.StatusOK {
			t.Fatalf("first token: %d %s", w.Code, w.Body)
		}
	}
	release := holdTokens(fv)
	defer fillUnproven(s)() // mallory's requests past its places wait, then 429
	var wg sync.WaitGroup
	for range 2*maxProvenPerCredential + batchCalls + 20 {
		wg.Go(func() { get(s, "service=registry", mallory) })
	}
	waitQueued(t, s, maxProvenPerCredential-batchCalls)
	time.Sleep(100 * time.Millisecond) // the rest of the flood arrives
	if n := queued(s); n > maxProvenPerCredential-batchCalls {
		t.Errorf("one credential has %d requests queued, want at most %d", n, maxProvenPerCredential-batchCalls)
	}
	ginaCode := make(chan int, 1)
	wg.Go(func() { ginaCode <- get(s, "service=registry", gina).Code })
	waitQueued(t, s, maxProvenPerCredential-batchCalls+1)
	release()
	if c := <-ginaCode; c != http.StatusOK {
		t.Errorf("another user during the flood: %d, want 200", c)
	}
	wg.Wait()
}
