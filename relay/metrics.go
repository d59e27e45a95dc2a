package relay

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
	"github.com/vault-registry/vault-plugin-registry/version"
)

// invalidService is the service label of requests whose service did not
// name a plugin mount, so made-up names cannot grow the label set.
const invalidService = "invalid"

// Outcomes of a token request, the outcome label.
var outcomes = map[int]string{
	http.StatusOK:                    "minted",
	http.StatusBadRequest:            "bad_request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusMethodNotAllowed:      "bad_request",
	http.StatusRequestEntityTooLarge: "bad_request",
	http.StatusTooManyRequests:       "locked_out",
	http.StatusServiceUnavailable:    "unavailable",
	statusClientClosed:               "canceled",
}

func outcome(status int) string {
	if o, ok := outcomes[status]; ok {
		return o
	}
	return "error"
}

// vaultErrorKinds are the kinds of the vault_errors_total counter.
var vaultErrorKinds = []string{"unreachable", "timeout", "sealed", "forbidden", "server_error", "unexpected", "bad_answer", "busy"}

type metrics struct {
	registry    *prometheus.Registry
	vaultCalls  *prometheus.HistogramVec
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	vaultErrors *prometheus.CounterVec
	failovers   prometheus.Counter
	batches     prometheus.Counter
	batched     prometheus.Counter
	batching    *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_requests_total",
			Help: "Token requests by service (\"invalid\" when it names no plugin mount, and during an outage for a name never served) and outcome.",
		}, []string{"service", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "godoauth_relay_request_duration_seconds",
			Help:    "Time to answer a token request, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10), // 1ms to 3.8s
		}, []string{"outcome"}),
		vaultErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_vault_errors_total",
			Help: "Vault calls that failed, by kind: unreachable, timeout, sealed, forbidden (the relay's token), " +
				"server_error, unexpected, bad_answer, busy (too many calls in flight).",
		}, []string{"kind"}),
	}
	m.failovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "godoauth_relay_vault_failovers_total",
		Help: "Vault calls sent to another node of the cluster after one failed (relay/nodes.go).",
	})
	m.batches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "godoauth_relay_vault_token_batches_total",
		Help: "Calls to a mount's token/batch path: token requests that arrived while the mount's calls were in flight, sent together (relay/batch.go).",
	})
	m.batched = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "godoauth_relay_vault_batched_token_requests_total",
		Help: "Token requests sent in a token/batch call; over godoauth_relay_vault_token_batches_total, the mean batch size.",
	})
	m.batching = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "godoauth_relay_vault_batching",
		Help: "1 while a mount's token requests may go together to token/batch, 0 while Vault refuses that path " +
			"(a relay policy without <mount>/token/batch, or an older plugin): each request then costs its own call.",
	}, []string{"service"})
	m.vaultCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "godoauth_relay_vault_request_duration_seconds",
		Help: "Time of the relay's calls to Vault (with a cluster's failovers), by path with the mount left out " +
			"(token, token/batch, ca/pem, auth/token/renew-self, …) and status (the HTTP status, or error).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
	}, []string{"path", "status"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "godoauth_relay_build_info",
		Help: "1, labelled with the relay's version and the Go version it was built with.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version.Resolve(Version), runtime.Version()).Set(1)
	m.registry.MustRegister(m.vaultCalls, buildInfo)
	for _, k := range vaultErrorKinds {
		m.vaultErrors.WithLabelValues(k)
	}
	m.registry.MustRegister(m.requests, m.duration, m.vaultErrors, m.failovers, m.batches, m.batched, m.batching,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// vaultCallPath is the path label of a call to Vault: the path after /v1/
// without what varies per request (the mount of a plugin path, the user of
// a login), so that the label set stays small.
func vaultCallPath(urlPath string) string {
	p := strings.TrimPrefix(urlPath, "/v1/")
	switch {
	case strings.HasPrefix(p, "sys/"), strings.HasPrefix(p, "auth/token/"):
		return p
	case strings.HasPrefix(p, "auth/"):
		if i := strings.Index(p, "/login"); i > 0 {
			return p[:i+len("/login")] // auth/<mount>/login, without a user name
		}
		return "auth/other"
	}
	_, rest, _ := strings.Cut(p, "/") // <mount>/<path>
	switch rest {
	case tokenapi.PathToken, tokenapi.PathRefresh, tokenapi.PathTokenBatch, tokenapi.PathIdentityToken, tokenapi.PathCAPEM:
		return rest
	}
	return "other"
}

// timedTransport observes the time of each call to Vault.
type timedTransport struct {
	next  http.RoundTripper
	calls *prometheus.HistogramVec
}

func (t timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	t.calls.WithLabelValues(vaultCallPath(req.URL.Path), status).Observe(time.Since(start).Seconds())
	return resp, err
}

// servedServices are the services that once named a plugin mount: their
// name stays the service label while Vault cannot be asked (an outage),
// where a made-up name is "invalid".
type servedServices struct {
	mu    sync.Mutex
	names map[string]bool
}

// maxLabelledServices bounds servedServices (a relay serves a few mounts).
const maxLabelledServices = 1024

func (s *servedServices) add(service string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = map[string]bool{}
	}
	if len(s.names) < maxLabelledServices {
		s.names[service] = true
	}
}

func (s *servedServices) has(service string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[service]
}

// CloseIdleConnections passes on to the transport, as http.Client expects.
func (t timedTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
