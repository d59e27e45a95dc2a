package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
)

// The relay's own Vault token comes from one of three places:
//
//   - storage.vault.auth_token (or VAULT_TOKEN): the relay renews it itself
//     when it is renewable (a periodic token), with the API client's
//     lifetime watcher, at about two thirds of its TTL;
//   - storage.vault.approle: the relay logs in with role_id and the secret
//     ID read from secret_id_file, renews the token it gets, and logs in
//     again before the token reaches its max TTL;
//   - storage.vault.auth_token_file: a file that Vault Agent, a systemd
//     credential or anything else provides; the relay reads it again when
//     it changes, checks a new token with lookup-self before it switches
//     (a token Vault refuses is not used: the working one stays), and
//     renews the token it uses as it renews auth_token, starting over with
//     each new token.
//
// lookup-self, at start and after each change of token, tells a token
// Vault refuses ("token invalid or expired") from a policy that lacks a
// path; while Vault refuses the relay's token, /healthz answers 503.
// A renewal or login that fails, and a token that nears its max TTL, are
// logged at ERROR and counted in godoauth_relay_vault_token_errors_total.

const (
	// tokenFilePoll is how often the token file is checked for a change.
	tokenFilePoll = time.Second
	// maxTokenFileBytes bounds the token file: a token is a hundred bytes.
	maxTokenFileBytes = 16 << 10
	// retryMin and retryMax bound the wait between failed renewals or logins.
	retryMin = time.Second
	retryMax = time.Minute
	// nearMaxTTL: a renewal that extends the token by less than this share
	// of its first lease says the token is capped by its max TTL.
	nearMaxTTL = 0.9
)

// Kinds of godoauth_relay_vault_token_errors_total.
var tokenErrorKinds = []string{"invalid", "renew", "login", "file", "max_ttl", "not_renewable"}

// tokenKeeper keeps the relay's Vault token valid.
type tokenKeeper struct {
	client *api.Client
	cfg    VaultConfig
	log    hclog.Logger

	renewals     prometheus.Counter
	logins       prometheus.Counter
	reloads      prometheus.Counter
	errorsByKind *prometheus.CounterVec
	expiry       atomic.Int64 // unix seconds when the token expires; 0: never or unknown
	lease        atomic.Int64 // seconds the last renewal or login gave; 0: the relay will not extend the token

	refused  atomic.Pointer[string] // why Vault refuses the relay's token now; nil: it does not
	checking atomic.Bool            // a recheck (lookup-self) is under way
	checked  atomic.Int64           // unix nanoseconds of the last recheck

	fileError string // the last error of auth_token_file, said once
	rejected  string // the last token of auth_token_file that Vault refused, not checked again
}

func newTokenKeeper(cfg VaultConfig, client *api.Client, log hclog.Logger, reg prometheus.Registerer) *tokenKeeper {
	k := &tokenKeeper{
		client: client,
		cfg:    cfg,
		log:    log,
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_token_renewals_total",
			Help: "Renewals of the relay's own Vault token that succeeded.",
		}),
		logins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_token_logins_total",
			Help: "Logins of the relay (AppRole, Kubernetes) that succeeded.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_token_file_reads_total",
			Help: "Times the relay took a new token from storage.vault.auth_token_file (after Vault took it in lookup-self).",
		}),
		errorsByKind: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_token_errors_total",
			Help: "Trouble with the relay's own Vault token, by kind: invalid (Vault says the token is invalid or " +
				"expired, at start, after a change of token or on a refused call; a new token_file that Vault refuses " +
				"counts as file), renew (a renewal failed), login (an AppRole or Kubernetes " +
				"login failed), file (the token file is missing or unusable), max_ttl (a token given to the relay " +
				"nears its max TTL and cannot be renewed further), not_renewable (the token expires and cannot be renewed).",
		}, []string{"kind"}),
	}
	for _, kind := range tokenErrorKinds {
		k.errorsByKind.WithLabelValues(kind)
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "godoauth_relay_vault_token_expiry_timestamp_seconds",
		Help: "When the relay's own Vault token expires (Unix time), as of its last lookup, renewal or login; " +
			"0 when it never expires or the relay could not look it up.",
	}, func() float64 { return float64(k.expiry.Load()) })
	lease := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "godoauth_relay_vault_token_lease_seconds",
		Help: "The lifetime the last renewal or login gave the relay's own Vault token; 0 when the relay will not " +
			"extend the token (it cannot be renewed, or reached its max TTL). The relay renews at about two " +
			"thirds of it, so a token with less than a quarter of it left is not being extended.",
	}, func() float64 { return float64(k.lease.Load()) })
	refused := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "godoauth_relay_vault_token_refused",
		Help: "1 while Vault refuses the relay's own token (invalid or expired, or no login): every " +
			"token request answers 503 and /healthz is 503.",
	}, func() float64 {
		if k.refused.Load() != nil {
			return 1
		}
		return 0
	})
	reg.MustRegister(k.renewals, k.logins, k.reloads, k.errorsByKind, expiry, lease, refused)
	return k
}

