package relay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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
		{"kubernetes", "    kubernetes:\n      role: godoauth-relay\n", ""},
		{"kubernetes at a jwt mount", "    kubernetes:\n      role: r\n      mount: jwt\n      token_file: /var/run/sa/token\n", ""},
		{"kubernetes without role", "    kubernetes:\n      mount: jwt\n", "storage.vault.kubernetes.role: required"},
		{"kubernetes bad role", "    kubernetes:\n      role: a/b\n", "storage.vault.kubernetes.role: want a role name"},
		{"kubernetes bad mount", "    kubernetes:\n      role: r\n      mount: \"a b\"\n", "storage.vault.kubernetes.mount"},
		{"kubernetes and approle", "    kubernetes:\n      role: r\n    approle:\n      role_id: r\n      secret_id_file: /s\n", "set only one of"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkConfigCase(t, strings.Replace(base, "%s", c.vault, 1), c.wantErr) })
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
	fv := newPluginVault(t, "registry")
	s, logs := newTestRelay(t, fv.URL)
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
	fv := newPluginVault(t, "registry")
	s, logs := newTestRelay(t, fv.URL, func(c *Config) { c.Storage.Vault.AuthToken = otherToken })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for counterValue(s.token.errorsByKind.WithLabelValues("renew")) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := counterValue(s.token.errorsByKind.WithLabelValues("renew")); n != 1 {
		t.Fatalf("renew troubles %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "[ERROR]") || !strings.Contains(logs.String(), "auth/token/renew-self") {
		t.Errorf("no ERROR line naming auth/token/renew-self:\n%s", logs.String())
	}
}

