package relay

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"golang.org/x/sync/singleflight"
)

const (
	// maxVaultCalls bounds the Vault calls in flight; more requests wait
	// for a slot until their deadline.
	maxVaultCalls = 128
	// downFor is how long the relay answers 503 at once after Vault was
	// unreachable or timed out, instead of piling up requests that wait.
	downFor = time.Second
	// mountTTL is how long the answer of a mount probe is remembered.
	mountTTL = time.Minute
	// maxMounts bounds the remembered probe answers.
	maxMounts = 4096
	// maxProbeBytes bounds the PEM bundle read from <service>/ca/pem.
	maxProbeBytes = 64 << 10
	// maxTokenBytes bounds a token from the plugin.
	maxTokenBytes = 64 << 10
	// pemContentType is what the plugin's ca/pem answers with (Vault's own
	// PKI engine answers application/pem-file, so its mounts don't pass).
	pemContentType = "application/x-pem-file"
)

// vault forwards token requests to the plugin mounts, and nowhere else.
type vault struct {
	client      *api.Client
	http        *http.Client // the client's connections, for the token-less probe
	probeBase   string       // <address>/v1/
	probeHeader http.Header
	addr        string
	timeout     time.Duration
	ttl         int64  // token.expiration, sent as ttl
	issuer      string // token.issuer, compared with the plugin's
	log         hclog.Logger
	metrics     *metrics

	nodes       *nodes // the cluster's nodes (relay/nodes.go)
	slots       chan struct{}
	downUntil   atomic.Int64 // unix nanoseconds
	credentials *provenCredentials

	mountsMu sync.RWMutex
	mounts   map[string]mountAnswer
	probes   singleflight.Group

	issuerChecked sync.Map // service → struct{}
	loud          sync.Map // trouble kind → *throttle
}

type mountAnswer struct {
	exists  bool
	expires time.Time
}

func newVault(cfg *Config, log hclog.Logger, m *metrics) (*vault, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client: %w", vc.Error)
	}
	addr := cfg.VaultAddress()
	vc.Address = cfg.VaultAddresses()[0]
	vc.AgentAddress = ""
	vc.Timeout = time.Duration(cfg.Storage.Vault.Timeout)
	// An outage answers 503 now, not after backoffs. Never retrying also
	// keeps retryablehttp from dropping every idle connection after an
	// answer it would have retried (a 429 for a locked-out user, a 5xx).
	vc.MaxRetries = 0
	vc.CheckRetry = func(context.Context, *http.Response, error) (bool, error) { return false, nil }
	transport, ok := vc.HttpClient.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("vault client: unexpected transport %T", vc.HttpClient.Transport)
	}
	idle := max(cfg.Storage.Vault.Pool, maxVaultCalls)
	transport.MaxIdleConns = idle
	transport.MaxIdleConnsPerHost = idle
	transport.IdleConnTimeout = 90 * time.Second
	if cfg.Storage.Vault.CACert != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: cfg.Storage.Vault.CACert}); err != nil {
			return nil, fmt.Errorf("VAULT_CACERT %s: %w", quote(cfg.Storage.Vault.CACert), err)
		}
	}
	nodes, err := newNodes(cfg.VaultAddresses(), vc.HttpClient.Transport, vc.Timeout, log, m)
	if err != nil {
		return nil, err
	}
	if len(nodes.list) > 1 {
		// nodes times each attempt; the request's deadline bounds the retries.
		vc.Timeout, vc.HttpClient.Timeout = 0, 0
		vc.HttpClient.Transport = nodes
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.SetToken(cfg.Storage.Vault.AuthToken)
	header := client.Headers()
	header.Del(api.AuthHeaderName) // the probe goes without a token
	return &vault{
		client:      client,
		nodes:       nodes,
		http:        vc.HttpClient,
		probeBase:   strings.TrimRight(vc.Address, "/") + "/v1/",
		probeHeader: header,
		addr:        addr,
		timeout:     time.Duration(cfg.Storage.Vault.Timeout),
		ttl:         cfg.Token.Expiration,
		issuer:      cfg.Token.Issuer,
		log:         log,
		metrics:     m,
		slots:       make(chan struct{}, maxVaultCalls),
		credentials: newProvenCredentials(),
		mounts:      map[string]mountAnswer{},
	}, nil
}

