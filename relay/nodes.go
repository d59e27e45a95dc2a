package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// A Vault cluster (integrated storage) has one active node; standbys
// forward requests to it. nodes is the relay's http.RoundTripper to such a
// cluster: it sends each call to the node believed active (then to a
// standby, which forwards), learns which node is active from sys/health,
// and when a node fails — no connection, sealed, or an election in
// progress — sends the call to another node, pausing between rounds, until
// one answers or the retry budget is spent.
//
// What counts as a failed node:
//   - no connection (refused, reset, timed out);
//   - 503: sealed, or a standby that knows no active node;
//   - 307 or 308: during an election a standby redirects to the dead
//     leader's address instead of forwarding;
//   - 500, 502, 504: a standby whose forward to the active node broke, or
//     an active node that lost leadership in the middle of the request.
//
// Retrying is safe because a token request consumes nothing: a retry mints
// another, independent token (new jti, same claims), and the plugin's
// refresh-token grant returns the same refresh token each time. The one
// piece of state a request can change is the user's lockout counter: a
// wrong password counts a failure. A call that failed before Vault could
// have run it (no connection was made, a 307 redirect, a 503 of a sealed
// node or of a standby with no leader) is always retried. A call that may
// have run on the active node before it died (the connection broke after
// the request was sent, a timeout, a 500/502/504) is retried only when the
// caller marked it safe (retrySafe): the mint of a password the relay saw
// succeed lately, of a refresh token, or anonymous. A password the relay
// has not seen succeed may be a wrong one, and its retry could count a
// second failure for one attempt: that call gets its failure (503) and the
// client decides whether to try again.
//
// One 429 is retried too: the plugin's busy refusal ("too many password
// checks in progress"), which it answers when its password checks stayed
// full for 2 s — typically right after an election, when every request
// that waited it out reaches bcrypt on the new leader at once with a cold
// credential cache. The plugin answers it before comparing the password
// and before counting anything, so a retry cannot count a failure, for
// any call. It is retried after a pause, within the same budget. A 429
// for a locked-out user is an answer and passes on untouched.
type nodes struct {
	list    []*node
	next    http.RoundTripper
	log     hclog.Logger
	attempt time.Duration // timeout of one call to one node (storage.vault.timeout)

	failovers prometheus.Counter

	active   atomic.Int64 // index of the node that answered sys/health 200; -1: unknown
	checkMu  sync.Mutex   // one health round at a time
	checking atomic.Bool
	checked  atomic.Int64 // unix nanoseconds of the last health round
}

// node is one Vault server of the cluster.
type node struct {
	addr      string // as configured, for /healthz and the log
	url       *url.URL
	state     atomic.Value // string: the last health answer, see nodeState
	downUntil atomic.Int64 // unix nanoseconds: tried last until then
}

const (
	// failoverRounds bounds the rounds over every node for one call; with
	// the pauses below they span about 15 s, more than an election takes
	// with Raft's default performance_multiplier (10-15 s measured).
	failoverRounds = 20
	// failoverPause is the first pause after a round in which every node
	// failed; it doubles up to failoverMaxPause.
	failoverPause    = 50 * time.Millisecond
	failoverMaxPause = time.Second
	// nodeDownFor is how long a failed node goes to the end of the line.
	nodeDownFor = 2 * time.Second
	// healthEvery is how often the calls refresh the nodes' states.
	healthEvery = 2 * time.Second
	// maxRetriedBody bounds a request body kept for a retry.
	maxRetriedBody = 1 << 20
)

// Node states, from sys/health's status code.
var nodeStates = map[int]string{
	200: "active",
	429: "standby",
	472: "dr_secondary",
	473: "performance_standby",
	474: "standby_no_active", // a standby that cannot reach the active node
	501: "not_initialized",
	503: "sealed",
	530: "removed",
}

// serving: a node in this state can answer a call (itself or forwarded).
func serving(state string) bool {
	return state == "active" || state == "standby" || state == "performance_standby"
}

func newNodes(addrs []string, next http.RoundTripper, attempt time.Duration, log hclog.Logger, m *metrics) (*nodes, error) {
	n := &nodes{next: next, log: log, attempt: attempt, failovers: m.failovers}
	n.active.Store(-1)
	for _, a := range addrs {
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("vault address %s: want a URL", quote(a))
		}
		nd := &node{addr: a, url: u}
		nd.state.Store("unknown")
		n.list = append(n.list, nd)
	}
	if len(n.list) == 0 {
		return nil, errors.New("no vault address")
	}
	return n, nil
}

