//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// relayPolicyFile is the relay's least-privilege policy as deploy/ ships it.
const relayPolicyFile = "../deploy/policies/relay.hcl"

// relayTokenConfig is godoauth's YAML with the relay's Vault settings
// given whole (%s: auth_token, auth_token_file or approle, indented).
const relayTokenConfig = `version: 0.1
log:
  level: %s
storage:
  vault:
    proto: http
    host: 127.0.0.1
    port: %d
    timeout: 5s
%s
http:
  addr: 127.0.0.1:%d
  timeout: 10s
token:
  issuer: Token
  expiration: 300
`

// startRelayWith starts the relay with the given storage.vault lines.
func startRelayWith(t *testing.T, v *Vault, level, vaultLines string) *Relay {
	t.Helper()
	port := freePort(t)
	r := &Relay{
		URL:        fmt.Sprintf("http://127.0.0.1:%d", port),
		Realm:      fmt.Sprintf("http://localhost:%d/auth", port),
		ConfigPath: filepath.Join(t.TempDir(), "godoauth.yaml"),
	}
	config := fmt.Sprintf(relayTokenConfig, level, portOf(t, v.Addr), vaultLines, port)
	if err := os.WriteFile(r.ConfigPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Proc = StartProcess(t, "relay", baseEnv(t.TempDir()), bins.relay, "-config", r.ConfigPath)
	waitFor(t, "relay", r.Proc, startTimeout, func() error {
		return wantStatus(r.URL+"/healthz", http.StatusOK)
	})
	return r
}

// writeRelayPolicy writes deploy/policies/relay.hcl as the policy
// godoauth-relay, as docs/OPERATING.md says.
func writeRelayPolicy(t *testing.T, v *Vault) {
	t.Helper()
	v.CLI(t, "policy", "write", "godoauth-relay", relayPolicyFile)
}

// steadyLoad asks the relay for a token every interval for d and returns
// the count of answers by status.
func steadyLoad(t *testing.T, r *Relay, d, interval time.Duration, user, password string) map[int]int {
	t.Helper()
	statuses := map[int]int{}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		code, _, body := r.Token(t, "registry", user, password, "repository:linux/app:pull")
		statuses[code]++
		if code != http.StatusOK && statuses[code] == 1 {
			t.Logf("first %d at %s: %s", code, time.Now().Format(time.TimeOnly), truncate(body, 200))
		}
		time.Sleep(interval)
	}
	return statuses
}

// metricValue reads one unlabelled (or fully labelled) sample of /metrics.
func metricValue(t *testing.T, r *Relay, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(r.Metrics(t), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, line)
			}
			return n
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}

func tokenSetup(t *testing.T) (*Vault, *Service) {
	t.Helper()
	v := StartVault(t)
	svc := v.EnableService(t, "registry")
	svc.WriteUser(t, "alice", "alice-pw-5d1e", "repository:linux/app:pull")
	writeRelayPolicy(t, v)
	return v, svc
}

