package relay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestConfig_tokenSourceIsExactlyOne(t *testing.T) {
	base := "storage:\n  vault:\n    proto: http\n    host: 127.0.0.1\n    port: 8200\n%shttp:\n  addr: :5002\n"
	cases := []struct {
		name, vault, wantErr string
	}{
		{"auth_token", "    auth_token: hvs.x\n", ""},
		{"token file", "    auth_token_file: /run/token\n", ""},
		{"approle", "    approle:\n      role_id: r-1\n      secret_id_file: /etc/secret-id\n", ""},
		{"approle with mount", "    approle:\n      role_id: r-1\n      secret_id_file: /s\n      mount: ci/approle\n", ""},
		{"none", "", "storage.vault.auth_token: required"},
		{"token and file", "    auth_token: hvs.x\n    auth_token_file: /run/token\n", "set only one of"},
		{"token and approle", "    auth_token: hvs.x\n    approle:\n      role_id: r\n      secret_id_file: /s\n", "set only one of"},
		{"approle without role_id", "    approle:\n      secret_id_file: /s\n", "storage.vault.approle.role_id: required"},
		{"approle without secret file", "    approle:\n      role_id: r\n", "storage.vault.approle.secret_id_file: required"},
		{"approle bad mount", "    approle:\n      role_id: r\n      secret_id_file: /s\n      mount: \"a b\"\n", "storage.vault.approle.mount"},
		{"approle unknown key", "    approle:\n      role: r\n", "storage.vault.approle.role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(strings.Replace(base, "%s", c.vault, 1)))
			if err == nil {
				err = cfg.Validate()
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("error %v, want one with %q", err, c.wantErr)
			}
		})
	}
	// VAULT_TOKEN in the environment with approle in the file: which one
	// the relay uses would be a guess.
	cfg, err := ParseConfig([]byte(strings.Replace(base, "%s", "    approle:\n      role_id: r\n      secret_id_file: /s\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	_ = cfg.ApplyEnv(func(k string) string { return map[string]string{"VAULT_TOKEN": "hvs.env"}[k] })
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "set only one of") {
		t.Errorf("VAULT_TOKEN with approle: %v", err)
	}
}

// TestTokenKeeper_renewsAPeriodicToken: at start the relay renews its own
// token and publishes when it expires.
func TestTokenKeeper_renewsAPeriodicToken(t *testing.T) {
	fv := newFakeVault(t, "registry")
	s, logs := newTestRelay(t, fv.srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for counterValue(s.token.renewals) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := counterValue(s.token.renewals); n < 1 {
		t.Fatalf("renewals %v, want ≥1; log:\n%s", n, logs.String())
	}
	if left := time.Until(time.Unix(s.token.expiry.Load(), 0)); left < fakeTokenPeriod*time.Second-10*time.Second || left > fakeTokenPeriod*time.Second {
		t.Errorf("expiry in %s, want about %ds", left, fakeTokenPeriod)
	}
	if strings.Contains(logs.String(), relayToken) {
		t.Error("the relay logged its token")
	}
}

// TestTokenKeeper_forbiddenRenewalIsLoud: a policy without renew-self is an
// ERROR line that says what to add, and a count.
func TestTokenKeeper_forbiddenRenewalIsLoud(t *testing.T) {
	fv := newFakeVault(t, "registry")
	s, logs := newTestRelay(t, fv.srv.URL, func(c *Config) { c.Storage.Vault.AuthToken = "hvs.other-token" })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for counterValue(s.token.troubles.WithLabelValues("renew")) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := counterValue(s.token.troubles.WithLabelValues("renew")); n != 1 {
		t.Fatalf("renew troubles %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "[ERROR]") || !strings.Contains(logs.String(), "auth/token/renew-self") {
		t.Errorf("no ERROR line naming auth/token/renew-self:\n%s", logs.String())
	}
}

// TestTokenKeeper_tokenFileFollowed: a new token in the file is used for
// the next request, the old one no more.
func TestTokenKeeper_tokenFileFollowed(t *testing.T) {
	var seen atomic.Value
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("X-Vault-Token"))
		w.WriteHeader(http.StatusNotFound)
	}))
	defer vault.Close()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("hvs.first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestRelay(t, vault.URL, func(c *Config) {
		c.Storage.Vault.AuthToken, c.Storage.Vault.AuthTokenFile = "", file
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	if got := s.vault.client.Token(); got != "hvs.first" {
		t.Fatalf("token after start %q, want hvs.first", got)
	}
	if err := os.WriteFile(file, []byte("hvs.second"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.vault.client.Token() != "hvs.second" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := s.vault.client.Token(); got != "hvs.second" {
		t.Fatalf("token after the file changed %q, want hvs.second", got)
	}
	if n := counterValue(s.token.reloads); n != 2 {
		t.Errorf("file reads %v, want 2", n)
	}
	// An empty file (a writer caught midway) keeps the token in use.
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * tokenFilePoll)
	if got := s.vault.client.Token(); got != "hvs.second" {
		t.Errorf("token after the file emptied %q, want hvs.second kept", got)
	}
	if n := counterValue(s.token.troubles.WithLabelValues("file")); n != 1 {
		t.Errorf("file troubles %v over three polls of an empty file, want 1 (said once)", n)
	}
}

func TestHealthURL_fromHTTPAddr(t *testing.T) {
	for addr, want := range map[string]string{
		":5002":          "http://127.0.0.1:5002/healthz",
		"0.0.0.0:5002":   "http://127.0.0.1:5002/healthz",
		"10.0.0.7:443":   "http://10.0.0.7:443/healthz",
		"[::1]:5002":     "http://[::1]:5002/healthz",
		"localhost:5002": "http://localhost:5002/healthz",
	} {
		if got := healthURL(&Config{HTTP: HTTPConfig{Addr: addr}}); got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}
	tlsCfg := &Config{HTTP: HTTPConfig{Addr: ":5002", TLS: TLSConfig{Certificate: "c", Key: "k"}}}
	if got := healthURL(tlsCfg); got != "https://127.0.0.1:5002/healthz" {
		t.Errorf("with TLS: %s", got)
	}
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
