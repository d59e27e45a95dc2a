package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

const (
	// maxProbeBytes bounds the PEM bundle read from <service>/ca/pem.
	maxProbeBytes = 64 << 10
	// pemContentType is what the plugin's ca/pem answers with (Vault's own
	// PKI engine answers application/pem-file, so its mounts don't pass).
	pemContentType = "application/x-pem-file"
)

// vault makes the relay's calls to Vault: the mount probe, the token
// requests, the health check. It forwards token requests to the plugin
// mounts, and nowhere else.
type vault struct {
	client      *api.Client
	http        *http.Client // the client's connections, for the token-less probe
	probeBase   string       // <address>/v1/
	probeHeader http.Header
	addr        string
	timeout     time.Duration
	ttl         int64 // token.expiration, sent as ttl
	log         hclog.Logger
	metrics     *metrics

	nodes       *nodes // the cluster's nodes (relay/nodes.go)
	admission   *admission
	credentials *provenCredentials
	sessions    *identitySessions // Vault identities' sessions (identitysession.go)
	mounts      *mountCache
	issuer      *issuerCheck
	batch       bool     // storage.vault.batch
	batchQueue  int      // maxBatchQueue; tests lower it
	batchers    sync.Map // service → *batcher (batch.go)

	loud sync.Map // trouble kind → *throttle

	// tokenRefused is told when Vault refuses a call because the relay's
	// own token is invalid or expired (the token keeper looks it up again).
	tokenRefused func()
}

func newVault(cfg *Config, log hclog.Logger, m *metrics) (*vault, error) {
	var httpClient *http.Client
	var nodes *nodes
	client, err := NewVaultClient(cfg, func(vc *api.Config) error {
		vc.Timeout = time.Duration(cfg.Storage.Vault.Timeout)
		// An outage answers 503 now, not after backoffs. Never retrying also
		// keeps retryablehttp from dropping every idle connection after an
		// answer it would have retried (a 429 for a locked-out user, a 5xx).
		vc.MaxRetries = 0
		vc.CheckRetry = func(context.Context, *http.Response, error) (bool, error) { return false, nil }
		transport, ok := vc.HttpClient.Transport.(*http.Transport)
		if !ok {
			return fmt.Errorf("unexpected transport %T", vc.HttpClient.Transport)
		}
		idle := max(cfg.Storage.Vault.Pool, maxVaultCalls)
		transport.MaxIdleConns = idle
		transport.MaxIdleConnsPerHost = idle
		transport.IdleConnTimeout = 90 * time.Second
		var err error
		if nodes, err = newNodes(cfg.VaultAddresses(), transport, vc.Timeout, log, m); err != nil {
			return err
		}
		if len(nodes.list) > 1 {
			// nodes times each attempt; the request's deadline bounds the retries.
			vc.Timeout, vc.HttpClient.Timeout = 0, 0
			vc.HttpClient.Transport = nodes
		} else {
			vc.HttpClient.Transport = &pluginRelaunch{next: transport, log: log, loud: throttle{interval: 10 * time.Second}}
		}
		vc.HttpClient.Transport = timedTransport{next: vc.HttpClient.Transport, calls: m.vaultCalls}
		httpClient = vc.HttpClient
		return nil
	})
	if err != nil {
		return nil, err
	}
	header := client.Headers()
	header.Del(api.AuthHeaderName) // the probe goes without a token
	addr := cfg.VaultAddress()
	timeout := time.Duration(cfg.Storage.Vault.Timeout)
	adm, creds := newAdmission(), newProvenCredentials()
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "godoauth_relay_vault_calls_in_flight",
			Help: fmt.Sprintf("Vault calls in flight (at most %d).", maxVaultCalls),
		}, func() float64 { return float64(len(adm.slots)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "godoauth_relay_vault_unproven_calls_in_flight",
			Help: fmt.Sprintf("Requests in flight for a password or Vault token that got no token lately (at most %d).", maxUnprovenCalls),
		}, func() float64 { return float64(len(creds.unproven)) }),
	)
	return &vault{
		client:      client,
		nodes:       nodes,
		http:        httpClient,
		probeBase:   strings.TrimRight(cfg.VaultAddresses()[0], "/") + "/v1/",
		probeHeader: header,
		addr:        addr,
		timeout:     timeout,
		ttl:         cfg.Token.Expiration,
		log:         log,
		metrics:     m,
		admission:   adm,
		credentials: creds,
		sessions:    newIdentitySessions(),
		mounts:      newMountCache(cfg.probeTimeout()),
		issuer:      &issuerCheck{want: cfg.Token.Issuer, log: log},
		batch:       cfg.Storage.Vault.Batch == nil || *cfg.Storage.Vault.Batch,
		batchQueue:  maxBatchQueue,
	}, nil
}

