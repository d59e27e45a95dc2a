package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	maxHeaderBytes = 16 << 10
	maxBodyBytes   = 64 << 10
	idleTimeout    = 2 * time.Minute
	healthTTL      = time.Second
)

// Server is the relay: godoauth's token endpoint in front of the plugin.
type Server struct {
	cfg     Config
	log     hclog.Logger
	vault   *vault
	token   *tokenKeeper // the relay's own Vault token (vaulttoken.go)
	metrics *metrics
	handler http.Handler
	timeout time.Duration // http.timeout: the whole of one request

	metricsHandler  http.Handler // http.metrics_addr's handler; nil: /metrics is on handler
	metricsListener net.Listener // http.metrics_addr, opened by ListenMetrics
	served          servedServices

	identities *identities // Vault identities' requests (identity.go)

	cert atomic.Pointer[tls.Certificate] // http.tls, reloaded on SIGHUP

	healthMu    sync.Mutex
	healthAt    time.Time
	healthState string
	healthOK    bool
	healthNodes map[string]string // each Vault node's state, for a cluster
}

// New makes a relay from a configuration (validated here) and a logger.
// It does not contact Vault.
func New(cfg *Config, logger hclog.Logger) (*Server, error) {
	c := *cfg
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: c, log: logger, metrics: newMetrics(), timeout: time.Duration(c.HTTP.Timeout)}
	var err error
	if s.vault, err = newVault(&c, logger, s.metrics); err != nil {
		return nil, err
	}
	s.token = newTokenKeeper(c.Storage.Vault, s.vault.client, logger, s.metrics.registry)
	s.vault.tokenRefused = s.token.recheck
	s.identities = newIdentities(&c, s.metrics)
	if c.HTTP.TLS.Enabled() {
		if err := s.ReloadTLS(); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/auth", s.serveAuth)
	mux.HandleFunc("/server-ping", serverPing)
	mux.HandleFunc("/livez", serveLive)
	mux.HandleFunc("/healthz", s.serveHealth)
	if c.HTTP.MetricsAddr == "" {
		mux.Handle("/metrics", s.metrics.handler()) // public, as godoauth-relay always did
	} else {
		m := http.NewServeMux()
		m.Handle("/metrics", s.metrics.handler())
		m.HandleFunc("/livez", serveLive)
		s.metricsHandler = m
	}
	s.handler = withClientAddr(c.HTTP.proxies, mux)
	return s, nil
}

// Handler is the relay's HTTP handler: /auth, /server-ping, /livez,
// /healthz, and /metrics unless http.metrics_addr moves it.
func (s *Server) Handler() http.Handler { return s.handler }

// MetricsHandler is http.metrics_addr's handler (/metrics, /livez), or
// nil when /metrics is on Handler.
func (s *Server) MetricsHandler() http.Handler { return s.metricsHandler }

// ListenMetrics opens http.metrics_addr, when it is set, for Serve.
func (s *Server) ListenMetrics() error {
	if s.metricsHandler == nil || s.metricsListener != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.HTTP.MetricsAddr)
	if err != nil {
		return fmt.Errorf("http.metrics_addr: %w", err)
	}
	s.metricsListener = ln
	return nil
}

// ReloadTLS loads http.tls's certificate and key again; on error the old
// pair stays in use.
func (s *Server) ReloadTLS() error {
	t := s.cfg.HTTP.TLS
	if !t.Enabled() {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(t.Certificate, t.Key)
	if err != nil {
		return fmt.Errorf("http.tls: cannot load certificate %s and key %s: %w", quote(t.Certificate), quote(t.Key), err)
	}
	s.cert.Store(&cert)
	return nil
}

// Serve answers on ln (with TLS when http.tls is set) until ctx is done,
// then lets the requests in flight finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.timeout,
		ReadTimeout:       s.timeout,
		WriteTimeout:      s.timeout + time.Second, // room to answer 503 when the deadline hits
		IdleTimeout:       max(idleTimeout, s.timeout),
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	s.token.start(ctx)
	ln = sendBoundListener{ln}
	if s.metricsListener != nil {
		ms := &http.Server{Handler: s.metricsHandler, ReadHeaderTimeout: s.timeout, ReadTimeout: s.timeout,
			WriteTimeout: s.timeout + time.Second, MaxHeaderBytes: maxHeaderBytes}
		go func() { _ = ms.Serve(s.metricsListener) }()
		defer ms.Close()
	}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.HTTP.TLS.Enabled() {
			srv.TLSConfig = &tls.Config{
				MinVersion: tls.VersionTLS12,
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					return s.cert.Load(), nil
				},
			}
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: finishing the requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 2*s.timeout+5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// sendBuffer bounds the kernel's send buffer of each client connection.
// An answer is a few kilobytes; unbounded, the kernel grows the buffer to
// megabytes, and a client that sends requests back to back and never reads
// the answers has the relay mint that many megabytes of tokens, held in
// kernel memory until the write times out.
const sendBuffer = 64 << 10

type sendBoundListener struct{ net.Listener }

func (l sendBoundListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(sendBuffer)
	}
	return c, err
}

// serverPing is godoauth's health check for load balancers, answered as godoauth did.
func serverPing(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{\"message\": \"Save the Whales !\"}\n\r")
}

// serveLive is the liveness probe: 200 whenever the process serves, with
// no call to Vault (a sealed Vault must not restart every relay).
func serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

