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
	"unicode"

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
//   - storage.vault.auth_token_file: a file that Vault Agent (or anything
//     else) keeps fresh; the relay reads it again when it changes and
//     leaves renewal to whoever writes it.
//
// A renewal or login that fails, and a token that nears its max TTL, are
// logged at ERROR and counted in godoauth_relay_vault_token_errors_total.

// AppRoleConfig is storage.vault.approle, an extension to godoauth's file.
type AppRoleConfig struct {
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
	Mount        string `yaml:"mount"` // the AppRole auth mount; default "approle"
}

// Enabled reports whether the relay logs in with AppRole.
func (a AppRoleConfig) Enabled() bool {
	return a.RoleID != "" || a.SecretIDFile != "" || a.Mount != ""
}

const (
	defaultAppRoleMount = "approle"
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
var tokenTroubles = []string{"renew", "login", "file", "max_ttl", "not_renewable"}

// checkTokenSource checks that exactly one source of the relay's token is
// configured, and that each of its settings is usable.
func (c *Config) checkTokenSource() error {
	v := c.Storage.Vault
	sources := 0
	for _, set := range []bool{v.AuthToken != "", v.AuthTokenFile != "", v.AppRole.Enabled()} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		return c.errorf("storage.vault.auth_token", "required (or set VAULT_TOKEN, or use auth_token_file or approle)")
	case sources > 1:
		return c.errorf("storage.vault", "set only one of auth_token (or VAULT_TOKEN), auth_token_file and approle")
	}
	if v.AuthToken != "" && !printableToken(v.AuthToken) {
		return c.errorf("storage.vault.auth_token", "holds blanks or control characters (a stray newline?)")
	}
	if a := v.AppRole; a.Enabled() {
		if a.RoleID == "" {
			return c.errorf("storage.vault.approle.role_id", "required with approle")
		}
		if !printableToken(a.RoleID) {
			return c.errorf("storage.vault.approle.role_id", "holds blanks or control characters")
		}
		if a.SecretIDFile == "" {
			return c.errorf("storage.vault.approle.secret_id_file", "required with approle: a file holding the secret ID")
		}
		if a.Mount != "" && (strings.Trim(a.Mount, "/") == "" || strings.ContainsAny(a.Mount, "?#% \t\n")) {
			return c.errorf("storage.vault.approle.mount", "want an auth mount path such as approle, got %s", quote(a.Mount))
		}
	}
	return nil
}

func printableToken(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) < 0
}

// tokenKeeper keeps the relay's Vault token valid.
type tokenKeeper struct {
	client *api.Client
	cfg    VaultConfig
	log    hclog.Logger

	renewals prometheus.Counter
	logins   prometheus.Counter
	reloads  prometheus.Counter
	troubles *prometheus.CounterVec
	expiry   atomic.Int64 // unix seconds when the token expires; 0: never or unknown

	fileTrouble string // the last error of auth_token_file, said once
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
			Help: "AppRole logins of the relay that succeeded.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_token_file_reads_total",
			Help: "Times the relay read a new token from storage.vault.auth_token_file.",
		}),
		troubles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_token_errors_total",
			Help: "Trouble with the relay's own Vault token, by kind: renew (a renewal failed), login (an AppRole " +
				"login failed), file (the token file is missing or unusable), max_ttl (a token given to the relay " +
				"nears its max TTL and cannot be renewed further), not_renewable (the token expires and cannot be renewed).",
		}, []string{"kind"}),
	}
	for _, kind := range tokenTroubles {
		k.troubles.WithLabelValues(kind)
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "godoauth_relay_vault_token_expiry_timestamp_seconds",
		Help: "When the relay's own Vault token expires (Unix time), as of its last renewal or login; " +
			"0 when it never expires or the relay does not know (a token file).",
	}, func() float64 { return float64(k.expiry.Load()) })
	reg.MustRegister(k.renewals, k.logins, k.reloads, k.troubles, expiry)
	return k
}

// start gets a first token (AppRole login, token file) before the relay
// serves, then keeps the token valid until ctx is done.
func (k *tokenKeeper) start(ctx context.Context) {
	switch {
	case k.cfg.AppRole.Enabled():
		secret, err := k.login(ctx)
		go k.keepAppRole(ctx, secret, err)
	case k.cfg.AuthTokenFile != "":
		last := k.readTokenFile("")
		go k.followTokenFile(ctx, last)
	default:
		go k.keepStatic(ctx)
	}
}

