package relay

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// pluginRelaunch is the transport to a single Vault address. When the
// plugin's process dies (killed, crashed, out of memory), Vault starts a
// new one, but only once it has noticed: until then, measured from under
// a second to 4.5 s on a busy machine, every call fails at once with a 500
// — the gRPC error of the dead connection ("rpc error: code =
// Unavailable") when the plugin's handler was called, or Vault's redacted
// "internal error" when its existence check was (Vault's
// request_handling.go turns every failed existence check into that). Such
// an answer is tried again, pausing 50 ms doubling to 1 s, for at most
// pluginRelaunchBudget (and the request's own deadline), for a call that
// is safe to retry (retrySafe, as nodes retries a cluster's calls; a
// token request consumes nothing): the client sees a delay, not an error.
// A call that is not safe to retry (a password the relay has not seen
// succeed: the dead process may have counted its failure) gets its 503, as
// any other 500 does.
//
// The new process knows no password yet: at a hundred requests a second
// its first bcrypt checks queue, and past 2 s it refuses the rest as busy
// (429, tokenapi.CodeBusy) before checking or counting anything. That
// refusal is tried again too, for any call, within the same budget, as
// nodes does for a cluster, while the request's deadline leaves time for
// an answer (busyRetryNeeds).
type pluginRelaunch struct {
	next     http.RoundTripper
	log      hclog.Logger
	warnings throttle // one warning every few seconds
}

// maxErrorBody bounds what is read of a 500 to tell a dead plugin's answer.
const maxErrorBody = 4 << 10

// pluginRelaunchBudget bounds the retries of one call; a 500 that is not a
// dead plugin's (a full disk answers "internal error" too) waits no longer.
var pluginRelaunchBudget = 5 * time.Second

// busyRetryNeeds is the time a retry of a busy refusal needs to end in
// an answer: the plugin's own wait for a password check (2 s) and a
// margin. With less left, the refusal goes to the client (429,
// Retry-After), never a 503 at the deadline.
const busyRetryNeeds = 3 * time.Second

// retryMargin is the time a retry needs at least, to be worth sending.
const retryMargin = 500 * time.Millisecond

// RoundTrip implements http.RoundTripper.
func (p *pluginRelaunch) RoundTrip(req *http.Request) (*http.Response, error) {
	safe := isRetrySafe(req)
	body, err := readRequestBody(req)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for pause := failoverPause; ; pause = min(2*pause, failoverMaxPause) {
		resp, err := p.next.RoundTrip(withBody(req, body))
		// The last answer goes back before the call's deadline (its own
		// timeout, storage.vault.timeout), so that a plugin still gone is a
		// 503 of its own, not a timeout that marks Vault down.
		if err != nil || time.Since(start)+pause > pluginRelaunchBudget || timeLeft(req.Context()) < pause+retryMargin {
			return resp, err
		}
		var why string
		switch {
		case resp.StatusCode == http.StatusInternalServerError && safe && deadPluginAnswer(resp):
			why = "the plugin's process is gone (vault relaunches it)"
		case resp.StatusCode == http.StatusTooManyRequests && timeLeft(req.Context()) > busyRetryNeeds && pluginBusyAnswer(resp):
			why = "the plugin is busy with password checks (a new process checks every password once)"
		default:
			return resp, nil
		}
		drain(resp)
		if ok, held := p.warnings.allow(time.Now()); ok {
			p.log.Warn(why+": the call is tried again", "path", req.URL.Path, "similar_not_logged", held)
		}
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(pause):
		}
	}
}

// CloseIdleConnections closes the idle connections of the transport under it.
func (p *pluginRelaunch) CloseIdleConnections() {
	if c, ok := p.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// deadPluginAnswer reports whether a 500 is Vault's answer for a plugin
// whose process is gone: an error that is the gRPC status Unavailable of
// the dead connection, or Vault's redacted "internal error" alone. It
// reads the start of the body and puts it back.
func deadPluginAnswer(resp *http.Response) bool {
	var answer struct {
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(peekBody(resp, maxErrorBody), &answer) != nil {
		return false
	}
	var errs []string
	for _, e := range answer.Errors {
		errs = append(errs, vaultErrorList(e)...)
	}
	if len(errs) == 1 && errs[0] == "internal error" {
		return true
	}
	for _, e := range errs {
		if strings.Contains(e, "rpc error: code = Unavailable") {
			return true
		}
	}
	return false
}

// peekBody reads up to n bytes of an answer and puts them back in front
// of the rest; nil when reading fails.
func peekBody(resp *http.Response, n int64) []byte {
	head, err := io.ReadAll(io.LimitReader(resp.Body, n))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil {
		return nil
	}
	return head
}