// enter takes a slot for one Vault call. While Vault is known to be down
// it refuses at once, so a burst during an outage costs nothing.
func (v *vault) enter(ctx context.Context) (release func(), f *failure) {
	if time.Now().UnixNano() < v.downUntil.Load() {
		return nil, errUnavailable
	}
	release = func() { <-v.slots }
	select {
	case v.slots <- struct{}{}:
		return release, nil
	default:
	}
	select {
	case v.slots <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		return nil, v.trouble("busy", "every Vault call slot busy until the request's deadline",
			"slots", maxVaultCalls)
	}
}

// checkMount makes sure service names a mount of this plugin: its ca/pem
// answers a PEM bundle without a token. Answers are remembered for a
// minute; a Vault outage is not remembered, it is a 503.
func (v *vault) checkMount(ctx context.Context, service string) *failure {
	now := time.Now()
	v.mountsMu.RLock()
	a, ok := v.mounts[service]
	v.mountsMu.RUnlock()
	if !ok || now.After(a.expires) {
		ch := v.probes.DoChan(service, func() (any, error) {
			// Not the caller's context: the probe serves every waiter.
			pctx, cancel := context.WithTimeout(context.Background(), v.timeout)
			defer cancel()
			exists, f := v.probe(pctx, service)
			if f != nil {
				return nil, f
			}
			v.remember(service, exists)
			return exists, nil
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				return r.Err.(*failure)
			}
			a.exists = r.Val.(bool)
		case <-ctx.Done():
			return errUnavailable
		}
	}
	if !a.exists {
		return unknownService(service)
	}
	return nil
}

func (v *vault) remember(service string, exists bool) {
	now := time.Now()
	v.mountsMu.Lock()
	defer v.mountsMu.Unlock()
	if len(v.mounts) >= maxMounts {
		for s, a := range v.mounts {
			if now.After(a.expires) {
				delete(v.mounts, s)
			}
		}
	}
	if len(v.mounts) >= maxMounts && !exists {
		return // a flood of made-up names; probe them again next time
	}
	for s := range v.mounts {
		if len(v.mounts) < maxMounts {
			break
		}
		delete(v.mounts, s)
	}
	v.mounts[service] = mountAnswer{exists: exists, expires: now.Add(mountTTL)}
}

func (v *vault) forget(service string) {
	v.mountsMu.Lock()
	delete(v.mounts, service)
	v.mountsMu.Unlock()
}

// probe reads <service>/ca/pem without a token.
func (v *vault) probe(ctx context.Context, service string) (bool, *failure) {
	release, f := v.enter(ctx)
	if f != nil {
		return false, f
	}
	defer release()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.probeBase+service+"/ca/pem", nil)
	if err != nil {
		return false, unknownService(service)
	}
	for k, vs := range v.probeHeader {
		req.Header[k] = vs
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return false, v.transportTrouble(ctx, err, service+"/ca/pem", false)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBytes))
	if err != nil {
		return false, v.transportTrouble(ctx, err, service+"/ca/pem", false)
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
		return false, v.trouble("sealed", "vault is sealed or unavailable (503)", "path", service+"/ca/pem")
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return false, v.trouble("server_error", "vault answered an error", "path", service+"/ca/pem",
			"status", resp.StatusCode)
	default:
		if v.log.IsDebug() {
			v.log.Debug("no registry plugin mount", "service", service, "status", resp.StatusCode)
		}
		return false, nil
	}
}