// start gets a first token (AppRole login, token file) before the relay
// serves, then keeps the token valid until ctx is done.
func (k *tokenKeeper) start(ctx context.Context) {
	switch {
	case k.logsIn():
		secret, err := k.login(ctx)
		go k.keepLoggedIn(ctx, secret, err)
	case k.cfg.AuthTokenFile != "":
		// The first token is used unchecked (there is no other); keepGiven
		// looks it up at once and says what Vault thinks of it.
		first, _ := k.readTokenFile("")
		if first != "" {
			k.use(first, "")
		}
		go k.followTokenFile(ctx, first)
	default:
		go k.keepGiven(ctx)
	}
}

// keepGiven looks up the token the relay was given (auth_token, or the
// token file's current one) and renews it for as long as it can be
// renewed. With a token file, ctx ends when the file brings a new token.
func (k *tokenKeeper) keepGiven(ctx context.Context) {
	if !k.lookupGiven(ctx) {
		return
	}
	wait := retryMin
	for ctx.Err() == nil {
		secret, err := k.client.Auth().Token().RenewSelfWithContext(ctx, 0)
		if ctx.Err() != nil {
			return
		}
		switch code := statusCode(err); {
		case err == nil && (secret == nil || secret.Auth == nil):
			k.tokenError("renew", "vault answered a renewal of the relay's token with no data; retrying")
		case err == nil && secret.Auth.LeaseDuration == 0:
			k.log.Info("the relay's Vault token never expires: nothing to renew")
			k.accept()
			k.extended(0)
			return
		case err == nil:
			wait = retryMin
			k.accept()
			k.renewals.Inc()
			k.extended(secret.Auth.LeaseDuration)
			k.log.Info("renewing the relay's Vault token itself", "ttl", seconds(secret.Auth.LeaseDuration),
				"expires", k.expires())
			if k.watch(ctx, secret) == nil {
				if ctx.Err() != nil {
					return // a new token from the file: its own keeper records its lease
				}
				k.lease.Store(0)
				k.waitForExpiry(ctx) // the max TTL: nothing more to do but say when it is over
				return
			}
		case isInvalidToken(err):
			k.invalid(ctx, "renew-self")
			return
		case code == http.StatusBadRequest:
			// Vault answers 400 to the renewal of a token that cannot be
			// renewed: look at how long it has left.
			k.notRenewable(ctx)
			return
		case code == http.StatusForbidden:
			k.tokenError("renew", "the relay's Vault token may not renew itself: its policy lacks update on "+
				"auth/token/renew-self (see deploy/policies/relay.hcl). Until then renew it yourself within each "+
				"period (vault token renew), or every registry is down once it expires", "retry_in", retryMax*10)
			wait = retryMax * 10
		default:
			k.tokenError("renew", "cannot renew the relay's Vault token; retrying", "error", err,
				"expires", k.expires(), "retry_in", wait)
		}
		if !sleep(ctx, jitter(wait)) {
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// lookupGiven asks Vault about the given token before anything else, so
// that the first ERROR names the right cause: a token Vault refuses is
// "invalid or expired", not a policy without renew-self. It reports
// whether to go on renewing.
func (k *tokenKeeper) lookupGiven(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, k.callTimeout())
	s, err := k.client.Auth().Token().LookupSelfWithContext(lctx)
	cancel()
	if ctx.Err() != nil {
		return false
	}
	switch {
	case isInvalidToken(err):
		k.invalid(ctx, "lookup-self")
		return false
	case statusCode(err) == http.StatusForbidden:
		// Vault checked the token and found it valid, then its policy.
		k.accept()
		k.log.Warn("the relay's Vault token may not look itself up: its policy lacks read on " +
			"auth/token/lookup-self (see deploy/policies/relay.hcl); the relay cannot tell an expired token " +
			"from a missing policy")
	case err != nil:
		k.log.Warn("cannot look up the relay's Vault token; renewing it anyway", "error", err)
	default:
		k.accept()
		if ttl, _ := s.TokenTTL(); ttl > 0 {
			k.setExpiry(int(ttl.Seconds()))
		}
		if ok, _ := s.TokenIsRenewable(); !ok {
			k.notRenewable(ctx)
			return false
		}
	}
	return true
}

// invalid says that Vault refuses the relay's token itself.
func (k *tokenKeeper) invalid(ctx context.Context, call string) {
	k.refuse("token invalid or expired")
	msg := "vault refuses the relay's token: token invalid or expired (revoked, past its TTL, or mistyped); " +
		"every token request answers 503 and /healthz is 503 until the relay gets a new token"
	if k.cfg.AuthTokenFile != "" {
		msg += " in auth_token_file"
	} else {
		msg += " and is restarted"
	}
	k.tokenError("invalid", msg, "call", call)
	k.lease.Store(0)
	<-ctx.Done() // a token file's change ends ctx; a configured token stays refused
}
func (k *tokenKeeper) notRenewable(ctx context.Context) {
	s, err := k.client.Auth().Token().LookupSelfWithContext(ctx)
	var ttl time.Duration
	if err == nil {
		ttl, err = s.TokenTTL()
	}
	k.lease.Store(0)
	switch {
	case err != nil:
		k.tokenError("not_renewable", "the relay's Vault token cannot be renewed and the relay cannot tell when it "+
			"expires; use a periodic token (vault token create -period=…) or AppRole", "error", err)
	case ttl == 0:
		k.log.Info("the relay's Vault token never expires: nothing to renew")
		k.setExpiry(0)
	case k.cfg.AuthTokenFile != "":
		// Vault Agent's tokens may be batch tokens: the file's writer replaces them.
		k.setExpiry(int(ttl.Seconds()))
		k.log.Info("the token from auth_token_file cannot be renewed; its writer must replace it before it expires",
			"expires", k.expires())
		k.waitForExpiry(ctx)
	default:
		k.setExpiry(int(ttl.Seconds()))
		k.tokenError("not_renewable", "the relay's Vault token cannot be renewed and expires; every token request "+
			"answers 503 after that. Use a periodic token (vault token create -period=…) or AppRole",
			"expires", k.expires())
		k.waitForExpiry(ctx)
	}
}

// keepLoggedIn logs in (AppRole, Kubernetes) whenever the relay has no
// token that can be renewed, and renews the one it has.
//
// After a failed renewal the old token is revoked (best effort) once the
// new login succeeds: it may still be valid, and nobody else holds it.
func (k *tokenKeeper) keepLoggedIn(ctx context.Context, secret *api.Secret, err error) {
	wait := retryMin
	stale := "" // a token whose renewal failed, to revoke after the next login
	for ctx.Err() == nil {
		if err == nil {
			wait = retryMin
			if stale != "" {
				k.revoke(ctx, stale)
				stale = ""
			}
			if secret.Auth.LeaseDuration == 0 {
				return // a token that never expires
			}
			if !secret.Auth.Renewable {
				// Log in again at two thirds of its lifetime.
				if !sleep(ctx, time.Duration(secret.Auth.LeaseDuration)*time.Second*2/3) {
					return
				}
			} else if k.watch(ctx, secret) != nil { // ends at the max TTL or on an error: log in again
				stale = secret.Auth.ClientToken
			}
		} else {
			if k.client.Token() == "" || isInvalidToken(err) {
				k.refuse("no token: the " + k.loginName() + " login failed")
			}
			k.tokenError("login", "cannot log in to Vault with "+k.loginName()+"; retrying", "mount", k.loginMount(),
				"error", err, "retry_in", wait)
			if !sleep(ctx, jitter(wait)) {
				return
			}
			wait = min(2*wait, retryMax)
		}
		if ctx.Err() != nil {
			return
		}
		secret, err = k.login(ctx)
	}
}

// revoke revokes a token the relay no longer uses, with that token
// (auth/token/revoke-self, in deploy/policies/relay.hcl). Best effort: a
// token Vault already refuses needs nothing more.
func (k *tokenKeeper) revoke(ctx context.Context, token string) {
	c, err := k.client.Clone()
	if err != nil {
		return
	}
	c.SetToken(token)
	rctx, cancel := context.WithTimeout(ctx, k.callTimeout())
	defer cancel()
	if err := c.Auth().Token().RevokeSelfWithContext(rctx, ""); err != nil {
		k.log.Warn("cannot revoke the relay's previous Vault token (its renewal failed); it expires by itself",
			"error", err)
		return
	}
	k.log.Info("revoked the relay's previous Vault token, whose renewal had failed")
}

func (k *tokenKeeper) callTimeout() time.Duration {
	return max(k.client.ClientTimeout(), 5*time.Second)
}

// watch renews the token with the API client's lifetime watcher until it
// can no longer be extended (nil) or a renewal fails (the error).
func (k *tokenKeeper) watch(ctx context.Context, secret *api.Secret) error {
	w, err := k.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
		Secret:        secret,
		RenewBehavior: api.RenewBehaviorErrorOnErrors, // so that each failure is seen and counted
	})
	if err != nil {
		k.tokenError("renew", "cannot watch the relay's Vault token", "error", err)
		return err
	}
	go w.Start()
	defer w.Stop()
	full := secret.Auth.LeaseDuration
	warned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-w.RenewCh():
			lease := r.Secret.Auth.LeaseDuration
			k.renewals.Inc()
			k.extended(lease)
			if k.log.IsDebug() {
				k.log.Debug("renewed the relay's Vault token", "ttl", seconds(lease), "expires", k.expires())
			}
			if float64(lease) < nearMaxTTL*float64(full) && !warned {
				warned = true
				k.maxTTL("the relay's Vault token nears its max TTL and can no longer be extended by a full period")
			}
		case err := <-w.DoneCh():
			if err != nil {
				k.tokenError("renew", "cannot renew the relay's Vault token", "error", err, "expires", k.expires())
				return err
			}
			k.maxTTL("the relay's Vault token reached its max TTL: it can no longer be renewed")
			return nil
		}
	}
}

