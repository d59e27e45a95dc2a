package paths_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Identity refresh tokens are off until the operator turns them on: an
// offline_token request then gets a token and no refresh token.
func TestIdentityRefresh_offByDefault(t *testing.T) {
	m, _ := newIdentityMount(t)
	cfg := m.ok(read, "config", nil).Data
	if cfg["identity_refresh_tokens"] != false || cfg["identity_refresh_token_ttl"] != int64(86400) {
		t.Errorf("config: identity_refresh_tokens %v, identity_refresh_token_ttl %v; want false, 86400", cfg["identity_refresh_tokens"], cfg["identity_refresh_token_ttl"])
	}
	_, resp, msg := m.identityCall("token/identity", "e-alice", map[string]any{"offline_token": true})
	if resp == nil || resp.Data["token"] == nil {
		t.Fatalf("token/identity: %s", msg)
	}
	if rt, ok := resp.Data["refresh_token"]; ok || resp.Secret != nil {
		t.Errorf("a refresh token (%v) or a lease (%+v) while identity_refresh_tokens is off", rt != nil, resp.Secret)
	}
	m.fail(update, "config", map[string]any{"identity_refresh_token_ttl": "10s"}, http.StatusBadRequest, "identity_refresh_token_ttl")
	m.fail(update, "config", map[string]any{"identity_refresh_token_ttl": "800h"}, http.StatusBadRequest, "identity_refresh_token_ttl")
}

// The answer with an identity's refresh token is a Vault lease that Vault
// revokes with the asking Vault token; revoking it ends the refresh token.
func TestIdentityRefresh_leaseRevocationEndsTheToken(t *testing.T) {
	m, _ := newIdentityMount(t)
	m.ok(update, "config", map[string]any{"identity_refresh_tokens": true, "identity_refresh_token_ttl": "2h"})
	_, resp, msg := m.identityCall("token/identity", "e-alice", map[string]any{"offline_token": true})
	rt, _ := resp.Data["refresh_token"].(string)
	if rt == "" || resp.Secret == nil {
		t.Fatalf("no refresh token or no lease: %s (lease %v)", msg, resp.Secret != nil)
	}
	if resp.Secret.TTL != 2*time.Hour || resp.Secret.MaxTTL != 2*time.Hour || resp.Secret.Renewable {
		t.Errorf("lease: ttl %s max %s renewable %v; want 2h, 2h, false", resp.Secret.TTL, resp.Secret.MaxTTL, resp.Secret.Renewable)
	}
	for k, v := range resp.Secret.InternalData {
		if v == rt {
			t.Errorf("the lease's internal data %q holds the refresh token", k)
		}
	}
	if code, _, msg := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt}); code != http.StatusOK {
		t.Fatalf("refresh before the revocation: %d %s", code, msg)
	}
	// What Vault sends when the Vault token that asked is revoked or expires.
	revoke := logical.RevokeRequest("token/identity", resp.Secret, resp.Data)
	revoke.Storage = m.storage
	if code, _, msg := m.do(revoke); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, msg)
	}
	if code, _, msg := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt}); code != http.StatusBadRequest {
		t.Errorf("refresh after the lease's revocation: %d %s", code, msg)
	}
	if code, _, msg := m.do(revoke); code != http.StatusOK && code != http.StatusNoContent {
		t.Errorf("a second revocation (Vault retries): %d %s", code, msg)
	}
	// A lease whose data names no token: nothing to revoke, no error for
	// Vault to retry forever.
	garbled := logical.RevokeRequest("token/identity", &logical.Secret{InternalData: map[string]any{
		"secret_type": resp.Secret.InternalData["secret_type"], "entity_id": "../users", "refresh_token_id": 7}}, nil)
	garbled.Storage = m.storage
	if code, _, msg := m.do(garbled); code != http.StatusOK && code != http.StatusNoContent {
		t.Errorf("revoking a garbled lease: %d %s", code, msg)
	}
}

// An entity holds at most refresh_tokens_per_user live refresh tokens; the
// operator lists them (by entity name or id, never the tokens) and revokes
// them all.
func TestIdentityRefresh_cappedListedAndRevoked(t *testing.T) {
	m, ids := newIdentityMount(t)
	m.ok(update, "config", map[string]any{"identity_refresh_tokens": true, "refresh_tokens_per_user": 3})
	const issued = 200
	var tokens []string
	for range issued {
		_, resp, msg := m.identityCall("token/identity", "e-alice", map[string]any{"offline_token": true, "client_id": "docker"})
		rt, _ := resp.Data["refresh_token"].(string)
		if rt == "" {
			t.Fatalf("no refresh token: %s", msg)
		}
		tokens = append(tokens, rt)
	}
	m.identityCall("token/identity", "e-ci", map[string]any{"offline_token": true}) // another entity's
	live := 0
	for i, rt := range tokens {
		code, _, _ := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt})
		if code == http.StatusOK {
			live++
			if i < issued-3 {
				t.Errorf("token %d of %d still mints: the oldest go first", i, issued)
			}
		}
	}
	t.Logf("MEASURE identity refresh tokens live after %d issues with refresh_tokens_per_user=3: %d", issued, live)
	if live != 3 {
		t.Errorf("%d of %d identity refresh tokens live, want 3", live, issued)
	}
	for _, path := range []string{"entities/alice/refresh-tokens", "entities/id/e-alice/refresh-tokens"} {
		resp := m.ok(list, path, nil)
		keys, _ := resp.Data["keys"].([]string)
		if len(keys) != 3 {
			t.Fatalf("%s: %d keys, want 3: %v", path, len(keys), resp.Data)
		}
		info := resp.Data["key_info"].(map[string]any)[keys[0]].(map[string]any)
		if info["entity_id"] != "e-alice" || info["accessor"] != "accessor-of-e-alice" || info["client_id"] != "docker" {
			t.Errorf("%s: key_info %v", path, info)
		}
		for _, rt := range tokens {
			if fmt.Sprint(resp.Data) == rt || fmt.Sprint(info) == rt {
				t.Errorf("%s shows a refresh token", path)
			}
		}
	}
	if got := m.ok(del, "entities/alice/refresh-tokens", nil).Data["revoked"]; got != 3 {
		t.Errorf("revoked %v, want 3", got)
	}
	for _, rt := range tokens[issued-3:] {
		if code, _, _ := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt}); code != http.StatusBadRequest {
			t.Errorf("a revoked identity refresh token: %d", code)
		}
	}
	// The other entity's token stays; an entity Vault no longer has is
	// reached by its id.
	delete(ids.entities, "e-ci")
	if code, resp, _ := m.call(list, "entities/ci-app/refresh-tokens", nil); code != http.StatusNotFound {
		t.Errorf("by the name of a deleted entity: %d %v", code, resp.Data)
	}
	if got := m.ok(del, "entities/id/e-ci/refresh-tokens", nil).Data["revoked"]; got != 1 {
		t.Errorf("revoked by id %v, want 1", got)
	}
	m.fail(list, "entities/id/e.x/refresh-tokens", nil, http.StatusNotFound, "")
}