// TestRelayToken_periodicTokenRenewedByTheRelay runs the relay on a token
// with a 30 s period, made as docs/OPERATING.md says, for more than three
// periods under light load: without renewal it would expire after 30 s
// and every request after that would be a 503.
func TestRelayToken_periodicTokenRenewedByTheRelay(t *testing.T) {
	const period = 30 * time.Second
	v, _ := tokenSetup(t)
	token := strings.TrimSpace(v.CLI(t, "token", "create", "-policy=godoauth-relay", "-no-default-policy",
		"-orphan", "-period="+period.String(), "-field=token"))
	created := time.Now()
	r := startRelayWith(t, v, "debug", "    auth_token: "+token)

	statuses := steadyLoad(t, r, 3*period+10*time.Second, 250*time.Millisecond, "alice", "alice-pw-5d1e")
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Fatalf("answers by status over %s: %v; want only 200", time.Since(created).Round(time.Second), statuses)
	}
	renewals := metricValue(t, r, "godoauth_relay_vault_token_renewals_total")
	troubles := metricValue(t, r, `godoauth_relay_vault_token_errors_total{kind="renew"}`)
	expiry := metricValue(t, r, "godoauth_relay_vault_token_expiry_timestamp_seconds")
	t.Logf("MEASURE period=%s ran=%s answers=%v renewals=%.0f", period, time.Since(created).Round(time.Second), statuses, renewals)
	if renewals < 4 || troubles != 0 {
		t.Errorf("renewals %.0f (want at least 4 over 3 periods), renewal errors %.0f", renewals, troubles)
	}
	if left := time.Until(time.Unix(int64(expiry), 0)); left <= 0 || left > period+time.Second {
		t.Errorf("expiry gauge says %s left; want within the period", left)
	}
	// Vault agrees: the token outlived three periods and still has time.
	var lookup struct {
		Data struct {
			TTL int `json:"ttl"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(v.CLI(t, "token", "lookup", "-format=json", token)), &lookup); err != nil {
		t.Fatal(err)
	}
	if lookup.Data.TTL <= 0 || time.Since(created) < 3*period {
		t.Errorf("token ttl %ds after %s", lookup.Data.TTL, time.Since(created))
	}
	if strings.Contains(r.Proc.Log(), token) {
		t.Error("the relay logged its token")
	}
}

// TestRelayToken_relayPolicyRefusesOtherPaths: deploy/policies/relay.hcl
// lets the relay mint tokens and nothing else.
func TestRelayToken_relayPolicyRefusesOtherPaths(t *testing.T) {
	v, svc := tokenSetup(t)
	v.CLI(t, "secrets", "enable", "-path=second", "-plugin-version="+pluginVersion, pluginName)
	token := strings.TrimSpace(v.CLI(t, "token", "create", "-policy=godoauth-relay", "-no-default-policy",
		"-orphan", "-period=1h", "-field=token"))
	r := startRelayWith(t, v, "info", "    auth_token: "+token)
	if code, _, body := r.Token(t, svc.Name, "alice", "alice-pw-5d1e", "repository:linux/app:pull"); code != http.StatusOK {
		t.Fatalf("token with the relay's policy: %d %s", code, truncate(body, 300))
	}
	asRelay := func(args ...string) (string, error) {
		out, errOut, err := v.tryCLIWithToken(token, args...)
		return out + errOut, err
	}
	for _, args := range [][]string{
		{"read", "registry/config"},
		{"write", "registry/users/mallory", "password=x", "access=*:**:*"},
		{"list", "registry/users"},
		{"write", "-f", "registry/keys/rotate"},
		{"write", "second/token", "username=alice", "password=alice-pw-5d1e"},
		{"token", "create", "-policy=default"},
		{"secrets", "list"},
		{"read", "sys/policy/godoauth-relay"},
	} {
		out, err := asRelay(args...)
		if err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("vault %s with the relay's token: want permission denied, got %v: %s",
				strings.Join(args, " "), err, truncate([]byte(out), 300))
		}
	}
	if out, err := asRelay("token", "renew"); err != nil {
		t.Errorf("the relay's token cannot renew itself: %v %s", err, out)
	}
	if out, err := asRelay("token", "lookup"); err != nil {
		t.Errorf("the relay's token cannot look itself up: %v %s", err, out)
	}
}

// TestRelayToken_appRole: the relay logs in with AppRole, renews its
// token, and logs in again when the token reaches its max TTL, with no
// 503 in between.
func TestRelayToken_appRole(t *testing.T) {
	v, _ := tokenSetup(t)
	v.CLI(t, "auth", "enable", "approle")
	v.CLI(t, "write", "auth/approle/role/godoauth-relay", "token_policies=godoauth-relay",
		"token_no_default_policy=true", "token_ttl=12s", "token_max_ttl=30s", "secret_id_num_uses=0")
	roleID := strings.TrimSpace(v.CLI(t, "read", "-field=role_id", "auth/approle/role/godoauth-relay/role-id"))
	secretID := strings.TrimSpace(v.CLI(t, "write", "-f", "-field=secret_id", "auth/approle/role/godoauth-relay/secret-id"))
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelayWith(t, v, "info", fmt.Sprintf("    approle:\n      role_id: %s\n      secret_id_file: %s", roleID, secretFile))

	statuses := steadyLoad(t, r, 70*time.Second, 250*time.Millisecond, "alice", "alice-pw-5d1e")
	logins := metricValue(t, r, "godoauth_relay_vault_token_logins_total")
	renewals := metricValue(t, r, "godoauth_relay_vault_token_renewals_total")
	loginErrors := metricValue(t, r, `godoauth_relay_vault_token_errors_total{kind="login"}`)
	maxTTL := metricValue(t, r, `godoauth_relay_vault_token_errors_total{kind="max_ttl"}`)
	t.Logf("MEASURE approle token_ttl=12s max_ttl=30s answers=%v logins=%.0f renewals=%.0f max_ttl_troubles=%.0f",
		statuses, logins, renewals, maxTTL)
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Fatalf("answers by status: %v; want only 200", statuses)
	}
	// 70 s with a 30 s max TTL: logged in at least three times, renewed in between.
	// The max TTL is routine with AppRole: a log line, no trouble counted.
	if logins < 3 || renewals < 2 || loginErrors != 0 || maxTTL != 0 {
		t.Errorf("logins %.0f (want ≥3), renewals %.0f (want ≥2), login errors %.0f, max TTL troubles %.0f (want 0)",
			logins, renewals, loginErrors, maxTTL)
	}
	log := r.Proc.Log()
	if !strings.Contains(log, "logged in to Vault with AppRole") || !strings.Contains(log, "max TTL") {
		t.Errorf("the relay's log does not tell the logins and the max TTL:\n%s", tail(log, 30))
	}
	if strings.Contains(log, secretID) {
		t.Error("the relay logged the secret ID")
	}

	// A wrong secret ID: the relay says so loudly and counts it.
	bad := startRelayWith(t, v, "info", fmt.Sprintf("    approle:\n      role_id: %s\n      secret_id_file: %s",
		roleID, writeTemp(t, "not-the-secret-id")))
	code, _, _ := bad.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull")
	if code != http.StatusServiceUnavailable {
		t.Errorf("relay without a login: %d, want 503", code)
	}
	if n := metricValue(t, bad, `godoauth_relay_vault_token_errors_total{kind="login"}`); n < 1 {
		t.Errorf("login errors %.0f, want ≥1", n)
	}
	if !strings.Contains(bad.Proc.Log(), "[ERROR] godoauth-relay: cannot log in to Vault with AppRole") {
		t.Errorf("no ERROR line for the failed login:\n%s", tail(bad.Proc.Log(), 20))
	}
}

// TestRelayToken_tokenFileFollowed: with auth_token_file the relay picks up
// the token Vault Agent writes, and a new one when the file changes.
func TestRelayToken_tokenFileFollowed(t *testing.T) {
	v, _ := tokenSetup(t)
	newToken := func() string {
		return strings.TrimSpace(v.CLI(t, "token", "create", "-policy=godoauth-relay", "-no-default-policy",
			"-orphan", "-period=1h", "-field=token"))
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeAtomic := func(content string) { // as Vault Agent's file sink does
		tmp := filepath.Join(dir, ".token.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, tokenFile); err != nil {
			t.Fatal(err)
		}
	}
	first := newToken()
	writeAtomic(first)
	r := startRelayWith(t, v, "info", "    auth_token_file: "+tokenFile)

	if code, _, body := r.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull"); code != http.StatusOK {
		t.Fatalf("with the first token: %d %s", code, truncate(body, 300))
	}
	second := newToken()
	writeAtomic(second + "\n")
	waitFor(t, "the relay reads the new token", r.Proc, 10*time.Second, func() error {
		if n := metricValue(t, r, "godoauth_relay_vault_token_file_reads_total"); n != 2 {
			return fmt.Errorf("file reads %.0f, want 2", n)
		}
		return nil
	})
	v.CLI(t, "token", "revoke", first)
	statuses := map[int]int{}
	for range 20 {
		code, _, _ := r.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull")
		statuses[code]++
	}
	if len(statuses) != 1 || statuses[http.StatusOK] != 20 {
		t.Errorf("after the switch to the new token and the old one's revocation: %v, want only 200", statuses)
	}
	// A file that goes away: the relay keeps the token it has and says so.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an error for the missing file", r.Proc, 10*time.Second, func() error {
		if n := metricValue(t, r, `godoauth_relay_vault_token_errors_total{kind="file"}`); n < 1 {
			return fmt.Errorf("file errors %.0f", n)
		}
		return nil
	})
	if code, _, _ := r.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull"); code != http.StatusOK {
		t.Errorf("after the file went away: %d, want 200 with the token in use", code)
	}
	if log := r.Proc.Log(); strings.Contains(log, first) || strings.Contains(log, second) {
		t.Error("the relay logged a token")
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tryCLIWithToken runs the vault CLI with another token than root's.
func (v *Vault) tryCLIWithToken(token string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(v.t, "vault"), args...)
	cmd.Env = append(baseEnv(v.home), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
