package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
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

	logThrottles sync.Map // error kind → *throttle: one log line per kind a few seconds

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
			vc.HttpClient.Transport = &pluginRelaunch{next: transport, log: log, warnings: throttle{interval: 10 * time.Second}}
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
		return nil, v.unavailable("busy", err.Error(), "slots", maxVaultCalls)
	}
	return release, nil
}

// askPlugin gets a token from the plugin's token paths (token,
// token/refresh) with the relay's own Vault token: for a plugin user's
// password, a refresh token, or anonymous access. An unproven password
// (doc.go) waits for a place among maxUnprovenCalls first and goes
// alone; every other request may go in a batch with others for the same
// mount (batch.go): it is safe to retry, so a batch of them is too.
func (v *vault) askPlugin(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
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
		t, f = v.askSingle(ctx, req, true)
		leave()
	case v.batch:
		t, f = v.batcher(req.Service).submit(ctx, req)
	default:
		t, f = v.askSingle(ctx, req, false)
	}
	if f == nil {
		v.issuer.check(req.Service, t.Issuer)
	}
	if password {
		v.credentials.settle(id, f)
	}
	return t, f
}

// askSingle sends one token request to the plugin's single path (token,
// token/refresh). unproven says it checks a password that got no token
// lately: it is not retried on another node, and its timeout may be the
// plugin's queue of checks.
func (v *vault) askSingle(ctx context.Context, req *tokenRequest, unproven bool) (*mintedToken, *failure) {
	return v.tokenCall(ctx, &vaultCall{
		path:      req.vaultPath(),
		body:      req.vaultBody(v.ttl),
		retrySafe: !unproven, // a retry of an unproven password could count two failures
		unproven:  unproven,
		req:       req,
	})
}

// refusal turns Vault's refusal of a token request into the client's. The
// plugin's refusals carry a code (tokenapi.Refusal), which alone decides
// the answer; Vault's own refusals (no such mount, a denied token, sealed)
// have only their status. unproven says the request checks a credential
// that got no token lately (noAnswer).
func (v *vault) refusal(ctx context.Context, err error, resp *api.Response, req *tokenRequest, unproven bool) *failure {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return v.noAnswer(ctx, err, req.vaultPath(), unproven)
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
		return v.unavailable("forbidden", "vault refused the relay's token (403): token invalid or expired",
			"path", path)
	case code == http.StatusForbidden:
		return v.unavailable("forbidden", fmt.Sprintf("vault refused the relay's token (403): check its policy allows "+
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
		return v.unavailable("sealed", "vault is sealed or unavailable (503)", "path", path, "error", msg)
	case code >= 500:
		return v.unavailable("server_error", "vault answered an error", "path", path, "status", code, "error", msg)
	default:
		return v.unavailable("unexpected", "vault answered an unexpected status", "path", path, "status", code, "error", msg)
	}
}

// noAnswer handles a call that got no answer: a timeout or an
// unreachable Vault marks Vault down for a moment. Not the timeout of an
// unproven request (a password or a Vault token that got no token
// lately): the plugin may have queued it behind a flood of wrong
// passwords, or a made-up token may be slow to refuse, which says nothing
// about Vault; anyone could send such requests to mark Vault down for
// everyone.
func (v *vault) noAnswer(ctx context.Context, err error, path string, unproven bool) *failure {
	if errors.Is(ctx.Err(), context.Canceled) {
		return errCanceled // the client went away; nothing to tell anyone
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		if unproven {
			return v.unavailable("timeout", "vault did not answer an unproven request (a password check, a Vault token) in time; "+
				"the plugin queues password checks for up to 2s when many arrive at once: storage.vault.timeout should be longer",
				"address", v.addr, "path", path, "timeout", v.timeout)
		}
		v.markDown()
		return v.unavailable("timeout", "vault did not answer in time", "address", v.addr, "path", path,
			"timeout", v.timeout)
	}
	v.markDown()
	return v.unavailable("unreachable", "vault is unreachable", "address", v.addr, "path", path, "error", err)
}

// unavailable logs why the relay cannot serve (loudly, at most once a few
// seconds per kind) and answers the client a plain 503.
func (v *vault) unavailable(kind, msg string, args ...any) *failure {
	v.metrics.vaultErrors.WithLabelValues(kind).Inc()
	t, _ := v.logThrottles.LoadOrStore(kind, &throttle{interval: 10 * time.Second})
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