// mint sends one token request to the plugin. A password that got no
// token lately waits for a place among maxUnprovenCalls first.
func (v *vault) mint(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
	id, password := v.credentials.id(req)
	unproven := password && !v.credentials.proven(id)
	if unproven {
		leave, f := v.enterUnproven(ctx)
		if f != nil {
			return nil, f
		}
		defer leave()
	}
	release, f := v.enter(ctx)
	if f != nil {
		return nil, f
	}
	defer release()
	ctx = retrySafe(ctx, !unproven) // a retry of an unproven password could count two failures
	path := req.vaultPath()
	secret, err := v.client.Logical().WriteWithContext(ctx, path, req.vaultBody(v.ttl))
	if err != nil {
		f := v.refusal(ctx, err, req, unproven)
		if password && f.status == http.StatusUnauthorized {
			v.credentials.forget(id)
		}
		return nil, f
	}
	if secret == nil {
		return nil, v.trouble("bad_answer", "vault answered no data", "path", path)
	}
	t, err := readMinted(secret.Data)
	if err != nil {
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	v.checkIssuer(req.Service, t.Issuer)
	if password {
		v.credentials.remember(id)
	}
	return t, nil
}

var retryAfterRE = regexp.MustCompile(`retry after (\d+)s`)

// defaultRetryAfter is the Retry-After of a 429 whose message names none.
const defaultRetryAfter = 60

// refusal turns Vault's answer to a token request into the client's.
// passwordCheck says the plugin may have queued the request behind other
// password checks.
func (v *vault) refusal(ctx context.Context, err error, req *tokenRequest, passwordCheck bool) *failure {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return v.transportTrouble(ctx, err, req.vaultPath(), passwordCheck)
	}
	msg := pluginMessage(re.Errors)
	path := req.vaultPath()
	switch code := re.StatusCode; {
	case code == http.StatusBadRequest:
		if req.RefreshToken != "" && strings.Contains(msg, "invalid refresh token") {
			return unauthorized("invalid refresh token")
		}
		return badRequest("%s", msg)
	case code == http.StatusUnauthorized:
		if req.RefreshToken != "" {
			return unauthorized("invalid refresh token")
		}
		if msg == "" {
			msg = "invalid username or password"
		}
		return unauthorized(msg)
	case code == http.StatusForbidden:
		return v.trouble("forbidden", fmt.Sprintf("vault refused the relay's token (403): check its policy allows "+
			"update on %s/token and %s/token/refresh, and that the token has not expired", req.Service, req.Service),
			"path", path)
	case code == http.StatusNotFound:
		v.forget(req.Service)
		return unknownService(req.Service)
	case code == http.StatusTooManyRequests:
		secs := defaultRetryAfter
		if m := retryAfterRE.FindStringSubmatch(msg); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
				secs = min(n, 24*60*60)
			}
		}
		if msg == "" {
			msg = "too many requests"
		}
		return lockedOut(msg, secs)
	case code == http.StatusServiceUnavailable:
		return v.trouble("sealed", "vault is sealed or unavailable (503)", "path", path, "error", msg)
	case code >= 500:
		return v.trouble("server_error", "vault answered an error", "path", path, "status", code, "error", msg)
	default:
		return v.trouble("unexpected", "vault answered an unexpected status", "path", path, "status", code, "error", msg)
	}
}

