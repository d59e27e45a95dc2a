package relay

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// replayMint makes fv answer every token call with one answer the plugin
// gave alice, so that a benchmark measures the relay's work, not the
// plugin's password check and signature.
func replayMint(b *testing.B, fv *pluginVault) {
	req, _ := http.NewRequest(http.MethodPut, fv.URL+"/v1/registry/token",
		strings.NewReader(`{"username":"alice","password":"s3cret","scope":["repository:linux/app:pull,push"]}`))
	req.Header.Set("X-Vault-Token", relayToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("the plugin's answer: %d %s %v", resp.StatusCode, answer, err)
	}
	fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}
}

// BenchmarkAuth_GET is one token request through the relay's HTTP server
// to a stand-in Vault over loopback (replaying the plugin's answer), both
// in this process.
func BenchmarkAuth_GET(b *testing.B) {
	fv := newPluginVault(b, "registry")
	replayMint(b, fv)
	cfg := testConfig(fv.URL)
	cfg.Log.Level = "info"
	s, err := New(cfg, NewLogger("info", io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	relay := httptest.NewServer(s.Handler())
	defer relay.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	target := relay.URL + "/auth?service=registry&scope=repository:linux/app:pull,push&account=alice"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, target, nil)
			req.SetBasicAuth("alice", "s3cret")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkHandler_POST is the relay's own work for an OAuth2 request,
// without the client's HTTP round trip.
func BenchmarkHandler_POST(b *testing.B) {
	fv := newPluginVault(b, "registry")
	replayMint(b, fv)
	s, err := New(testConfig(fv.URL), NewLogger("info", io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"},
		"service": {"registry"}, "scope": {"repository:linux/app:pull,push"}}.Encode()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/auth", strings.NewReader(form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, r)
			if w.Code != 200 {
				b.Errorf("status %d", w.Code)
				return
			}
		}
	})
}