// maxTTL tells that the token nears or reached its max TTL: routine with
// AppRole (the relay logs in again), an error with a token it was given.
func (k *tokenKeeper) maxTTL(msg string) {
	if k.logsIn() {
		k.log.Info(msg+"; logging in again with "+k.loginName(), "expires", k.expires())
		return
	}
	k.tokenError("max_ttl", msg, "expires", k.expires(), "action",
		"give the relay a new token before then (a periodic one: vault token create -period=…), or use AppRole")
}

// waitForExpiry says, once more, when a token that cannot be renewed has expired.
func (k *tokenKeeper) waitForExpiry(ctx context.Context) {
	exp := k.expiry.Load()
	if exp == 0 || !sleep(ctx, time.Until(time.Unix(exp, 0))) {
		return
	}
	k.refuse("token expired")
	k.log.Error("the relay's Vault token has expired: every token request answers 503 until the relay "+
		"gets a new token and is restarted", "expired", time.Unix(exp, 0).UTC().Format(time.RFC3339))
}

// followTokenFile reads the token file again whenever it changes. A new
// token is looked up with itself first: if Vault refuses it, the token in
// use stays. Each token in use is renewed (keepGiven) until the next one.
func (k *tokenKeeper) followTokenFile(ctx context.Context, inUse string) {
	kctx, stop := context.WithCancel(ctx)
	if inUse != "" {
		go k.keepGiven(kctx)
	}
	t := time.NewTicker(tokenFilePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			stop()
			return
		case <-t.C:
		}
		token, changed := k.readTokenFile(inUse)
		if !changed || !k.vet(ctx, token, inUse == "") {
			continue
		}
		stop() // the old token's keeper
		k.use(token, inUse)
		inUse = token
		kctx, stop = context.WithCancel(ctx)
		go k.keepGiven(kctx)
	}
}