// keepStatic renews the token given in the configuration for as long as
// it can be renewed.
func (k *tokenKeeper) keepStatic(ctx context.Context) {
	wait := retryMin
	for ctx.Err() == nil {
		secret, err := k.client.Auth().Token().RenewSelfWithContext(ctx, 0)
		if ctx.Err() != nil {
			return
		}
		switch code := statusCode(err); {
		case err == nil && (secret == nil || secret.Auth == nil):
			k.trouble("renew", "vault answered a renewal of the relay's token with no data; retrying")
		case err == nil && secret.Auth.LeaseDuration == 0:
			k.log.Info("the relay's Vault token never expires: nothing to renew")
			k.expiry.Store(0)
			return
		case err == nil:
			wait = retryMin
			k.renewals.Inc()
			k.setExpiry(secret.Auth.LeaseDuration)
			k.log.Info("renewing the relay's Vault token itself", "ttl", seconds(secret.Auth.LeaseDuration),
				"expires", k.expires())
			if k.watch(ctx, secret) == nil {
				k.waitForExpiry(ctx) // the max TTL: nothing more to do but say when it is over
				return
			}
		case code == http.StatusBadRequest:
			// Vault answers 400 to the renewal of a token that cannot be
			// renewed: look at how long it has left.
			k.notRenewable(ctx)
			return
		case code == http.StatusForbidden:
			k.trouble("renew", "the relay's Vault token may not renew itself: its policy lacks update on "+
				"auth/token/renew-self (see deploy/policies/relay.hcl). Until then renew it yourself within each "+
				"period (vault token renew), or every registry is down once it expires", "retry_in", retryMax*10)
			wait = retryMax * 10
		default:
			k.trouble("renew", "cannot renew the relay's Vault token; retrying", "error", err,
				"expires", k.expires(), "retry_in", wait)
		}
		if !sleep(ctx, wait) {
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// notRenewable looks up a token that Vault would not renew.
func (k *tokenKeeper) notRenewable(ctx context.Context) {
	s, err := k.client.Auth().Token().LookupSelfWithContext(ctx)
	var ttl time.Duration
	if err == nil {
		ttl, err = s.TokenTTL()
	}
	switch {
	case err != nil:
		k.trouble("not_renewable", "the relay's Vault token cannot be renewed and the relay cannot tell when it "+
			"expires; use a periodic token (vault token create -period=…) or AppRole", "error", err)
	case ttl == 0:
		k.log.Info("the relay's Vault token never expires: nothing to renew")
	default:
		k.setExpiry(int(ttl.Seconds()))
		k.trouble("not_renewable", "the relay's Vault token cannot be renewed and expires; every token request "+
			"answers 503 after that. Use a periodic token (vault token create -period=…) or AppRole",
			"expires", k.expires())
		k.waitForExpiry(ctx)
	}
}

// keepAppRole logs in with AppRole whenever the relay has no token that
// can be renewed, and renews the one it has.
func (k *tokenKeeper) keepAppRole(ctx context.Context, secret *api.Secret, err error) {
	wait := retryMin
	for ctx.Err() == nil {
		if err == nil {
			wait = retryMin
			if secret.Auth.LeaseDuration == 0 {
				return // a token that never expires
			}
			if !secret.Auth.Renewable {
				// Log in again at two thirds of its lifetime.
				if !sleep(ctx, time.Duration(secret.Auth.LeaseDuration)*time.Second*2/3) {
					return
				}
			} else {
				_ = k.watch(ctx, secret) // ends at the max TTL or on an error: log in again
			}
		} else {
			k.trouble("login", "cannot log in to Vault with AppRole; retrying", "mount", k.appRoleMount(),
				"error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
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

func (k *tokenKeeper) appRoleMount() string {
	if m := strings.Trim(k.cfg.AppRole.Mount, "/"); m != "" {
		return m
	}
	return defaultAppRoleMount
}

// login logs in with role_id and the secret ID, read from its file each
// time (so a new secret ID can be dropped in), and makes the token the
// relay's.
func (k *tokenKeeper) login(ctx context.Context) (*api.Secret, error) {
	a := k.cfg.AppRole
	secretID, err := readSmallFile(a.SecretIDFile)
	if err != nil {
		return nil, fmt.Errorf("secret_id_file: %w", err)
	}
	// A client without the relay's (maybe expired) token: login paths need none.
	c, err := k.client.Clone()
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	lctx, cancel := context.WithTimeout(ctx, max(k.client.ClientTimeout(), 5*time.Second))
	defer cancel()
	secret, err := c.Logical().WriteWithContext(lctx, "auth/"+k.appRoleMount()+"/login",
		map[string]any{"role_id": a.RoleID, "secret_id": secretID})
	if err != nil {
		return nil, err
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, errors.New("vault answered the login with no token")
	}
	k.client.SetToken(secret.Auth.ClientToken)
	k.logins.Inc()
	k.setExpiry(secret.Auth.LeaseDuration)
	k.log.Info("logged in to Vault with AppRole", "mount", k.appRoleMount(),
		"ttl", seconds(secret.Auth.LeaseDuration), "renewable", secret.Auth.Renewable,
		"policies", strings.Join(secret.Auth.TokenPolicies, ","))
	return secret, nil
}

// watch renews the token with the API client's lifetime watcher until it
// can no longer be extended (nil) or a renewal fails (the error).
func (k *tokenKeeper) watch(ctx context.Context, secret *api.Secret) error {
	w, err := k.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
		Secret:        secret,
		RenewBehavior: api.RenewBehaviorErrorOnErrors, // so that each failure is seen and counted
	})
	if err != nil {
		k.trouble("renew", "cannot watch the relay's Vault token", "error", err)
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
			k.setExpiry(lease)
			if k.log.IsDebug() {
				k.log.Debug("renewed the relay's Vault token", "ttl", seconds(lease), "expires", k.expires())
			}
			if float64(lease) < nearMaxTTL*float64(full) && !warned {
				warned = true
				k.maxTTL("the relay's Vault token nears its max TTL and can no longer be extended by a full period")
			}
		case err := <-w.DoneCh():
			if err != nil {
				k.trouble("renew", "cannot renew the relay's Vault token", "error", err, "expires", k.expires())
				return err
			}
			k.maxTTL("the relay's Vault token reached its max TTL: it can no longer be renewed")
			return nil
		}
	}
}

// maxTTL tells that the token nears or reached its max TTL: routine with
// AppRole (the relay logs in again), trouble with a token it was given.
func (k *tokenKeeper) maxTTL(msg string) {
	if k.cfg.AppRole.Enabled() {
		k.log.Info(msg+"; logging in again with AppRole", "expires", k.expires())
		return
	}
	k.trouble("max_ttl", msg, "expires", k.expires(), "action",
		"give the relay a new token before then (a periodic one: vault token create -period=…), or use AppRole")
}

// waitForExpiry says, once more, when a token that cannot be renewed has expired.
func (k *tokenKeeper) waitForExpiry(ctx context.Context) {
	exp := k.expiry.Load()
	if exp == 0 || !sleep(ctx, time.Until(time.Unix(exp, 0))) {
		return
	}
	k.log.Error("the relay's Vault token has expired: every token request answers 503 until the relay "+
		"gets a new token and is restarted", "expired", time.Unix(exp, 0).UTC().Format(time.RFC3339))
}

// followTokenFile reads the token file again whenever it changes.
func (k *tokenKeeper) followTokenFile(ctx context.Context, last string) {
	t := time.NewTicker(tokenFilePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			last = k.readTokenFile(last)
		}
	}
}

// readTokenFile makes the file's token the relay's when it differs from
// last, and returns the token now in use.
func (k *tokenKeeper) readTokenFile(last string) string {
	path := k.cfg.AuthTokenFile
	token, err := readSmallFile(path)
	if err == nil && !printableToken(token) {
		err = errors.New("blanks or control characters inside the token")
	}
	if err != nil {
		// Said once until the file is good again; the token in use stays.
		if msg := err.Error(); msg != k.fileTrouble {
			k.fileTrouble = msg
			k.trouble("file", "cannot use auth_token_file; keeping the token in use", "file", path, "error", err)
		}
		return last
	}
	k.fileTrouble = ""
	if token == last {
		return last
	}
	k.client.SetToken(token)
	k.reloads.Inc()
	k.log.Info("using the Vault token from auth_token_file", "file", path, "first", last == "")
	return token
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

func (k *tokenKeeper) trouble(kind, msg string, args ...any) {
	k.troubles.WithLabelValues(kind).Inc()
	k.log.Error(msg, args...)
}

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

func statusCode(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// sleep waits d or until ctx is done; false when ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