// serveHealth is 200 only when Vault answers, is unsealed, and takes the
// relay's token. The answer is remembered for a second so that a busy
// health checker cannot load Vault.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	s.healthMu.Lock()
	if time.Since(s.healthAt) > healthTTL {
		ctx, cancel := context.WithTimeout(r.Context(), s.vault.timeout)
		s.healthState, s.healthOK, s.healthNodes = s.vault.clusterHealth(ctx)
		cancel()
		s.healthAt = time.Now()
	}
	state, ok, nodes := s.healthState, s.healthOK, s.healthNodes
	s.healthMu.Unlock()
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	answer := healthAnswer(state, nodes)
	if why := s.token.refusedReason(); why != "" {
		status = http.StatusServiceUnavailable
		answer = map[string]any{"vault": state, "nodes": nodes, "token": "refused: " + why}
	}
	// A mount whose batch path Vault refuses serves every token, at a
	// third of the rate: said here, not failed (the relay is ready).
	if off := s.vault.batchingOff(); len(off) > 0 {
		m := map[string]any{"batching_off": off}
		switch a := answer.(type) {
		case map[string]string:
			for k, v := range a {
				m[k] = v
			}
		case map[string]any:
			maps.Copy(m, a)
		}
		answer = m
	}
	writeJSON(w, status, answer)
}

// clusterHealth is /healthz's answer: for one Vault address its state;
// for a cluster, whether some node can serve and each node's state.
func (v *vault) clusterHealth(ctx context.Context) (string, bool, map[string]string) {
	if len(v.nodes.list) == 1 {
		state, ok := v.health(ctx)
		return state, ok, nil
	}
	states, ok := v.nodes.report(ctx)
	if !ok {
		return "no node unsealed and serving", false, states
	}
	return "unsealed", true, states
}

func healthAnswer(state string, nodes map[string]string) any {
	if nodes == nil {
		return map[string]string{"vault": state}
	}
	return map[string]any{"vault": state, "nodes": nodes}
}

// exchange is one token request as the log and the metrics see it.
type exchange struct {
	req       *tokenRequest
	service   string // metric label: a checked mount, else "invalid"
	user      string
	status    int
	granted   int
	reason    string // failure.reason
	requestID string // Vault's request_id of the call that minted, to join Vault's audit log
}

// serveAuth is the token endpoint: parse, check the mount, mint, answer.
func (s *Server) serveAuth(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	x := exchange{service: invalidService}
	defer s.record(r, &x, start)

	oauth := r.Method == http.MethodPost
	req, f := readTokenRequest(w, r, s.identities.jwt)
	if f == nil {
		req.ClientAddr = pluginClientAddr(clientAddr(r))
		x.req, x.user = req, req.Username
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		if f = s.vault.checkMount(ctx, req.Service); f == nil {
			x.service = req.Service
			s.served.add(req.Service)
			var t *mintedToken
			if t, f = s.route(ctx, req); f == nil {
				x.status, x.granted, x.user, x.requestID = http.StatusOK, len(t.Access), t.Subject, t.RequestID
				writeToken(w, t, oauth)
				return
			}
		}
	}
	x.status, x.reason = f.status, f.reason
	if x.req != nil && x.service == invalidService && f.status == http.StatusServiceUnavailable && s.served.has(x.req.Service) {
		x.service = x.req.Service // an outage: a service served before keeps its label
	}
	writeFailure(w, f, oauth)
}

// readTokenRequest reads GET (query and Basic credentials) or POST (OAuth2 form);
// jwt names the users whose password may be a JWT.
func readTokenRequest(w http.ResponseWriter, r *http.Request, jwt jwtUsers) (*tokenRequest, *failure) {
	switch r.Method {
	case http.MethodGet:
		if len(r.Header.Values("Authorization")) > 1 {
			return nil, badRequest("more than one Authorization header")
		}
		return parseTokenQuery(r.URL.RawQuery, r.Header.Get("Authorization"), jwt)
	case http.MethodPost:
		if ct := r.Header.Get("Content-Type"); ct != "" {
			mt, _, err := mime.ParseMediaType(ct)
			if err != nil || mt != "application/x-www-form-urlencoded" {
				return nil, badRequest("want Content-Type application/x-www-form-urlencoded, got %s", quote(ct))
			}
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, &failure{status: http.StatusRequestEntityTooLarge, oauthCode: "invalid_request",
					msg: fmt.Sprintf("request body larger than %d bytes", maxBodyBytes)}
			}
			return nil, badRequest("cannot read the request body")
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, badRequest("malformed form body")
		}
		return parseTokenForm(form, jwt)
	default:
		w.Header().Set("Allow", "GET, POST")
		return nil, &failure{status: http.StatusMethodNotAllowed, oauthCode: "invalid_request",
			msg: "method " + quote(r.Method) + " not allowed; use GET or POST"}
	}
}

// record counts the request and logs one line for it: never a password,
// a token or the Authorization header.
func (s *Server) record(r *http.Request, x *exchange, start time.Time) {
	d := time.Since(start)
	o := outcome(x.status)
	s.metrics.requests.WithLabelValues(x.service, o).Inc()
	s.metrics.duration.WithLabelValues(o).Observe(d.Seconds())
	if !s.log.IsInfo() {
		return
	}
	args := []any{"method", r.Method, "remote", clientAddr(r), "status", x.status, "duration", d}
	if x.req != nil {
		args = append(args, "service", x.req.Service, "user", x.user, "grant", x.req.grantType(),
			"requested", len(x.req.Scopes), "granted", x.granted)
	}
	if x.reason != "" {
		args = append(args, "reason", x.reason)
	}
	if x.requestID != "" {
		args = append(args, "vault_request_id", x.requestID)
	}
	s.log.Info("token request", args...)
}