// enter takes a slot for one Vault call (see admission).
func (v *vault) enter(ctx context.Context) (release func(), f *failure) {
	release, err := v.admission.enter(ctx)
	switch {
	case errors.Is(err, errVaultDown):
		return nil, errUnavailable
	case err != nil:
		return nil, v.trouble("busy", err.Error(), "slots", maxVaultCalls)
	}
	return release, nil
}

// checkMount makes sure service names a mount of this plugin.
func (v *vault) checkMount(ctx context.Context, service string) *failure {
	return v.mounts.check(ctx, service, v.probe)
}

// probe reads <service>/ca/pem without a token: a plugin mount answers a
// PEM bundle.
func (v *vault) probe(ctx context.Context, service string) (bool, *failure) {
	release, f := v.enter(ctx)
	if f != nil {
		return false, f
	}
	defer release()
	path := service + "/" + tokenapi.PathCAPEM
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.probeBase+path, nil)
	if err != nil {
		return false, unknownService(service)
	}
	for k, vs := range v.probeHeader {
		req.Header[k] = vs
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return false, v.transportTrouble(ctx, err, path, false)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBytes))
	if err != nil {
		return false, v.transportTrouble(ctx, err, path, false)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBytes)) // so the connection is reused
	switch {
	case resp.StatusCode == http.StatusOK:
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		exists := ct == pemContentType && strings.HasPrefix(strings.TrimSpace(string(body)), "-----BEGIN ")
		if !exists && v.log.IsDebug() {
			v.log.Debug("mount is not a registry plugin mount", "service", service, "content_type", ct)
		}
		return exists, nil
	case resp.StatusCode == http.StatusServiceUnavailable:
		return false, v.trouble("sealed", "vault is sealed or unavailable (503)", "path", path)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return false, v.trouble("server_error", "vault answered an error", "path", path,
			"status", resp.StatusCode)
	default:
		if v.log.IsDebug() {
			v.log.Debug("no registry plugin mount", "service", service, "status", resp.StatusCode)
		}
		return false, nil
	}
}

// mint gets a token from the plugin. A password that got no token lately
// waits for a place among maxUnprovenCalls first and goes alone; every
// other request may go in a batch with others for the same mount
// (batch.go): it is safe to retry, so a batch of them is too.
func (v *vault) mint(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
	id, password := v.credentials.id(req)
	var t *mintedToken
	var f *failure
	unproven := password && !v.credentials.proven(id)
	if password && !unproven {
		// Past maxProvenPerCredential requests on the proven path, one
		// credential's burst goes as unproven.
		leave, ok := v.credentials.enterProven(id)
		if ok {
			defer leave()
		}
		unproven = !ok
	}
	switch {
	case unproven:
		leave, lf := v.enterUnproven(ctx)
		if lf != nil {
			return nil, lf
		}
		t, f = v.mintOne(ctx, req, true)
		leave()
	case v.batch:
		t, f = v.batcher(req.Service).submit(ctx, req)
	default:
		t, f = v.mintOne(ctx, req, false)
	}
	if f == nil {
		v.issuer.check(req.Service, t.Issuer)
	}
	if password {
		v.credentials.settle(id, f)
	}
	return t, f
}

// mintOne sends one token request to the plugin's single path. unproven
// says it checks a password that got no token lately: it is not retried on
// another node, and its timeout may be the plugin's queue of checks.
func (v *vault) mintOne(ctx context.Context, req *tokenRequest, unproven bool) (*mintedToken, *failure) {
	release, f := v.enter(ctx)
	if f != nil {
		return nil, f
	}
	defer release()
	ctx = retrySafe(ctx, !unproven) // a retry of an unproven password could count two failures
	path := req.vaultPath()
	body, err := json.Marshal(req.vaultBody(v.ttl))
	if err != nil {
		return nil, badRequest("cannot encode the request") // strings and numbers only: never happens
	}
	r := v.client.NewRequest(http.MethodPut, "/v1/"+path)
	r.BodyBytes = body
	// Not Logical().WriteRaw: it cancels its context when it returns, so the
	// body of the answer (the token, or the refusal's code) could no longer
	// be read. RawRequestWithContext leaves the context to the caller.
	resp, err := v.client.RawRequestWithContext(ctx, r) //nolint:staticcheck // deprecated for historical reasons only
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return nil, v.refusal(ctx, err, resp, req, unproven)
	}
	var a tokenapi.Answer
	requestID, err := readAnswer(resp.Body, maxAnswerBytes, &a)
	if err != nil {
		if ctx.Err() != nil {
			return nil, v.transportTrouble(ctx, err, path, unproven)
		}
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	t, err := checkMinted(&a)
	if err != nil {
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	t.RequestID = requestID
	return t, nil
}

// refusal turns Vault's refusal of a token request into the client's. The
// plugin's refusals carry a code (tokenapi.Refusal), which alone decides
// the answer; Vault's own refusals (no such mount, a denied token, sealed)
// have only their status. unproven says the request checks a credential
// that got no token lately (transportTrouble).
func (v *vault) refusal(ctx context.Context, err error, resp *api.Response, req *tokenRequest, unproven bool) *failure {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return v.transportTrouble(ctx, err, req.vaultPath(), unproven)
	}
	if resp != nil {
		if r, ok := readRefusal(resp.Body); ok {
			return refused(r, re.StatusCode)
		}
	}
	msg := pluginMessage(strings.Join(re.Errors, "; "))
	path := req.vaultPath()
	switch code := re.StatusCode; {
	case code == http.StatusBadRequest:
		return badRequest("%s", msg)
	case code == http.StatusUnauthorized:
		return unauthorized(msg)
	case code == http.StatusForbidden && isInvalidToken(err):
		if v.tokenRefused != nil {
			v.tokenRefused()
		}
		return v.trouble("forbidden", "vault refused the relay's token (403): token invalid or expired",
			"path", path)
	case code == http.StatusForbidden:
		return v.trouble("forbidden", fmt.Sprintf("vault refused the relay's token (403): check its policy allows "+
			"update on %[1]s/token, %[1]s/token/refresh and %[1]s/token/batch, and that the token has not expired", req.Service),
			"path", path)
	case code == http.StatusNotFound:
		v.mounts.forget(req.Service)
		return unknownService(req.Service)
	case code == http.StatusTooManyRequests:
		// Vault's own rate limit quota, which says when in Retry-After.
		var secs int64
		if resp != nil {
			secs, _ = strconv.ParseInt(resp.Header.Get("Retry-After"), 10, 64)
		}
		return lockedOut("too many requests", retryAfter(secs))
	case code == http.StatusServiceUnavailable:
		return v.trouble("sealed", "vault is sealed or unavailable (503)", "path", path, "error", msg)
	case code >= 500:
		return v.trouble("server_error", "vault answered an error", "path", path, "status", code, "error", msg)
	default:
		return v.trouble("unexpected", "vault answered an unexpected status", "path", path, "status", code, "error", msg)
	}
}