// readTokenFile reads the token file; changed says it holds a token other
// than inUse (and other than one Vault refused already).
func (k *tokenKeeper) readTokenFile(inUse string) (token string, changed bool) {
	path := k.cfg.AuthTokenFile
	token, err := readSmallFile(path)
	if err == nil && !printableToken(token) {
		err = errors.New("blanks or control characters inside the token")
	}
	if err != nil {
		// Said once until the file is good again; the token in use stays.
		k.fileSays(err.Error(), "cannot use auth_token_file; keeping the token in use", "error", err)
		return "", false
	}
	if token == inUse || token == k.rejected {
		if token == inUse {
			k.fileError = ""
		}
		return token, false
	}
	return token, true
}

// vet looks up a new token of the file with itself. A token Vault refuses
// is not used; a token Vault cannot be asked about is tried again at the
// next poll, unless the relay has no token yet.
func (k *tokenKeeper) vet(ctx context.Context, token string, first bool) bool {
	c, err := k.client.Clone()
	if err != nil {
		return false
	}
	c.SetToken(token)
	lctx, cancel := context.WithTimeout(ctx, k.callTimeout())
	_, err = c.Auth().Token().LookupSelfWithContext(lctx)
	cancel()
	switch {
	case err == nil || (statusCode(err) == http.StatusForbidden && !isInvalidToken(err)):
		return true // valid (a 403 without "invalid token" is a policy without lookup-self)
	case isInvalidToken(err):
		// Said for each token refused; the same token is not checked again.
		k.rejected, k.fileError = token, ""
		k.tokenError("file", "vault refuses the new token in auth_token_file (token invalid or expired: "+
			"a truncated or stale write?); keeping the token in use", "file", k.cfg.AuthTokenFile, "call", "lookup-self")
		return false
	case statusCode(err) == 0 || statusCode(err) == http.StatusServiceUnavailable:
		// No answer, or a sealed Vault: nobody said no. Try again.
		k.fileSays("unchecked", "cannot check the new token in auth_token_file with Vault; keeping the token "+
			"in use and trying again", "error", err)
		return first && ctx.Err() == nil
	default:
		return true // Vault answered, and did not refuse the token
	}
}

