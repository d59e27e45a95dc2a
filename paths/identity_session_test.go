package paths_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// askSession asks token/identity with identity_session as the Vault token
// of entityID would, and returns the session's secret and the answer.
func (m *mount) askSession(entityID string) (string, *logical.Response) {
	m.t.Helper()
	code, resp, msg := m.identityCall(tokenapi.PathIdentityToken, entityID, map[string]any{tokenapi.FieldIdentitySession: true})
	if code != http.StatusOK {
		m.t.Fatalf("token/identity with identity_session for %s: %d %s", entityID, code, msg)
	}
	secret, _ := resp.Data[tokenapi.FieldIdentitySession].(string)
	if secret == "" || resp.Data["token"] == nil {
		m.t.Fatalf("no session or no token for %s: %v", entityID, resp.Data)
	}
	return secret, resp
}

// sessionGrant reads one answer of a batch: its status, and the subject
// and grant of its token.
func sessionGrant(t *testing.T, a struct {
	Status int             `json:"status"`
	Data   json.RawMessage `json:"data"`
}) (int, string, string) {
	t.Helper()
	if a.Status != http.StatusOK {
		return a.Status, "", ""
	}
	var data map[string]any
	if err := json.Unmarshal(a.Data, &data); err != nil {
		t.Fatal(err)
	}
	sub, access := grantsOf(t, &logical.Response{Data: data})
	return a.Status, sub, access
}

// A batch (the relay's token) holding the sessions of two entities mints
// each for its own entity, with its groups as they are at each request; a
// session whose lease Vault revoked (its Vault token revoked or expired) is
// refused, and the other goes on.
func TestIdentitySession_batchMintsEachForItsOwnEntity(t *testing.T) {
	m, ids := newIdentityMount(t)
	m.ok(update, "groups/devs", map[string]any{"access": "repository:app/*:pull,push"})
	m.ok(update, "groups/deployers", map[string]any{"access": "repository:prod/*:push,pull"})
	alice, resp := m.askSession("e-alice")
	if resp.Secret == nil || resp.Secret.TTL != backend.IdentitySessionTTL || resp.Secret.MaxTTL != backend.IdentitySessionTTL || resp.Secret.Renewable {
		t.Fatalf("the session's lease: %+v", resp.Secret)
	}
	if resp.Data[tokenapi.FieldIdentitySessionTTL] != int64(60) {
		t.Errorf("identity_session_ttl %v, want 60", resp.Data[tokenapi.FieldIdentitySessionTTL])
	}
	for k, v := range resp.Secret.InternalData {
		if v == alice {
			t.Errorf("the lease's internal data %q holds the secret", k)
		}
	}
	ci, _ := m.askSession("e-ci")
	scopes := []string{"repository:app/web:pull,push", "repository:prod/api:push"}
	answers := m.batch(
		map[string]any{tokenapi.FieldIdentitySession: alice, "scope": scopes},
		map[string]any{tokenapi.FieldIdentitySession: ci, "scope": scopes, "ttl": 60},
		map[string]any{tokenapi.FieldIdentitySession: "made-up", "scope": scopes},
		map[string]any{tokenapi.FieldIdentitySession: strings.Map(func(r rune) rune { return r ^ 1 }, alice), "scope": scopes},
		map[string]any{tokenapi.FieldIdentitySession: alice, "offline_token": true},
	)
	want := []struct {
		status      int
		sub, access string
	}{
		{200, "alice", "repository:app/web:pull,push"},
		{200, "ci-app", "repository:prod/api:push"},
		{401, "", ""},
		{401, "", ""},
		{400, "", ""}, // a session issues no refresh token
	}
	for i, w := range want {
		if status, sub, access := sessionGrant(t, answers[i]); status != w.status || sub != w.sub || access != w.access {
			t.Errorf("answer %d: %d %q %q, want %d %q %q (%s)", i, status, sub, access, w.status, w.sub, w.access, answers[i].Data)
		}
	}
	// The entity's groups as they are now; a disabled entity is refused.
	ids.groups["e-alice"] = nil
	ids.entities["e-ci"].Disabled = true
	answers = m.batch(map[string]any{tokenapi.FieldIdentitySession: alice, "scope": scopes}, map[string]any{tokenapi.FieldIdentitySession: ci})
	if status, sub, access := sessionGrant(t, answers[0]); status != 200 || sub != "alice" || access != "" {
		t.Errorf("after alice left devs: %d %q %q", status, sub, access)
	}
	if answers[1].Status != http.StatusUnauthorized {
		t.Errorf("disabled entity's session: %d %s", answers[1].Status, answers[1].Data)
	}
	ids.entities["e-ci"].Disabled = false

	// Vault revokes the lease when alice's Vault token is revoked or
	// expires; again after a plugin restart, harmlessly.
	revoke := logical.RevokeRequest(tokenapi.PathIdentityToken, resp.Secret, resp.Data)
	revoke.Storage = m.storage
	if code, _, msg := m.do(revoke); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, msg)
	}
	answers = m.batch(map[string]any{tokenapi.FieldIdentitySession: alice}, map[string]any{tokenapi.FieldIdentitySession: ci})
	if answers[0].Status != http.StatusUnauthorized || answers[1].Status != http.StatusOK {
		t.Errorf("after revoking alice's lease: %d, %d; want 401, 200", answers[0].Status, answers[1].Status)
	}
	restarted := startMount(t, m.path, backend.Options{}, m.storage)
	if code, _, msg := restarted.do(revoke); code != http.StatusOK && code != http.StatusNoContent {
		t.Errorf("a second revocation after a restart: %d %s", code, msg)
	}
	garbled := logical.RevokeRequest(tokenapi.PathIdentityToken, &logical.Secret{InternalData: map[string]any{
		"secret_type": resp.Secret.InternalData["secret_type"], "session_id": "../users/bob"}}, nil)
	garbled.Storage = m.storage
	if code, _, msg := m.do(garbled); code != http.StatusOK && code != http.StatusNoContent {
		t.Errorf("revoking a garbled lease: %d %s", code, msg)
	}
	if keys, _ := logical.CollectKeysWithPrefix(t.Context(), m.storage, "users/"); len(keys) != 0 {
		t.Errorf("garbled revocation touched %v", keys)
	}
}

