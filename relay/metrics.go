package relay

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// vaultTroubles are the kinds of the vault_errors_total counter.
var vaultTroubles = []string{"unreachable", "timeout", "sealed", "forbidden", "server_error", "unexpected", "bad_answer", "busy"}

type metrics struct {
	registry    *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	vaultErrors *prometheus.CounterVec
	failovers   prometheus.Counter
	batches     prometheus.Counter
	batched     prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_requests_total",
			Help: "Token requests by service (\"invalid\" when it names no plugin mount) and outcome.",
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
	for _, k := range vaultTroubles {
		m.vaultErrors.WithLabelValues(k)
	}
	m.registry.MustRegister(m.requests, m.duration, m.vaultErrors, m.failovers, m.batches, m.batched,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
