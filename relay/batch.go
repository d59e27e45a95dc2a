package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Batching: a token request that arrives while a mount's calls are all in
// flight waits for the next one, and the requests that waited go together
// to the plugin's token/batch path (tokenapi.PathTokenBatch). Alone, a
// request goes at once on its single path, as it always did; under load,
// one Vault request, one lookup of the relay's token and one round trip to
// the plugin serve many tokens. The plugin checks and mints each request as
// its single path would, so nothing of the lockout, the credential cache
// or revocation changes; only requests safe to retry are batched (a
// password that got no token lately goes alone, vault.askPlugin).
const (
	// batchCalls bounds one mount's token calls in flight; a request
	// arriving when they are all taken waits for the next batch. Measured
	// with 1 to 4 on two cores, 8 and 64 connections: 2 served the most
	// tokens (fewer leave Vault idle between calls, more make batches
	// small).
	batchCalls = 2
	// batchOffFor is how long a mount's requests go alone after Vault
	// refused its batch path: a relay policy without <mount>/token/batch,
	// or a plugin older than the relay. Then the path is tried again.
	batchOffFor = 5 * time.Minute
	// maxBatchAnswerBytes bounds the answer to one batch.
	maxBatchAnswerBytes = tokenapi.MaxBatch * maxAnswerBytes
	// maxBatchQueue bounds the requests waiting for a mount's next batch.
	// Past it a request gets 503 with Retry-After at once, so a flood holds
	// no more than this (a few hundred bytes each, besides the connection
	// it holds anyway). It is sized for a Vault leader election under a CI
	// burst: 300 requests/s for the 13 s an election took on a busy
	// machine (shared/VAULT-RAFT.md) wait here and are served, as
	// TestHA_threeNodeCluster requires. One credential holds at most
	// maxProvenPerCredential of it (credentials.go).
	maxBatchQueue = 128 * tokenapi.MaxBatch
)

// errBatchQueueFull answers a request that found its mount's batch queue full.
var errBatchQueueFull = &failure{
	status:     http.StatusServiceUnavailable,
	oauthCode:  "temporarily_unavailable",
	msg:        "too many token requests in progress; retry after 1s",
	retryAfter: 1,
}

// batcher collects one mount's token requests.
type batcher struct {
	v       *vault
	service string

	mu    sync.Mutex
	queue []*batchEntry
	calls int // in flight, at most batchCalls

	offUntil atomic.Int64 // unix nanoseconds: requests go alone until then
	// offWhy is why batching is off: Vault's refusal of the batch path.
	offWhy atomic.Pointer[string]
}

type batchEntry struct {
	ctx  context.Context
	req  *tokenRequest
	done chan batchResult // buffered: the sender never waits for a reader
	// fallback, when set, serves the request on its own instead of the
	// token path (a Vault identity's request, made with its session in a
	// batch: identitysession.go); refused says the batch refused its
	// session (401).
	fallback func(ctx context.Context, refused bool) (*mintedToken, *failure)
}

// alone serves e on its own: its fallback, else the single token path.
func (b *batcher) alone(e *batchEntry) batchResult {
	if e.fallback != nil {
		t, f := e.fallback(e.ctx, false)
		return batchResult{t, f}
	}
	t, f := b.v.askSingle(e.ctx, e.req, false)
	return batchResult{t, f}
}

type batchResult struct {
	t *mintedToken
	f *failure
}

// batcher returns the mount's batcher.
func (v *vault) batcher(service string) *batcher {
	if b, ok := v.batchers.Load(service); ok {
		return b.(*batcher)
	}
	b, loaded := v.batchers.LoadOrStore(service, &batcher{v: v, service: service})
	if !loaded && v.batch {
		v.metrics.batching.WithLabelValues(service).Set(1)
	}
	return b.(*batcher)
}

// batchingOff lists the mounts whose batch path Vault refused lately, with
// the reason, for /healthz: a relay whose policy predates token/batch
// serves every token, but at about a third of the rate.
func (v *vault) batchingOff() map[string]string {
	out := map[string]string{}
	now := time.Now().UnixNano()
	v.batchers.Range(func(_, value any) bool {
		b := value.(*batcher)
		if why := b.offWhy.Load(); why != nil && now < b.offUntil.Load() {
			out[b.service] = *why
		}
		return true
	})
	return out
}