// transportTrouble handles a call that got no answer: a timeout or an
// unreachable Vault marks Vault down for a moment. Not the timeout of a
// password check: the plugin may have queued it behind a flood of wrong
// passwords, which says nothing about Vault.
func (v *vault) transportTrouble(ctx context.Context, err error, path string, passwordCheck bool) *failure {
	if errors.Is(ctx.Err(), context.Canceled) {
		return errCanceled // the client went away; nothing to tell anyone
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		if passwordCheck {
			return v.trouble("timeout", "vault did not answer a password check in time; the plugin queues "+
				"password checks for up to 2s when many arrive at once: storage.vault.timeout should be longer",
				"address", v.addr, "path", path, "timeout", v.timeout)
		}
		v.downUntil.Store(time.Now().Add(downFor).UnixNano())
		return v.trouble("timeout", "vault did not answer in time", "address", v.addr, "path", path,
			"timeout", v.timeout)
	}
	v.downUntil.Store(time.Now().Add(downFor).UnixNano())
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

// checkIssuer compares token.issuer with the iss of the first token minted
// for a service: the relay's token may not read the plugin's config.
func (v *vault) checkIssuer(service, iss string) {
	if v.issuer == "" {
		return
	}
	if _, done := v.issuerChecked.LoadOrStore(service, struct{}{}); done {
		return
	}
	if iss != v.issuer {
		v.log.Error("token.issuer differs from the issuer of the plugin's tokens; the registry refuses tokens "+
			"whose iss is not its own issuer setting",
			"service", service, "token.issuer", v.issuer, "plugin_issuer", iss,
			"fix", fmt.Sprintf("vault write %s/config issuer=%s", service, v.issuer))
	}
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

// pluginMessage is the plugin's error message as one bounded line.
func pluginMessage(errs []string) string {
	msg := oneLine(strings.Join(errs, "; "))
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	return msg
}

// mintedToken is the plugin's answer, checked.
type mintedToken struct {
	Token        string
	ExpiresIn    int64
	IssuedAt     string
	RefreshToken string
	// From the token's claims, for the log and the OAuth2 scope.
	Issuer  string
	Subject string
	Access  []accessEntry
}

type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// readMinted checks the plugin's answer: a Vault field is input like any other.
func readMinted(data map[string]any) (*mintedToken, error) {
	t := &mintedToken{}
	var ok bool
	if t.Token, ok = data["token"].(string); !ok || t.Token == "" {
		return nil, errors.New("no token")
	}
	if len(t.Token) > maxTokenBytes {
		return nil, errors.New("token too long")
	}
	if at, present := data["access_token"]; present && at != t.Token {
		return nil, errors.New("access_token differs from token")
	}
	n, err := wholeNumber(data["expires_in"])
	if err != nil || n <= 0 || n > 10*maxExpiration {
		return nil, fmt.Errorf("expires_in: want a positive number of seconds, got %v", data["expires_in"])
	}
	t.ExpiresIn = n
	switch at := data["issued_at"].(type) {
	case nil:
		t.IssuedAt = time.Now().UTC().Format(time.RFC3339)
	case string:
		if _, err := time.Parse(time.RFC3339, at); err != nil {
			return nil, fmt.Errorf("issued_at: want RFC 3339, got %s", quote(at))
		}
		t.IssuedAt = at
	default:
		return nil, errors.New("issued_at: want a string")
	}
	switch rt := data["refresh_token"].(type) {
	case nil:
	case string:
		t.RefreshToken = rt
	default:
		return nil, errors.New("refresh_token: want a string")
	}
	if err := t.readClaims(); err != nil {
		return nil, err
	}
	return t, nil
}

func wholeNumber(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		if n != float64(int64(n)) {
			return 0, errors.New("not a whole number")
		}
		return int64(n), nil
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	default:
		return 0, errors.New("not a number")
	}
}

// readClaims reads iss, sub and access from the JWT's payload. The relay
// does not verify the signature: the token comes from Vault over the
// relay's own connection, and the registry verifies it.
func (t *mintedToken) readClaims() error {
	parts := strings.Split(t.Token, ".")
	if len(parts) != 3 {
		return errors.New("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return errors.New("token payload is not base64url")
	}
	var claims struct {
		Issuer  string        `json:"iss"`
		Subject string        `json:"sub"`
		Access  []accessEntry `json:"access"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return errors.New("token payload is not a JSON claim set")
	}
	t.Issuer, t.Subject, t.Access = claims.Issuer, claims.Subject, claims.Access
	return nil
}
