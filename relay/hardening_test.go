package relay

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// TestLog_neverHoldsSecrets runs real-looking requests through the relay at
// log level debug and looks for every secret in the log.
func TestLog_neverHoldsSecrets(t *testing.T) {
	const (
		password     = "Tr0ub4dor&3-correct-horse"
		refreshToken = "rt-5f1e0c9a7d3b4e21a8c6f0d2b9e7a413"
	)
	fv := newPluginVault(t, "registry")
	var mu sync.Mutex
	var minted []string
	fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if rt, _ := body["refresh_token"].(string); rt != "" && rt != refreshToken {
			pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeInvalidGrant, Message: "invalid refresh token"})
			return
		}
		user, _ := body["username"].(string)
		if pw, _ := body["password"].(string); user != "" && pw != password {
			pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeInvalidCredentials, Message: "invalid username or password"})
			return
		}
		tok := fakeJWT(map[string]any{"iss": "Token", "sub": "alice", "jti": time.Now().String(),
			"access": []tokenapi.Grant{{Type: "repository", Name: "a", Actions: []string{"pull"}}}})
		mu.Lock()
		minted = append(minted, tok)
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"data": map[string]any{"token": tok, "access_token": tok,
			"expires_in": 300, "refresh_token": refreshToken}})
	}
	s, logs := newTestRelay(t, fv.URL, func(c *Config) { c.Log.Level = "debug" })
	relay := httptest.NewServer(s.Handler())
	defer relay.Close()
	s.logStart("testdata/godoauth.yaml")

	authorization := basic("alice", password)
	do := func(req *http.Request) {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, q := range []string{"service=registry&offline_token=true&scope=repository:a:pull", "service=nope", "service=a/b"} {
		req, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?"+q, nil)
		req.Header.Set("Authorization", authorization)
		do(req)
	}
	wrong, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?service=registry", nil)
	wrong.Header.Set("Authorization", basic("alice", password+"-wrong"))
	do(wrong)
	for _, form := range []url.Values{
		{"grant_type": {"password"}, "username": {"alice"}, "password": {password}, "service": {"registry"}, "access_type": {"offline"}},
		{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "service": {"registry"}},
		{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken + "-revoked"}, "service": {"registry"}},
		{"grant_type": {"password"}, "username": {"alice"}, "password": {password}, "service": {"registry"}, "bogus": {"1", "2"}},
	} {
		req, _ := http.NewRequest(http.MethodPost, relay.URL+"/auth", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", authorization)
		do(req)
	}
	// Vault refusing the relay's own token: the loudest log line.
	fv.token = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		vaultError(w, 403, "permission denied")
	}
	req, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?service=registry", nil)
	req.Header.Set("Authorization", authorization)
	do(req)

	log := logs.String()
	if !strings.Contains(log, "token request") || !strings.Contains(log, "[DEBUG]") {
		t.Fatalf("the log is not at debug or lacks request lines:\n%s", log)
	}
	secrets := map[string]string{
		"password":             password,
		"refresh token":        refreshToken,
		"Authorization header": strings.TrimPrefix(authorization, "Basic "),
		"relay's Vault token":  relayToken,
	}
	mu.Lock()
	if len(minted) < 2 {
		t.Fatalf("only %d tokens minted", len(minted))
	}
	for i, tok := range minted {
		secrets["token "+string(rune('0'+i))] = tok
		secrets["token payload "+string(rune('0'+i))] = strings.Split(tok, ".")[1]
	}
	mu.Unlock()
	for name, secret := range secrets {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds the %s", name)
		}
	}
	if strings.Contains(log, base64.StdEncoding.EncodeToString([]byte(password))) {
		t.Error("the log holds the password in base64")
	}
}

// TestVaultDown_goroutinesDoNotPileUp hammers the relay while Vault refuses
// connections or takes them and never answers.
func TestVaultDown_goroutinesDoNotPileUp(t *testing.T) {
	modes := map[string]func(t *testing.T) string{
		"refused": func(t *testing.T) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			return "http://" + addr
		},
		"hanging": func(t *testing.T) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var conns []net.Conn
			var mu sync.Mutex
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
			t.Cleanup(func() {
				ln.Close()
				mu.Lock()
				for _, c := range conns {
					c.Close()
				}
				mu.Unlock()
			})
			return "http://" + ln.Addr().String()
		},
	}
	for name, vaultAddr := range modes {
		t.Run(name, func(t *testing.T) {
			addr := vaultAddr(t)
			s, _ := newTestRelay(t, addr, func(c *Config) {
				c.Storage.Vault.Timeout = Duration(200 * time.Millisecond)
				c.Log.Level = "error"
			})
			relay := httptest.NewServer(s.Handler())
			defer relay.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
			defer client.CloseIdleConnections()

			before := runtime.NumGoroutine()
			var wg sync.WaitGroup
			var other sync.Map
			for range 32 {
				wg.Go(func() {
					for range 30 {
						req, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?service=registry", nil)
						req.SetBasicAuth("alice", "pw")
						resp, err := client.Do(req)
						if err != nil {
							other.Store(err.Error(), true)
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 503 {
							other.Store(resp.Status, true)
						}
					}
				})
			}
			wg.Wait()
			other.Range(func(k, _ any) bool { t.Errorf("answer other than 503: %v", k); return true })
			// Most requests were answered without waiting on Vault.
			tried := metricValue(t, s, `godoauth_relay_vault_errors_total{kind="timeout"}`) +
				metricValue(t, s, `godoauth_relay_vault_errors_total{kind="unreachable"}`)
			if tried == 0 || tried > 32*30/4 {
				t.Errorf("%v of %d requests went to Vault", tried, 32*30)
			}

			client.CloseIdleConnections()
			deadline := time.Now().Add(5 * time.Second)
			after := runtime.NumGoroutine()
			for after > before+4 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				after = runtime.NumGoroutine()
			}
			if after > before+4 {
				buf := make([]byte, 1<<20)
				t.Fatalf("goroutines %d before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}

// metricValue reads one sample from /metrics.
func metricValue(t *testing.T, s *Server, series string) float64 {
	t.Helper()
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(w.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}