// retrySafeKey marks a call whose retry cannot count a second failure.
type retrySafeKey struct{}

// retrySafe marks ctx's calls as safe to retry even when they may have
// run on a node that then failed.
func retrySafe(ctx context.Context, safe bool) context.Context {
	return context.WithValue(ctx, retrySafeKey{}, safe)
}

// isRetrySafe: a read, or a call its caller marked safe (retrySafe).
func isRetrySafe(req *http.Request) bool {
	if s, ok := req.Context().Value(retrySafeKey{}).(bool); ok {
		return s
	}
	return req.Method == http.MethodGet || req.Method == http.MethodHead
}

// outcome of one attempt on one node.
type attemptResult int

const (
	answered     attemptResult = iota // a real answer: pass it on
	notRun                            // the node failed before Vault could run the call
	maybeRun                          // the node failed after the call may have run
	callerGaveUp                      // the caller's context ended
	busy                              // the plugin refused before checking anything: pause, then again
)

// maxBusyBody bounds what is read of a 429 to tell the plugin's busy
// refusal (tokenapi.CodeBusy) from a lockout.
const maxBusyBody = 4 << 10

// RoundTrip implements http.RoundTripper.
func (n *nodes) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(n.list) == 1 {
		return n.next.RoundTrip(req)
	}
	n.refreshSoon()
	body, err := readRequestBody(req)
	if err != nil {
		return nil, err
	}
	safe := isRetrySafe(req)

	var (
		resp     *http.Response
		pause    = failoverPause
		previous *node
	)
	for round := 0; round < failoverRounds; round++ {
	nodes:
		for _, nd := range n.order() {
			if previous != nil && previous != nd {
				n.failovers.Inc()
			}
			previous = nd
			if resp != nil {
				drain(resp)
			}
			var result attemptResult
			resp, err, result = n.try(req, nd, body)
			switch result {
			case answered, callerGaveUp:
				return resp, err
			case maybeRun:
				if !safe {
					return resp, err
				}
			case busy:
				break nodes // the other nodes forward to the same busy one
			}
		}
		select {
		case <-req.Context().Done():
			if resp != nil {
				drain(resp)
			}
			return nil, req.Context().Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, failoverMaxPause)
	}
	return resp, err
}

// try sends the call to one node and classifies what happened.
func (n *nodes) try(req *http.Request, nd *node, body []byte) (*http.Response, error, attemptResult) {
	ctx, cancel := context.WithTimeout(req.Context(), n.attempt)
	r := withBody(req.Clone(ctx), body)
	r.URL.Scheme, r.URL.Host, r.Host = nd.url.Scheme, nd.url.Host, ""
	resp, err := n.next.RoundTrip(r)
	if err != nil {
		cancel()
		if req.Context().Err() != nil {
			return nil, err, callerGaveUp
		}
		n.failed(nd, err.Error())
		if neverSent(err) {
			return nil, err, notRun
		}
		return nil, err, maybeRun
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	switch resp.StatusCode {
	case http.StatusServiceUnavailable, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		n.failed(nd, fmt.Sprintf("answered %d", resp.StatusCode))
		return resp, nil, notRun
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
		n.failed(nd, fmt.Sprintf("answered %d", resp.StatusCode))
		return resp, nil, maybeRun
	}
	nd.downUntil.Store(0)
	if resp.StatusCode == http.StatusTooManyRequests && pluginBusyAnswer(resp) {
		return resp, nil, busy
	}
	return resp, nil, answered
}

// pluginBusyAnswer reports whether a 429 is the plugin's busy refusal, by
// the refusal's code (tokenapi), never its words. It reads the start of
// the body and puts it back.
func pluginBusyAnswer(resp *http.Response) bool {
	var answer struct {
		Data tokenapi.Refusal `json:"data"`
	}
	return json.Unmarshal(peekBody(resp, maxBusyBody), &answer) == nil && answer.Data.Code == tokenapi.CodeBusy
}

// neverSent reports whether err happened before the request left: the
// connection could not be made.
func neverSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// failed puts a node at the end of the line for a while and asks for a
// new look at the cluster.
func (n *nodes) failed(nd *node, why string) {
	nd.downUntil.Store(time.Now().Add(nodeDownFor).UnixNano())
	for i, x := range n.list {
		if x == nd {
			n.active.CompareAndSwap(int64(i), -1)
		}
	}
	if n.log.IsDebug() {
		n.log.Debug("vault node failed; trying another", "address", nd.addr, "why", why)
	}
	n.checked.Store(0)
	n.refreshSoon()
}

// order is the line for one round: the active node, the serving standbys
// (they forward), nodes of unknown state, then nodes that failed lately.
func (n *nodes) order() []*node {
	now := time.Now().UnixNano()
	active := n.active.Load()
	rank := func(i int) int {
		nd := n.list[i]
		switch {
		case now < nd.downUntil.Load():
			return 4
		case int64(i) == active:
			return 0
		case serving(nd.state.Load().(string)):
			return 1
		case nd.state.Load().(string) == "unknown":
			return 2
		default:
			return 3
		}
	}
	idx := make([]int, len(n.list))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return rank(idx[a]) < rank(idx[b]) })
	out := make([]*node, len(idx))
	for i, j := range idx {
		out[i] = n.list[j]
	}
	return out
}