// transportTrouble handles a call that got no answer: a timeout or an
// unreachable Vault marks Vault down for a moment. Not the timeout of an
// unproven request (a password or a Vault token that got no token
// lately): the plugin may have queued it behind a flood of wrong
// passwords, or a made-up token may be slow to refuse, which says nothing
// about Vault; anyone could send such requests to mark Vault down for
// everyone.
func (v *vault) transportTrouble(ctx context.Context, err error, path string, unproven bool) *failure {
	if errors.Is(ctx.Err(), context.Canceled) {
		return errCanceled // the client went away; nothing to tell anyone
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		if unproven {
			return v.trouble("timeout", "vault did not answer an unproven request (a password check, a Vault token) in time; "+
				"the plugin queues password checks for up to 2s when many arrive at once: storage.vault.timeout should be longer",
				"address", v.addr, "path", path, "timeout", v.timeout)
		}
		v.markDown()
		return v.trouble("timeout", "vault did not answer in time", "address", v.addr, "path", path,
			"timeout", v.timeout)
	}
	v.markDown()
	return v.trouble("unreachable", "vault is unreachable", "address", v.addr, "path", path, "error", err)
}

// trouble logs why the relay cannot serve (loudly, at most once a few
// seconds per kind) and answers the client a plain 503.
func (v *vault) trouble(kind, msg string, args ...any) *failure {
	v.metrics.vaultErrors.WithLabelValues(kind).Inc()
	t, _ := v.loud.LoadOrStore(kind, &throttle{interval: 10 * time.Second})
	if ok, held := t.(*throttle).allow(time.Now()); ok {
		if held > 0 {
			args = append(args, "similar_errors_not_logged", held)
		}
		v.log.Error(msg, args...)
	}
	return errUnavailable
}

// health asks Vault whether it is initialized and unsealed.
func (v *vault) health(ctx context.Context) (string, bool) {
	h, err := v.client.Sys().HealthWithContext(ctx)
	switch {
	case err != nil:
		if v.log.IsDebug() {
			v.log.Debug("vault health check failed", "error", err)
		}
		return "unreachable", false
	case !h.Initialized:
		return "not initialized", false
	case h.Sealed:
		return "sealed", false
	default:
		return "unsealed", true
	}
}

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
	next http.RoundTripper
	log  hclog.Logger
	loud throttle
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

// timeLeft is the time until ctx's deadline; an hour when it has none.
func timeLeft(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return time.Hour
}

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
		if ok, held := p.loud.allow(time.Now()); ok {
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

// vaultErrorList splits one of Vault's error strings into its errors: Vault
// often answers a multierror, "1 error occurred:\n\t* internal error\n\n".
func vaultErrorList(e string) []string {
	head, rest, ok := strings.Cut(e, "\n")
	if !ok || !strings.HasSuffix(head, " occurred:") {
		return []string{e}
	}
	var errs []string
	for _, line := range strings.Split(rest, "\n") {
		if item, ok := strings.CutPrefix(line, "\t* "); ok {
			errs = append(errs, item)
		}
	}
	return errs
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
