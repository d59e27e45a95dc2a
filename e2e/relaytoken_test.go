//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

// relayPolicyFile is the relay's least-privilege policy as deploy/ ships it.
const relayPolicyFile = "../deploy/policies/relay.hcl"

// The relays here wait for /livez, not /healthz: some tests start one
// with a token Vault refuses.

// writeRelayPolicy writes deploy/policies/relay.hcl as the policy
// godoauth-relay, as docs/OPERATING.md says.
func writeRelayPolicy(t *testing.T, v *Vault) {
	t.Helper()
	v.CLI(t, "policy", "write", "godoauth-relay", relayPolicyFile)
}

// relayPolicyToken is a periodic orphan token with the policy
// godoauth-relay, made as docs/OPERATING.md says.
func relayPolicyToken(t *testing.T, v *Vault, period time.Duration) string {
	t.Helper()
	return strings.TrimSpace(v.CLI(t, "token", "create", "-policy=godoauth-relay", "-no-default-policy",
		"-orphan", "-period="+period.String(), "-field=token"))
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
	token := relayPolicyToken(t, v, period)
	created := time.Now()
	r := StartRelay(t, RelayOptions{Vault: v, Token: token, LogLevel: "debug", Ready: "/livez"})

	statuses := steadyLoad(t, r, 3*period+10*time.Second, 250*time.Millisecond, "alice", "alice-pw-5d1e")
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Fatalf("answers by status over %s: %v; want only 200", time.Since(created).Round(time.Second), statuses)
	}
	renewals := r.Metric(t, "godoauth_relay_vault_token_renewals_total")
	troubles := r.Metric(t, `godoauth_relay_vault_token_errors_total{kind="renew"}`)
	expiry := r.Metric(t, "godoauth_relay_vault_token_expiry_timestamp_seconds")
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
	token := relayPolicyToken(t, v, time.Hour)
	r := StartRelay(t, RelayOptions{Vault: v, Token: token, Ready: "/livez"})
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
	r := StartRelay(t, RelayOptions{Vault: v, Auth: fmt.Sprintf("    approle:\n      role_id: %s\n      secret_id_file: %s", roleID, secretFile), Ready: "/livez"})

	statuses := steadyLoad(t, r, 70*time.Second, 250*time.Millisecond, "alice", "alice-pw-5d1e")
	logins := r.Metric(t, "godoauth_relay_vault_token_logins_total")
	renewals := r.Metric(t, "godoauth_relay_vault_token_renewals_total")
	loginErrors := r.Metric(t, `godoauth_relay_vault_token_errors_total{kind="login"}`)
	maxTTL := r.Metric(t, `godoauth_relay_vault_token_errors_total{kind="max_ttl"}`)
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
	bad := StartRelay(t, RelayOptions{Vault: v, Auth: fmt.Sprintf("    approle:\n      role_id: %s\n      secret_id_file: %s",
		roleID, writeTemp(t, "not-the-secret-id")), Ready: "/livez"})
	code, _, _ := bad.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull")
	if code != http.StatusServiceUnavailable {
		t.Errorf("relay without a login: %d, want 503", code)
	}
	if n := bad.Metric(t, `godoauth_relay_vault_token_errors_total{kind="login"}`); n < 1 {
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
	newToken := func() string { return relayPolicyToken(t, v, time.Hour) }
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
	r := StartRelay(t, RelayOptions{Vault: v, TokenFile: tokenFile, Ready: "/livez"})

	if code, _, body := r.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull"); code != http.StatusOK {
		t.Fatalf("with the first token: %d %s", code, truncate(body, 300))
	}
	second := newToken()
	writeAtomic(second + "\n")
	waitFor(t, "the relay reads the new token", r.Proc, 10*time.Second, func() error {
		if n := r.Metric(t, "godoauth_relay_vault_token_file_reads_total"); n != 2 {
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
		if n := r.Metric(t, `godoauth_relay_vault_token_errors_total{kind="file"}`); n < 1 {
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

// systemdUnitFile is the relay's unit as deploy/ ships it.
const systemdUnitFile = "../deploy/systemd/godoauth-relay.service"

// asSystemdCredential does what the unit's LoadCredential= does before the
// relay starts: it copies the source file of the unit's one credential,
// read only, into the service's credentials directory (here under dir, for
// /run/credentials/godoauth-relay.service), and returns the copy's path.
func asSystemdCredential(t *testing.T, dir, source string) string {
	t.Helper()
	unit, err := os.ReadFile(systemdUnitFile)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "LoadCredential="); ok {
			name, _, _ = strings.Cut(v, ":")
		}
	}
	if name == "" || !strings.Contains(string(unit), "auth_token_file: /run/credentials/godoauth-relay.service/"+name) {
		t.Fatalf("the unit has no LoadCredential= whose file its comment names as auth_token_file")
	}
	creds := filepath.Join(dir, "run", "credentials", "godoauth-relay.service")
	if err := os.MkdirAll(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(creds, name)
	if err := os.WriteFile(copied, content, 0o400); err != nil {
		t.Fatal(err)
	}
	return copied
}

// TestRelayToken_systemdCredentialRenewed runs the relay as the shipped
// systemd unit does (the token handed as a credential, read with
// auth_token_file) on a token with a 20 s period, made as the unit's
// comment says, for more than three periods: the relay renews it, every
// answer is 200. Without renewal of a token file it expired after 20 s.
func TestRelayToken_systemdCredentialRenewed(t *testing.T) {
	const period = 20 * time.Second
	v, _ := tokenSetup(t)
	token := relayPolicyToken(t, v, period)
	created := time.Now()
	etc := writeTemp(t, token+"\n") // /etc/godoauth-relay/vault-token
	credential := asSystemdCredential(t, t.TempDir(), etc)
	r := StartRelay(t, RelayOptions{Vault: v, TokenFile: credential, Ready: "/livez"})

	statuses := steadyLoad(t, r, 3*period+10*time.Second, 250*time.Millisecond, "alice", "alice-pw-5d1e")
	renewals := r.Metric(t, "godoauth_relay_vault_token_renewals_total")
	troubles := r.Metric(t, `godoauth_relay_vault_token_errors_total{kind="renew"}`)
	t.Logf("MEASURE systemd-credential period=%s ran=%s answers=%v renewals=%.0f", period,
		time.Since(created).Round(time.Second), statuses, renewals)
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Fatalf("answers by status over %s: %v; want only 200", time.Since(created).Round(time.Second), statuses)
	}
	if renewals < 4 || troubles != 0 {
		t.Errorf("renewals %.0f (want at least 4 over 3 periods), renewal errors %.0f", renewals, troubles)
	}
	if err := wantStatus(r.URL+"/healthz", http.StatusOK); err != nil {
		t.Errorf("/healthz %v", err)
	}
	if strings.Contains(r.Proc.Log(), token) {
		t.Error("the relay logged its token")
	}
}

// TestRelayToken_newTokenFileCheckedFirst: a new token in auth_token_file
// that Vault refuses (a truncated write, a revoked token) is not used: the
// working token stays, every answer is 200, and an ERROR says why; a good
// new token is used. Also: a relay started with a revoked token says the
// token is invalid or expired (not that its policy lacks renew-self), and
// its /healthz is 503 while /livez is 200.
func TestRelayToken_newTokenFileCheckedFirst(t *testing.T) {
	v, _ := tokenSetup(t)
	newToken := func() string { return relayPolicyToken(t, v, time.Hour) }
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	write := func(content string) { // in place, as a careless writer does
		if err := os.WriteFile(tokenFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := newToken()
	write(good)
	r := StartRelay(t, RelayOptions{Vault: v, TokenFile: tokenFile, Ready: "/livez"})
	mint := func() int {
		code, _, _ := r.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull")
		return code
	}
	if code := mint(); code != http.StatusOK {
		t.Fatalf("with the first token: %d", code)
	}
	revoked := newToken()
	v.CLI(t, "token", "revoke", revoked)
	statuses := map[int]int{}
	for i, bad := range []string{good[:len(good)/2], revoked} {
		start := time.Now()
		write(bad)
		waitFor(t, "the ERROR for the refused token", r.Proc, 15*time.Second, func() error {
			statuses[mint()]++
			if n := strings.Count(r.Proc.Log(), "vault refuses the new token in auth_token_file"); n < i+1 {
				return fmt.Errorf("%d ERROR lines", n)
			}
			return nil
		})
		t.Logf("MEASURE bad-token-file=%d rejected_within=%s", i, time.Since(start).Round(10*time.Millisecond))
		for range 10 {
			statuses[mint()]++
		}
	}
	if len(statuses) != 1 || statuses[http.StatusOK] == 0 {
		t.Errorf("answers while the file held refused tokens: %v, want only 200", statuses)
	}
	if err := wantStatus(r.URL+"/healthz", http.StatusOK); err != nil {
		t.Errorf("/healthz %v with the working token", err)
	}
	second := newToken()
	write(second)
	waitFor(t, "the switch to the good new token", r.Proc, 10*time.Second, func() error {
		if n := r.Metric(t, "godoauth_relay_vault_token_file_reads_total"); n != 2 {
			return fmt.Errorf("file reads %.0f, want 2", n)
		}
		return nil
	})
	v.CLI(t, "token", "revoke", good)
	if code := mint(); code != http.StatusOK {
		t.Errorf("after the switch and the old token's revocation: %d", code)
	}
	log := r.Proc.Log()
	for _, tok := range []string{good, revoked, second} {
		if strings.Contains(log, tok) {
			t.Error("the relay logged a token")
		}
	}

	// A relay started with a revoked token.
	dead := StartRelay(t, RelayOptions{Vault: v, Token: revoked, Ready: "/livez"})
	waitFor(t, "the invalid-token ERROR", dead.Proc, 10*time.Second, func() error {
		if !strings.Contains(dead.Proc.Log(), "token invalid or expired") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if log := dead.Proc.Log(); strings.Contains(log, "renew-self") {
		t.Errorf("a revoked token blamed on the policy:\n%s", tail(log, 20))
	}
	if err := wantStatus(dead.URL+"/healthz", http.StatusServiceUnavailable); err != nil {
		t.Errorf("/healthz with a revoked token: %v, want 503", err)
	}
	if err := wantStatus(dead.URL+"/livez", http.StatusOK); err != nil {
		t.Errorf("/livez: %v, want 200", err)
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

// serviceAccountToken signs a token shaped as Kubernetes signs a projected
// service-account token for namespace/name, audience vault.
func serviceAccountToken(t *testing.T, key *ecdsa.PrivateKey, namespace, name string) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": "https://kubernetes.default.svc.cluster.local",
		"aud": []string{"vault"},
		"sub": "system:serviceaccount:" + namespace + ":" + name,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]any{"name": name, "uid": "8d1f6c2e-0f4b-4a55-9d3e-" + fmt.Sprintf("%012d", len(name))},
			"pod":            map[string]any{"name": name + "-7c9f8d6b5-x2x4q", "uid": "5b1e2d9a-3c4f-4e6a-8b7c-0d1e2f3a4b5c"},
		},
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// TestRelayToken_kubernetesLogin: the relay logs in to Vault as a
// Kubernetes workload (storage.vault.kubernetes), here at Vault's jwt auth
// method, which verifies a service-account-shaped token against the
// cluster's issuer key without an API server (Vault's kubernetes method
// needs one for TokenReview). It renews, logs in again at the max TTL with
// the token file read anew, and every answer is 200; another service
// account's token gets no login, an ERROR, and /healthz 503.
func TestRelayToken_kubernetesLogin(t *testing.T) {
	v, _ := tokenSetup(t)
	key := testcert.NewKey(t)
	pubFile := writeTemp(t, testcert.PublicKeyPEM(t, key))
	v.CLI(t, "auth", "enable", "jwt")
	v.CLI(t, "write", "auth/jwt/config", "jwt_validation_pubkeys=@"+pubFile,
		"bound_issuer=https://kubernetes.default.svc.cluster.local")
	v.CLI(t, "write", "auth/jwt/role/godoauth-relay", "role_type=jwt", "bound_audiences=vault", "user_claim=sub",
		"bound_subject=system:serviceaccount:registry:godoauth-relay", "token_policies=godoauth-relay",
		"token_no_default_policy=true", "token_ttl=12s", "token_max_ttl=30s")

	saFile := writeTemp(t, serviceAccountToken(t, key, "registry", "godoauth-relay"))
	r := StartRelay(t, RelayOptions{Vault: v, Auth: "    kubernetes:\n      role: godoauth-relay\n      mount: jwt\n      token_file: " + saFile, Ready: "/livez"})
	statuses := steadyLoad(t, r, 45*time.Second, 250*time.Millisecond, "alice", "alice-pw-5d1e")
	logins := r.Metric(t, "godoauth_relay_vault_token_logins_total")
	renewals := r.Metric(t, "godoauth_relay_vault_token_renewals_total")
	t.Logf("MEASURE kubernetes-login(jwt method) token_ttl=12s max_ttl=30s answers=%v logins=%.0f renewals=%.0f",
		statuses, logins, renewals)
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Fatalf("answers by status: %v; want only 200", statuses)
	}
	if logins < 2 || renewals < 1 {
		t.Errorf("logins %.0f (want ≥2 over 45 s with a 30 s max TTL), renewals %.0f (want ≥1)", logins, renewals)
	}
	if log := r.Proc.Log(); !strings.Contains(log, "logged in to Vault with Kubernetes auth") {
		t.Errorf("no login line:\n%s", tail(log, 20))
	}

	// Another namespace's service account: Vault refuses the login.
	other := writeTemp(t, serviceAccountToken(t, key, "team-b", "godoauth-relay"))
	bad := StartRelay(t, RelayOptions{Vault: v, Auth: "    kubernetes:\n      role: godoauth-relay\n      mount: jwt\n      token_file: " + other, Ready: "/livez"})
	if code, _, _ := bad.Token(t, "registry", "alice", "alice-pw-5d1e", "repository:linux/app:pull"); code != http.StatusServiceUnavailable {
		t.Errorf("relay without a login: %d, want 503", code)
	}
	if err := wantStatus(bad.URL+"/healthz", http.StatusServiceUnavailable); err != nil {
		t.Errorf("/healthz without a login: %v", err)
	}
	if log := bad.Proc.Log(); !strings.Contains(log, "cannot log in to Vault with Kubernetes auth") {
		t.Errorf("no ERROR for the refused login:\n%s", tail(log, 20))
	}
	for _, p := range []*Relay{r, bad} {
		if strings.Contains(p.Proc.Log(), "eyJ") {
			t.Error("the relay logged a service-account token")
		}
	}
}