// refreshSoon starts a health round in the background when the last one
// is older than healthEvery.
func (n *nodes) refreshSoon() {
	if time.Now().UnixNano()-n.checked.Load() < int64(healthEvery) {
		return
	}
	if !n.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer n.checking.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), min(n.attempt, 2*time.Second))
		defer cancel()
		n.refresh(ctx)
	}()
}

// refresh asks every node's sys/health at once and records the answers.
func (n *nodes) refresh(ctx context.Context) {
	n.checkMu.Lock()
	defer n.checkMu.Unlock()
	var wg sync.WaitGroup
	for i, nd := range n.list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state := n.health(ctx, nd)
			old, _ := nd.state.Swap(state).(string)
			if state == "active" {
				n.active.Store(int64(i))
			} else {
				n.active.CompareAndSwap(int64(i), -1)
			}
			if old != state && old != "unknown" {
				n.log.Info("vault node changed state", "address", nd.addr, "from", old, "to", state)
			}
		}()
	}
	wg.Wait()
	n.checked.Store(time.Now().UnixNano())
}

func (n *nodes) health(ctx context.Context, nd *node) string {
	u := *nd.url
	u.Path = "/v1/sys/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "unreachable"
	}
	resp, err := n.next.RoundTrip(req)
	if err != nil {
		return "unreachable"
	}
	drain(resp)
	if s, ok := nodeStates[resp.StatusCode]; ok {
		return s
	}
	return fmt.Sprintf("status_%d", resp.StatusCode)
}

// report checks every node now and returns each one's state, for /healthz,
// and whether one of them can serve.
func (n *nodes) report(ctx context.Context) (map[string]string, bool) {
	n.refresh(ctx)
	states := map[string]string{}
	ok := false
	for _, nd := range n.list {
		s := nd.state.Load().(string)
		states[nd.addr] = s
		ok = ok || serving(s)
	}
	return states, ok
}

// drain reads what is left of an answer (bounded) and closes it, so its
// connection can be used again.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// cancelOnClose ends an attempt's context when its answer is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// markDown refuses every Vault call for a moment after one got no answer
// (admission). Not with a cluster: nodes already keeps each failed node
// aside and rides out an election within each request's deadline, and a
// request that ran out its own deadline there — queued behind an election
// or the plugin's busy checks — says nothing of the calls that follow;
// refusing them would turn one late answer into a second of 503s.
func (v *vault) markDown() {
	if len(v.nodes.list) == 1 {
		v.admission.markDown()
	}
}

// readRequestBody reads a request's body (bounded) so that the request can
// be sent again; nil when it has none.
func readRequestBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, maxRetriedBody+1))
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(b) > maxRetriedBody {
		return nil, errors.New("request body too large to retry")
	}
	return b, nil
}

// withBody gives req (or its clone) a fresh reader of body, when it has one.
func withBody(req *http.Request, body []byte) *http.Request {
	if body == nil {
		return req
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	return r
}