// A session needs no identity_refresh_tokens, takes none of the entity's
// refresh tokens, cannot be asked with offline_token, and only token/batch
// takes it: sent to token/identity or token, it is no credential.
func TestIdentitySession_isNoRefreshTokenAndOnlyForBatches(t *testing.T) {
	m, _ := newIdentityMount(t)
	secret, _ := m.askSession("e-alice")
	if code, resp, _ := m.call(list, "entities/alice/refresh-tokens", nil); code == http.StatusOK && len(resp.Data["keys"].([]string)) != 0 {
		t.Errorf("a session was listed as a refresh token: %v", resp.Data)
	}
	code, _, msg := m.identityCall(tokenapi.PathIdentityToken, "e-alice", map[string]any{tokenapi.FieldIdentitySession: true, "offline_token": true})
	if code != http.StatusBadRequest {
		t.Errorf("identity_session with offline_token: %d %s", code, msg)
	}
	if code, _, _ := m.identityCall(tokenapi.PathIdentityToken, "", map[string]any{tokenapi.FieldIdentitySession: true}); code != http.StatusBadRequest {
		t.Errorf("a session for a token without an entity: %d", code)
	}
	// The relay's token (no entity) cannot use it anywhere but token/batch.
	if code, _, _ := m.identityCall(tokenapi.PathIdentityToken, "", map[string]any{tokenapi.FieldIdentitySession: secret}); code == http.StatusOK {
		t.Error("token/identity took a session's secret as a credential")
	}
	if code, resp, _ := m.call(update, tokenapi.PathToken, map[string]any{"username": "vault", "password": secret}); code == http.StatusOK {
		t.Errorf("token took a session's secret as a password: %v", resp.Data)
	}
}

// A batch resolves each entity once, however many of its requests hold
// that entity's session: they are answered at one moment.
func TestIdentitySession_batchResolvesEachEntityOnce(t *testing.T) {
	m, ids := newIdentityMount(t)
	m.ok(update, "groups/devs", map[string]any{"access": "repository:app/*:pull"})
	alice, _ := m.askSession("e-alice")
	ci, _ := m.askSession("e-ci")
	before := ids.lookups.Load()
	var requests []map[string]any
	for range 10 {
		requests = append(requests, map[string]any{tokenapi.FieldIdentitySession: alice, "scope": []string{"repository:app/x:pull"}},
			map[string]any{tokenapi.FieldIdentitySession: ci, "scope": []string{"repository:app/x:pull"}})
	}
	for i, a := range m.batch(requests...) {
		status, sub, access := sessionGrant(t, a)
		want, wantAccess := "alice", "repository:app/x:pull"
		if i%2 == 1 {
			want, wantAccess = "ci-app", ""
		}
		if status != 200 || sub != want || access != wantAccess {
			t.Errorf("answer %d: %d %q %q, want %q %q", i, status, sub, access, want, wantAccess)
		}
	}
	if n := ids.lookups.Load() - before; n != 2 {
		t.Errorf("%d entity lookups for a batch of 20 requests of 2 entities, want 2", n)
	}
}
