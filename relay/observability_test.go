package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestConfig_observabilityKeys(t *testing.T) {
	base := "storage:\n  vault:\n    addresses: [http://127.0.0.1:8200]\n    auth_token: hvs.x\n%s"
	cases := []struct{ name, yaml, wantErr string }{
		{"json logs", "log:\n  format: json\nhttp:\n  addr: :5002\n", ""},
		{"text logs", "log:\n  format: TEXT\nhttp:\n  addr: :5002\n", ""},
		{"bad log format", "log:\n  format: xml\nhttp:\n  addr: :5002\n", `line 6: log.format: want text or json, got "xml"`},
		{"metrics addr", "http:\n  addr: :5002\n  metrics_addr: 127.0.0.1:9102\n", ""},
		{"metrics addr without port", "http:\n  addr: :5002\n  metrics_addr: localhost\n", "http.metrics_addr: want host:port"},
		{"metrics addr same as addr", "http:\n  addr: :5002\n  metrics_addr: :5002\n", "http.metrics_addr: must differ from http.addr"},
		{"proxies", "http:\n  addr: :5002\n  trusted_proxies: [10.0.0.0/8, 192.168.1.7, \"::1\"]\n", ""},
		{"proxy not an address", "http:\n  addr: :5002\n  trusted_proxies: [lb.example.com]\n", `http.trusted_proxies: want an IP address or CIDR such as 10.0.0.0/8, got "lb.example.com"`},
		{"proxy with host bits", "http:\n  addr: :5002\n  trusted_proxies: [10.1.2.3/8]\n", "did you mean 10.0.0.0/8?"},
		{"proxies not a list", "http:\n  addr: :5002\n  trusted_proxies: 10.0.0.0/8\n", "http.trusted_proxies"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkConfigCase(t, strings.Replace(base, "%s", c.yaml, 1), c.wantErr) })
	}
}

func TestLogger_jsonFormat(t *testing.T) {
	var b bytes.Buffer
	NewConfiguredLogger(LogConfig{Level: "info", Format: "json"}, &b).Info("token request", "status", 200)
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON object: %q", b.String())
	}
	if line["@message"] != "token request" || line["@level"] != "info" || line["status"] != float64(200) {
		t.Errorf("JSON line %v", line)
	}
}

func TestClientAddress_onlyFromTrustedProxies(t *testing.T) {
	proxies, err := parseTrustedProxies([]string{"10.0.0.0/8", "192.168.1.7", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"no proxy", "203.0.113.9:4711", nil, "203.0.113.9"},
		{"untrusted peer's header ignored", "203.0.113.9:4711", []string{"198.51.100.1"}, "203.0.113.9"},
		{"trusted proxy", "10.1.2.3:4711", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client-made entries before the proxy's", "10.1.2.3:4711", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"two trusted proxies", "10.1.2.3:4711", []string{"198.51.100.1, 192.168.1.7"}, "198.51.100.1"},
		{"headers joined", "10.1.2.3:4711", []string{"198.51.100.1", "10.9.9.9"}, "198.51.100.1"},
		{"trusted proxy, no header", "10.1.2.3:4711", nil, "10.1.2.3"},
		{"garbage hop", "10.1.2.3:4711", []string{"198.51.100.1, not-an-ip"}, "10.1.2.3"},
		{"ipv6 proxy", "[::1]:4711", []string{"2001:db8::5"}, "2001:db8::5"},
		{"ipv4-mapped peer", "[::ffff:10.1.2.3]:4711", []string{"198.51.100.1"}, "198.51.100.1"},
		{"all trusted", "10.1.2.3:4711", []string{"10.0.0.1"}, "10.0.0.1"},
	}
	for _, c := range cases {
		if got := clientAddress(proxies, c.remote, c.xff); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if got := clientAddress(nil, "10.1.2.3:4711", []string{"198.51.100.1"}); got != "10.1.2.3" {
		t.Errorf("without trusted_proxies the header counts: %s", got)
	}
}

// TestServer_accessLineHasClientAndVaultRequestID: the access line names
// the client behind a trusted proxy and Vault's request_id.
func TestServer_accessLineHasClientAndVaultRequestID(t *testing.T) {
	fv := newPluginVault(t, "registry")
	for _, batch := range []bool{false, true} {
		s, logs := newTestRelay(t, fv.URL, func(c *Config) {
			c.HTTP.TrustedProxies = []string{"192.0.2.0/24"}
			c.Storage.Vault.Batch = &batch
		})
		r := httptest.NewRequest(http.MethodGet, "/auth?service=registry&scope=repository:a/b:pull", nil)
		r.RemoteAddr = "192.0.2.10:5555"
		r.Header.Set("X-Forwarded-For", "198.51.100.23")
		r.Header.Set("Authorization", basic("alice", "pw"))
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("batch=%v: %d %s", batch, w.Code, w.Body.String())
		}
		log := logs.String()
		if !strings.Contains(log, "remote=198.51.100.23") || !strings.Contains(log, "vault_request_id="+fv.requestID(t, "token")) {
			t.Errorf("batch=%v: the access line lacks the client or Vault's request_id:\n%s", batch, log)
		}
	}
}

// TestServer_batchedTokensLogTheBatchRequestID: a token minted in a
// token/batch call logs that call's request_id.
func TestServer_batchedTokensLogTheBatchRequestID(t *testing.T) {
	fv := newPluginVault(t, "registry")
	fv.token = slowMint(fv, 20*time.Millisecond)
	s, logs := newTestRelay(t, fv.URL)
	good := func(int) string { return "pw" }
	burst(s, 20, good) // the credentials get proven
	for i, a := range burst(s, 20, good) {
		if a.status != http.StatusOK {
			t.Fatalf("request %d: %d", i, a.status)
		}
	}
	if fv.batches.Load() == 0 {
		t.Fatal("no token/batch call")
	}
	if !strings.Contains(logs.String(), "vault_request_id="+fv.requestID(t, "token/batch")) {
		t.Errorf("no access line carries the batch call's request_id")
	}
}

// TestServer_metricsAddrMovesMetrics: with http.metrics_addr, /metrics is
// served there and no longer on the public listener.
func TestServer_metricsAddrMovesMetrics(t *testing.T) {
	fv := newPluginVault(t, "registry")
	public, _ := newTestRelay(t, fv.URL)
	if w := getPath(public.Handler(), "/metrics"); w.Code != http.StatusOK {
		t.Fatalf("without metrics_addr, public /metrics: %d, want 200 (as before)", w.Code)
	}
	s, _ := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.MetricsAddr = "127.0.0.1:0" })
	if w := getPath(s.Handler(), "/metrics"); w.Code != http.StatusNotFound {
		t.Errorf("public /metrics with metrics_addr: %d, want 404", w.Code)
	}
	if err := s.ListenMetrics(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get("http://" + s.metricsListener.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "godoauth_relay_build_info{") {
		t.Errorf("metrics_addr /metrics: %d, build_info missing:\n%.400s", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("public listener /metrics: %d, want 404", resp.StatusCode)
	}
}

// TestMetrics_vaultCallsAndServiceLabelInOutage: the Vault call histogram
// has a series by path, and a service served before keeps its label when
// an outage makes its mount check fail.
func TestMetrics_vaultCallsAndServiceLabelInOutage(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != http.StatusOK {
		t.Fatalf("%d", w.Code)
	}
	s.vault.mounts.forget("registry") // its answer aged out
	fv.probe = func(w http.ResponseWriter, _ *http.Request) { vaultError(w, 503, "Vault is sealed") }
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("in the outage: %d", w.Code)
	}
	if w := get(s, "service=made-up", basic("alice", "pw")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("made-up in the outage: %d", w.Code)
	}
	text := getPath(s.Handler(), "/metrics").Body.String()
	for _, want := range []string{
		`godoauth_relay_requests_total{outcome="unavailable",service="registry"} 1`,
		`godoauth_relay_requests_total{outcome="unavailable",service="invalid"} 1`,
		`godoauth_relay_vault_request_duration_seconds_count{path="ca/pem",status="200"} 1`,
		`godoauth_relay_vault_request_duration_seconds_count{path="ca/pem",status="503"}`,
		`godoauth_relay_build_info{goversion=`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "made-up") {
		t.Error("a made-up service became a label")
	}
}