// use makes token the relay's.
func (k *tokenKeeper) use(token, old string) {
	k.client.SetToken(token)
	k.fileError = ""
	k.reloads.Inc()
	k.log.Info("using the Vault token from auth_token_file", "file", k.cfg.AuthTokenFile, "first", old == "")
}

// fileSays logs an error of the token file once until it changes.
func (k *tokenKeeper) fileSays(key, msg string, args ...any) {
	if key == k.fileError {
		return
	}
	k.fileError = key
	k.tokenError("file", msg, append([]any{"file", k.cfg.AuthTokenFile}, args...)...)
}

// readSmallFile reads a token or secret ID: one line, blanks around it dropped.
func readSmallFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, maxTokenFileBytes+1)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return "", fmt.Errorf("%s: empty", quote(path))
	}
	if n > maxTokenFileBytes {
		return "", fmt.Errorf("%s: larger than %d bytes", quote(path), maxTokenFileBytes)
	}
	s := strings.TrimSpace(string(b[:n]))
	if s == "" {
		return "", fmt.Errorf("%s: empty", quote(path))
	}
	return s, nil
}

func (k *tokenKeeper) tokenError(kind, msg string, args ...any) {
	k.errorsByKind.WithLabelValues(kind).Inc()
	k.log.Error(msg, args...)
}

// refuse records that Vault refuses the relay's token, and why (/healthz).
func (k *tokenKeeper) refuse(why string) { k.refused.Store(&why) }

// accept records that Vault took the relay's token.
func (k *tokenKeeper) accept() { k.refused.Store(nil) }

// refusedReason is why Vault refuses the relay's token, or "".
func (k *tokenKeeper) refusedReason() string {
	if why := k.refused.Load(); why != nil {
		return *why
	}
	return ""
}

// recheck looks the relay's token up again after a call Vault refused with
// "invalid token" (at most every few seconds): the token may have expired
// or been revoked since the keeper last looked. The answer decides /healthz.
func (k *tokenKeeper) recheck() {
	if time.Now().UnixNano()-k.checked.Load() < int64(recheckEvery) || !k.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer k.checking.Store(false)
		defer k.checked.Store(time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(context.Background(), k.callTimeout())
		defer cancel()
		_, err := k.client.Auth().Token().LookupSelfWithContext(ctx)
		switch {
		case isInvalidToken(err):
			if k.refusedReason() == "" {
				k.refuse("token invalid or expired")
				k.tokenError("invalid", "vault refuses the relay's token: token invalid or expired; every token "+
					"request answers 503 and /healthz is 503 until the relay gets a new token", "call", "lookup-self")
			}
		case err == nil || statusCode(err) == http.StatusForbidden:
			k.accept()
		}
	}()
}

// recheckEvery bounds the lookups that refused calls ask for.
const recheckEvery = 5 * time.Second

// extended records a lease that a renewal or login gave, which the relay
// will try to extend in turn.
func (k *tokenKeeper) extended(leaseSeconds int) {
	k.lease.Store(int64(max(leaseSeconds, 0)))
	k.setExpiry(leaseSeconds)
}

// setExpiry records when the token expires.
func (k *tokenKeeper) setExpiry(leaseSeconds int) {
	if leaseSeconds <= 0 {
		k.expiry.Store(0)
		return
	}
	k.expiry.Store(time.Now().Add(time.Duration(leaseSeconds) * time.Second).Unix())
}

func (k *tokenKeeper) expires() string {
	if exp := k.expiry.Load(); exp > 0 {
		return time.Unix(exp, 0).UTC().Format(time.RFC3339)
	}
	return "unknown"
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