// submit gets a token for req: at once on the single path when a call is
// free and nobody waits, else in the next batch.
func (b *batcher) submit(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
	return b.submitEntry(&batchEntry{ctx: ctx, req: req, done: make(chan batchResult, 1)})
}

// submitEntry is submit for an entry that may have a fallback.
func (b *batcher) submitEntry(e *batchEntry) (*mintedToken, *failure) {
	ctx := e.ctx
	if time.Now().UnixNano() < b.offUntil.Load() {
		r := b.alone(e)
		return r.t, r.f
	}
	b.mu.Lock()
	if len(b.queue) == 0 && b.calls < batchCalls {
		b.calls++
		b.mu.Unlock()
		r := b.alone(e)
		b.callDone()
		return r.t, r.f
	}
	if len(b.queue) >= b.v.batchQueue {
		b.mu.Unlock()
		b.v.metrics.vaultErrors.WithLabelValues("busy").Inc()
		t, _ := b.v.logThrottles.LoadOrStore("batch_queue", &throttle{interval: 10 * time.Second})
		if ok, held := t.(*throttle).allow(time.Now()); ok {
			b.v.log.Warn("a mount's batch queue is full; answered 503 with Retry-After",
				"service", b.service, "queued", b.v.batchQueue, "similar_warnings_not_logged", held)
		}
		return nil, errBatchQueueFull
	}
	b.queue = append(b.queue, e)
	if b.calls < batchCalls {
		b.calls++
		go b.run()
	}
	b.mu.Unlock()
	select {
	case r := <-e.done:
		return r.t, r.f
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, errCanceled
		}
		// The batch's own call marks Vault down if it times out.
		return nil, b.v.unavailable("timeout", "vault did not answer in time", "address", b.v.addr,
			"path", b.service+"/"+tokenapi.PathTokenBatch, "timeout", b.v.timeout)
	}
}

// callDone ends a call: its slot goes on with the requests that waited.
func (b *batcher) callDone() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) > 0 {
		go b.run() // keeps the slot
		return
	}
	b.calls--
}

// run sends what waits, up to tokenapi.MaxBatch requests, in one call.
func (b *batcher) run() {
	b.mu.Lock()
	n := min(len(b.queue), tokenapi.MaxBatch)
	entries := make([]*batchEntry, n)
	copy(entries, b.queue)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	b.mu.Unlock()
	// A request whose client left while it waited is not sent: its token
	// (and any refresh token) would be made for nobody.
	entries = slices.DeleteFunc(entries, func(e *batchEntry) bool { return e.ctx.Err() != nil })
	switch len(entries) {
	case 0:
	case 1:
		e := entries[0]
		e.done <- b.alone(e)
	default:
		b.send(entries)
	}
	b.callDone()
}