func TestVaultCallPath_leavesOutWhatVaries(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/registry/token":            "token",
		"/v1/team-a/token/batch":        "token/batch",
		"/v1/anything-at-all/ca/pem":    "ca/pem",
		"/v1/registry/token/identity":   "token/identity",
		"/v1/registry/users/alice":      "other",
		"/v1/sys/health":                "sys/health",
		"/v1/auth/token/renew-self":     "auth/token/renew-self",
		"/v1/auth/approle/login":        "auth/approle/login",
		"/v1/auth/ldap/login/some.user": "auth/ldap/login",
		"/v1/auth/userpass/users/x":     "auth/other",
	} {
		if got := vaultCallPath(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

func getPath(h http.Handler, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

// TestMetrics_referenceNamesEveryMetric: docs/METRICS.md names every
// metric of the relay's registry.
func TestMetrics_referenceNamesEveryMetric(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	doc, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	families, err := s.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/METRICS.md does not name %s", name)
		}
	}
}

// TestServer_clientAddressGoesToThePlugin: token, token/refresh and
// token/batch carry the client's address (behind a trusted proxy, the
// client's), so that access entries with networks can match it;
// token/identity, whose caller is the user's own Vault token, does not.
func TestServer_clientAddressGoesToThePlugin(t *testing.T) {
	fv := newPluginVault(t, "registry")
	for _, batch := range []bool{false, true} {
		s, _ := newTestRelay(t, fv.URL, func(c *Config) {
			c.HTTP.TrustedProxies = []string{"192.0.2.0/24"}
			c.Storage.Vault.Batch = &batch
		})
		for _, c := range []struct {
			name, remote, xff, auth, query, path, want string
		}{
			{"peer", "203.0.113.5:4000", "198.51.100.23", basic("alice", "pw"), "", "registry/token", "203.0.113.5"},
			{"behind a trusted proxy", "192.0.2.10:4000", "198.51.100.23", basic("alice", "pw"), "", "registry/token", "198.51.100.23"},
			{"ipv6 peer", "[2001:db8::7]:4000", "", basic("alice", "pw"), "", "registry/token", "2001:db8::7"},
			{"ipv4-mapped peer", "[::ffff:203.0.113.5]:4000", "", basic("alice", "pw"), "", "registry/token", "203.0.113.5"},
			{"anonymous", "203.0.113.6:4000", "", "", "", "registry/token", "203.0.113.6"},
			{"not an address", "pipe", "", basic("alice", "pw"), "", "registry/token", ""},
		} {
			r := httptest.NewRequest(http.MethodGet, "/auth?service=registry&scope=repository:a/b:pull"+c.query, nil)
			r.RemoteAddr = c.remote
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("batch=%v %s: %d %s", batch, c.name, w.Code, w.Body.String())
			}
			_, sent, _ := fv.last()
			got, _ := sent["client_addr"].(string)
			if got != c.want {
				t.Errorf("batch=%v %s: client_addr %q, want %q (body %v)", batch, c.name, got, c.want, sent)
			}
		}
	}
}