// TestTokenKeeper_tokenFileFollowed: a new token in the file is used for
// the next request, the old one no more.
func TestTokenKeeper_tokenFileFollowed(t *testing.T) {
	tv := newTokenVault(t)
	tv.known("hvs.first", fakeTokenPeriod)
	tv.known("hvs.second", fakeTokenPeriod)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("hvs.first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestRelay(t, tv.URL, func(c *Config) {
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
	if n := countOf(tv.called("auth/token/lookup-self"), "hvs.second"); n == 0 {
		t.Error("the new token was not looked up at Vault")
	}
	// An empty file (a writer caught midway) keeps the token in use.
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * tokenFilePoll)
	if got := s.vault.client.Token(); got != "hvs.second" {
		t.Errorf("token after the file emptied %q, want hvs.second kept", got)
	}
	if n := counterValue(s.token.errorsByKind.WithLabelValues("file")); n != 1 {
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

// checkConfigCase parses and validates a file: no error when wantErr is
// empty, else an error holding wantErr.
func checkConfigCase(t *testing.T, yaml, wantErr string) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err == nil {
		err = cfg.Validate()
	}
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		t.Errorf("error %v, want one with %q", err, wantErr)
	}
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countOf(tokens []string, token string) int {
	n := 0
	for _, t := range tokens {
		if t == token {
			n++
		}
	}
	return n
}

// writeTokenFile replaces the token file as Vault Agent's sink does.
func writeTokenFile(t *testing.T, file, content string) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

func tokenFileRelay(t *testing.T, addr, first string) (*Server, *syncBuffer, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	writeTokenFile(t, file, first+"\n")
	s, logs := newTestRelay(t, addr, func(c *Config) {
		c.Storage.Vault.AuthToken, c.Storage.Vault.AuthTokenFile = "", file
	})
	return s, logs, file
}

// TestTokenKeeper_tokenFileRenewed: a renewable token read from
// auth_token_file is renewed by the relay, and after the file changes the
// new token is renewed and the old one no more.
func TestTokenKeeper_tokenFileRenewed(t *testing.T) {
	tv := newTokenVault(t)
	tv.known("hvs.file-first", 2) // renewed about every second and a half
	tv.known("hvs.file-second", 2)
	s, logs, file := tokenFileRelay(t, tv.URL, "hvs.file-first")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	waitUntil(t, "two renewals of the first token", func() bool {
		return countOf(tv.called("auth/token/renew-self"), "hvs.file-first") >= 2
	})
	writeTokenFile(t, file, "hvs.file-second\n")
	waitUntil(t, "two renewals of the second token", func() bool {
		return countOf(tv.called("auth/token/renew-self"), "hvs.file-second") >= 2
	})
	before := countOf(tv.called("auth/token/renew-self"), "hvs.file-first")
	time.Sleep(3 * time.Second)
	if after := countOf(tv.called("auth/token/renew-self"), "hvs.file-first"); after > before+1 {
		t.Errorf("the first token was renewed %d more times after the switch", after-before)
	}
	if got := s.vault.client.Token(); got != "hvs.file-second" {
		t.Errorf("token in use %q, want hvs.file-second", got)
	}
	if s.token.expiry.Load() == 0 || s.token.lease.Load() != 2 {
		t.Errorf("expiry %d, lease %d: want both known", s.token.expiry.Load(), s.token.lease.Load())
	}
	if strings.Contains(logs.String(), "hvs.file-") {
		t.Error("the relay logged a token")
	}
}

// TestTokenKeeper_refusedTokenFileKeepsTheWorkingToken: a new token in the
// file that Vault refuses (a truncated write) is not used: the working
// token stays, an ERROR says why, and the bad token is looked up once.
func TestTokenKeeper_refusedTokenFileKeepsTheWorkingToken(t *testing.T) {
	tv := newTokenVault(t)
	tv.known("hvs.file-good", fakeTokenPeriod)
	s, logs, file := tokenFileRelay(t, tv.URL, "hvs.file-good")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	writeTokenFile(t, file, "hvs.file-go") // cut short
	waitUntil(t, "the file error", func() bool { return counterValue(s.token.errorsByKind.WithLabelValues("file")) >= 1 })
	time.Sleep(3 * tokenFilePoll)
	if got := s.vault.client.Token(); got != "hvs.file-good" {
		t.Fatalf("token in use %q, want the working hvs.file-good", got)
	}
	if n := countOf(tv.called("auth/token/lookup-self"), "hvs.file-go"); n != 1 {
		t.Errorf("the refused token was looked up %d times, want once", n)
	}
	if n := counterValue(s.token.errorsByKind.WithLabelValues("file")); n != 1 {
		t.Errorf("file troubles %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "[ERROR]") || !strings.Contains(logs.String(), "refuses the new token in auth_token_file") {
		t.Errorf("no ERROR saying Vault refused the new token:\n%s", logs.String())
	}
	if reason := s.token.refusedReason(); reason != "" {
		t.Errorf("the working token counts as refused: %q", reason)
	}
	// A good token after it is used.
	tv.known("hvs.file-fixed", fakeTokenPeriod)
	writeTokenFile(t, file, "hvs.file-fixed")
	waitUntil(t, "the fixed token", func() bool { return s.vault.client.Token() == "hvs.file-fixed" })
}

// TestTokenKeeper_invalidTokenBlamedOnTheToken: a token Vault does not know
// is reported as invalid or expired (not as a policy without renew-self),
// and /healthz is 503 while /livez stays 200.
func TestTokenKeeper_invalidTokenBlamedOnTheToken(t *testing.T) {
	tv := newTokenVault(t)
	s, logs := newTestRelay(t, tv.URL, func(c *Config) { c.Storage.Vault.AuthToken = "hvs.revoked-token" })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	waitUntil(t, "the invalid-token error", func() bool {
		return counterValue(s.token.errorsByKind.WithLabelValues("invalid")) >= 1
	})
	log := logs.String()
	if !strings.Contains(log, "[ERROR]") || !strings.Contains(log, "token invalid or expired") {
		t.Errorf("no ERROR saying the token is invalid or expired:\n%s", log)
	}
	if strings.Contains(log, "renew-self") {
		t.Errorf("the log blames the policy:\n%s", log)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "token invalid or expired") {
		t.Errorf("/healthz: %d %s, want 503 naming the token", w.Code, w.Body.String())
	}
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/livez", nil))
	if w.Code != http.StatusOK {
		t.Errorf("/livez: %d, want 200", w.Code)
	}
	if n := countOf(tv.called("auth/token/renew-self"), "hvs.revoked-token"); n != 0 {
		t.Errorf("renewed an invalid token %d times", n)
	}
}

// TestTokenKeeper_refusedCallRechecksTheToken: a token that Vault stops
// taking while the relay runs (revoked) turns /healthz 503 after the first
// refused call.
func TestTokenKeeper_refusedCallRechecksTheToken(t *testing.T) {
	fv := newPluginVault(t, "registry")
	s, _ := newTestRelay(t, fv.URL)
	health := func() int {
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return w.Code
	}
	if code := health(); code != http.StatusOK {
		t.Fatalf("/healthz %d before", code)
	}
	fv.RevokeToken(relayToken)
	if w := get(s, "service=registry", basic("alice", "pw")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("token request with a revoked relay token: %d", w.Code)
	}
	waitUntil(t, "/healthz 503", func() bool {
		time.Sleep(healthTTL)
		return health() == http.StatusServiceUnavailable
	})
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if !strings.Contains(w.Body.String(), `"token":"refused: token invalid or expired"`) {
		t.Errorf("/healthz %s, want the token named", w.Body.String())
	}
}

// TestTokenKeeper_appRoleRevokesTheTokenItReplaces: after a failed renewal
// the keeper logs in again and revokes the token it no longer uses.
func TestTokenKeeper_appRoleRevokesTheTokenItReplaces(t *testing.T) {
	tv := newTokenVault(t)
	tv.logins = []string{"hvs.approle-1", "hvs.approle-2"}
	tv.renewOK = func(token string) bool { return token != "hvs.approle-1" }
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte("s-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := newTestRelay(t, tv.URL, func(c *Config) {
		c.Storage.Vault.AuthToken = ""
		c.Storage.Vault.AppRole = AppRoleConfig{RoleID: "r-1", SecretIDFile: secretFile}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	waitUntil(t, "the revocation of the first token", func() bool {
		return countOf(tv.called("auth/token/revoke-self"), "hvs.approle-1") == 1
	})
	if got := s.vault.client.Token(); got != "hvs.approle-2" {
		t.Errorf("token in use %q, want hvs.approle-2", got)
	}
	if n := countOf(tv.called("auth/token/revoke-self"), "hvs.approle-2"); n != 0 {
		t.Errorf("revoked the token in use")
	}
	if strings.Contains(logs.String(), "hvs.approle-") {
		t.Error("the relay logged a token")
	}
}

// TestTokenKeeper_kubernetesLogin: the relay logs in at the Kubernetes (or
// jwt) mount with its role and the service-account token read from its
// file at each login, renews, and logs in again after a failed renewal
// with the token the file holds then.
func TestTokenKeeper_kubernetesLogin(t *testing.T) {
	tv := newTokenVault(t)
	tv.logins = []string{"hvs.k8s-1", "hvs.k8s-2"}
	tv.renewOK = func(token string) bool { return token != "hvs.k8s-1" }
	saToken := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(saToken, []byte("eyJ.first.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := newTestRelay(t, tv.URL, func(c *Config) {
		c.Storage.Vault.AuthToken = ""
		c.Storage.Vault.Kubernetes = KubernetesConfig{Role: "godoauth-relay", Mount: "jwt", TokenFile: saToken}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.token.start(ctx)
	if got := s.vault.client.Token(); got != "hvs.k8s-1" {
		t.Fatalf("token after start %q", got)
	}
	if err := os.WriteFile(saToken, []byte("eyJ.rotated.sig"), 0o600); err != nil { // the kubelet rotates it
		t.Fatal(err)
	}
	waitUntil(t, "the second login", func() bool { return s.vault.client.Token() == "hvs.k8s-2" })
	want := []map[string]any{
		{"path": "/v1/auth/jwt/login", "role": "godoauth-relay", "jwt": "eyJ.first.sig"},
		{"path": "/v1/auth/jwt/login", "role": "godoauth-relay", "jwt": "eyJ.rotated.sig"},
	}
	if bodies := tv.loginBodies(); fmt.Sprint(bodies) != fmt.Sprint(want) {
		t.Errorf("logins %v, want %v", bodies, want)
	}
	if strings.Contains(logs.String(), "eyJ.") {
		t.Error("the relay logged the service-account token")
	}
	if !strings.Contains(logs.String(), "logged in to Vault with Kubernetes auth") {
		t.Errorf("no log line for the login:\n%s", logs.String())
	}
}

func TestJitter_spreadsRetries(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		j := jitter(time.Second)
		if j < time.Second || j > 1250*time.Millisecond {
			t.Fatalf("jitter(1s) = %s, want within [1s, 1.25s]", j)
		}
		seen[j] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 retries waited only %d different times", len(seen))
	}
}
