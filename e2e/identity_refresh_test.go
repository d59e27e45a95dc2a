//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// identityRefreshStack is Vault with the plugin at "registry", identity
// refresh tokens on with refresh_tokens_per_user=3, a userpass mount whose
// users have deploy/policies/identity.hcl, and a relay.
func identityRefreshStack(t *testing.T) *Stack {
	t.Helper()
	st := NewStack(t, "registry")
	v := st.Vault
	v.CLIInput(t, readFileString(t, filepath.Join("..", "deploy", "policies", "identity.hcl")), "policy", "write", identityPolicy, "-")
	v.CLI(t, "write", "registry/config", "identity_refresh_tokens=true", "refresh_tokens_per_user=3")
	v.CLI(t, "auth", "enable", "userpass")
	return st
}

// offlineIdentityToken asks token/identity for a refresh token with the
// Vault token, as a client of Vault's API does; the answer must carry a
// Vault lease.
func offlineIdentityToken(t testing.TB, v *Vault, vaultToken string) string {
	t.Helper()
	code, out := v.callAs(t, vaultToken, http.MethodPut, "registry/token/identity", map[string]any{"offline_token": true, "client_id": "docker"})
	rt := jsonField(out, "data", "refresh_token")
	if code != http.StatusOK || rt == "" {
		t.Fatalf("token/identity offline_token=true: %d", code)
	}
	if jsonField(out, "lease_id") == "" {
		t.Errorf("token/identity offline_token=true answered no Vault lease")
	}
	return rt
}

// mintsThroughTheRelay says whether the relay mints a token from rt.
func mintsThroughTheRelay(t testing.TB, r *Relay, rt string) bool {
	t.Helper()
	code, body := postForm(t, r, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"docker"},
		"service": {"registry"}, "scope": {"repository:team/app:pull"}})
	switch {
	case code == http.StatusOK:
		return true
	case code == http.StatusUnauthorized && oauthError(body) == "invalid_grant":
		return false
	}
	t.Fatalf("refresh grant: %d %s", code, truncate(body, 300))
	return false
}

// waitRefused waits until none of the refresh tokens mints any more (Vault
// revokes a revoked token's leases in the background) and returns how long
// that took.
func waitRefused(t testing.TB, r *Relay, timeout time.Duration, rts ...string) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, "refresh tokens refused", nil, timeout, func() error {
		for _, rt := range rts {
			if mintsThroughTheRelay(t, r, rt) {
				return fmt.Errorf("a refresh token still mints")
			}
		}
		return nil
	})
	return time.Since(start)
}

// TestIdentityRefresh_cappedAndEndedWithTheVaultToken: with
// refresh_tokens_per_user=3, 200 refresh tokens asked at token/identity
// leave 3 live (the newest), listed at entities/<name>/refresh-tokens; a
// `vault token revoke` of the Vault token that asked for them ends them
// (and not those another Vault token of the same entity asked for).
func TestIdentityRefresh_cappedAndEndedWithTheVaultToken(t *testing.T) {
	st := identityRefreshStack(t)
	v := st.Vault
	v.root(t, http.MethodPut, "auth/userpass/users/alice", map[string]any{"password": "alice-vault-pw", "token_policies": identityPolicy})
	aliceToken, aliceID := v.login(t, "auth/userpass/login/alice", map[string]any{"password": "alice-vault-pw"})
	alice := v.entityName(t, aliceID)

	const issued = 200
	var rts []string
	for range issued {
		rts = append(rts, offlineIdentityToken(t, v, aliceToken))
	}
	live := 0
	for i, rt := range rts {
		if mintsThroughTheRelay(t, st.Relay, rt) {
			live++
			if i < issued-3 {
				t.Errorf("refresh token %d of %d still mints: the oldest go first", i+1, issued)
			}
		}
	}
	t.Logf("MEASURE identity refresh tokens live after %d issues with refresh_tokens_per_user=3: %d", issued, live)
	if live != 3 {
		t.Errorf("%d of %d identity refresh tokens mint, want 3", live, issued)
	}
	code, out := v.callAs(t, rootToken, "LIST", "registry/entities/"+alice+"/refresh-tokens", nil)
	keys, _ := out["data"].(map[string]any)["keys"].([]any)
	if code != http.StatusOK || len(keys) != 3 {
		t.Fatalf("LIST entities/%s/refresh-tokens: %d, %d keys; want 3", alice, code, len(keys))
	}
	if info := jsonField(out, "data", "key_info", fmt.Sprint(keys[0]), "entity_id"); info != aliceID {
		t.Errorf("key_info entity_id %q, want %q", info, aliceID)
	}

	// Another Vault token of the same entity: its refresh token is not
	// the first one's (the cap then ends one of the first token's three).
	otherToken, _ := v.login(t, "auth/userpass/login/alice", map[string]any{"password": "alice-vault-pw"})
	other := offlineIdentityToken(t, v, otherToken)
	v.CLI(t, "token", "revoke", aliceToken)
	took := waitRefused(t, st.Relay, 30*time.Second, rts[issued-3:]...)
	t.Logf("MEASURE after vault token revoke: 0 of the revoked token's refresh tokens mint (%s after the revoke)", took.Round(100*time.Millisecond))
	if !mintsThroughTheRelay(t, st.Relay, other) {
		t.Error("the refresh token of the Vault token not revoked stopped minting")
	}
	// The operator ends the rest.
	out = v.root(t, http.MethodDelete, "registry/entities/id/"+aliceID+"/refresh-tokens", nil)
	if data, _ := out["data"].(map[string]any); data["revoked"] != float64(1) {
		t.Errorf("DELETE entities/id/%s/refresh-tokens: %v, want revoked 1", aliceID, out)
	}
	if mintsThroughTheRelay(t, st.Relay, other) {
		t.Error("a refresh token the operator revoked still mints")
	}
	assertLogsFree(t, append([]string{aliceToken, otherToken, "alice-vault-pw"}, rts...), st.Relay.Proc)
}

// TestIdentityRefresh_endsWhenTheVaultTokenExpires: a refresh token asked
// with a Vault token of a 20 s TTL mints until that token expires, then
// no more.
func TestIdentityRefresh_endsWhenTheVaultTokenExpires(t *testing.T) {
	st := identityRefreshStack(t)
	v := st.Vault
	v.root(t, http.MethodPut, "auth/userpass/users/bob", map[string]any{"password": "bob-vault-pw", "token_policies": identityPolicy,
		"token_ttl": "20s", "token_max_ttl": "20s"})
	bobToken, _ := v.login(t, "auth/userpass/login/bob", map[string]any{"password": "bob-vault-pw"})
	issued := time.Now()
	rt := offlineIdentityToken(t, v, bobToken)
	if !mintsThroughTheRelay(t, st.Relay, rt) {
		t.Fatal("a fresh refresh token does not mint")
	}
	waitRefused(t, st.Relay, 90*time.Second, rt)
	after := time.Since(issued)
	t.Logf("MEASURE after the asking Vault token (TTL 20s) expired: the refresh token refused %s after its issue", after.Round(100*time.Millisecond))
	if after < 15*time.Second {
		t.Errorf("refused %s after its issue, before the Vault token's TTL", after)
	}
	if code, _ := v.callAs(t, bobToken, http.MethodGet, "auth/token/lookup-self", nil); code != http.StatusForbidden {
		t.Errorf("the Vault token still answers lookup-self: %d", code)
	}
}