// send makes one token/batch call for entries and gives each its answer.
func (b *batcher) send(entries []*batchEntry) {
	v := b.v
	ctx, cancel := context.WithDeadline(context.Background(), latestDeadline(entries, v.timeout))
	defer cancel()
	requests := make([]map[string]any, len(entries))
	for i, e := range entries {
		requests[i] = e.req.vaultBody(v.ttl)
	}
	path := b.service + "/" + tokenapi.PathTokenBatch
	var answers struct {
		Answers []batchAnswer `json:"answers"`
	}
	answer := vaultAnswer{Data: &answers}
	pathRefused := 0 // Vault's status, when it refused the batch path itself
	f := v.call(ctx, &vaultCall{
		path:      path,
		body:      map[string]any{tokenapi.FieldRequests: requests},
		retrySafe: true, // only requests safe to retry are batched (askPlugin)
		limit:     maxBatchAnswerBytes,
		req:       entries[0].req,
		sent: func() {
			v.metrics.batches.Inc()
			v.metrics.batched.Add(float64(len(entries)))
		},
		refused: func(err error, resp *api.Response) *failure {
			// The batch path missing for the relay (its policy, an older
			// plugin) is no answer to the requests: each goes on its own
			// path, whose answer says what is wrong.
			if status := statusCode(err); batchRefused(status) {
				pathRefused = status
				return errUnavailable // never given: the requests go separately
			}
			return v.refusal(ctx, err, resp, entries[0].req, false)
		},
	}, &answer)
	if pathRefused != 0 {
		b.sendSeparately(pathRefused, entries)
		return
	}
	if f == nil && len(answers.Answers) != len(entries) {
		f = v.malformed(path, fmt.Errorf("%d answers to %d requests", len(answers.Answers), len(entries)))
	}
	if f != nil {
		for _, e := range entries {
			e.done <- batchResult{f: f}
		}
		return
	}
	if b.offWhy.Swap(nil) != nil { // Vault takes the batch path again
		v.metrics.batching.WithLabelValues(b.service).Set(1)
	}
	for i, e := range entries {
		r := v.readBatchAnswer(path, &answers.Answers[i])
		if e.fallback != nil && r.f != nil && r.f.status == http.StatusUnauthorized {
			// A session revoked or expired: the request goes on its own,
			// whose answer says whether its Vault token still holds.
			go func() {
				t, f := e.fallback(e.ctx, true)
				e.done <- batchResult{t, f}
			}()
			continue
		}
		if r.t != nil {
			r.t.RequestID = answer.RequestID
		}
		e.done <- r
	}
}

// batchAnswer is one answer of a batch (tokenapi.BatchAnswer): a token
// for 200, else a refusal; the two share no field.
type batchAnswer struct {
	Status int `json:"status"`
	Data   struct {
		tokenapi.Answer
		tokenapi.Refusal
	} `json:"data"`
}

// readBatchAnswer reads one answer of a batch as askSingle reads the single
// path's.
func (v *vault) readBatchAnswer(path string, a *batchAnswer) batchResult {
	switch {
	case a.Status == http.StatusOK:
		t, err := checkMinted(&a.Data.Answer)
		if err != nil {
			return batchResult{f: v.malformed(path, err)}
		}
		return batchResult{t: t}
	case a.Status >= 500:
		return batchResult{f: v.unavailable("server_error", "the plugin failed a token request of a batch", "path", path, "status", a.Status)}
	}
	return batchResult{f: refused(a.Data.Refusal, a.Status)}
}

// batchRefused reports whether Vault's status for a batch call says the
// path is not there for the relay: its policy lacks it (403), or the
// plugin predates it (404, 405). Then each request goes alone, and its own
// answer says whether the mount or the token is at fault.
func batchRefused(status int) bool {
	return status == http.StatusForbidden || status == http.StatusNotFound || status == http.StatusMethodNotAllowed
}

// sendSeparately sends each entry in a call of its own on its single
// path, after the batch path was refused, and stops batching for the
// mount a while.
func (b *batcher) sendSeparately(status int, entries []*batchEntry) {
	why := fmt.Sprintf("vault refused %s/%s (%d): each token request costs its own call; give the relay's policy "+
		"update on <mount>/token/batch, and upgrade the plugin", b.service, tokenapi.PathTokenBatch, status)
	b.offWhy.Store(&why)
	b.v.metrics.batching.WithLabelValues(b.service).Set(0)
	if b.offUntil.Swap(time.Now().Add(batchOffFor).UnixNano()) < time.Now().UnixNano() {
		b.v.log.Warn("vault refused the token batch path; the mount's token requests go one by one for a while "+
			"(give the relay's policy update on <mount>/token/batch, and upgrade the plugin, to batch them)",
			"service", b.service, "path", b.service+"/"+tokenapi.PathTokenBatch, "status", status, "retry_in", batchOffFor)
	}
	var wg sync.WaitGroup
	for _, e := range entries {
		wg.Go(func() { e.done <- b.alone(e) })
	}
	wg.Wait()
}

// latestDeadline is the latest of the entries' deadlines: the batch's call
// serves them all. An entry without one counts as timeout from now.
func latestDeadline(entries []*batchEntry, timeout time.Duration) time.Time {
	var latest time.Time
	for _, e := range entries {
		d, ok := e.ctx.Deadline()
		if !ok {
			d = time.Now().Add(timeout)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest
}
