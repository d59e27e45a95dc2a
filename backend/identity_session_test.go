package backend

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A session ends at its TTL even when Vault's revocation of its lease has
// not come (yet), and the housekeeping deletes it: the store keeps at most
// a TTL's worth of sessions. A session issues no refresh token and takes
// none of the entity's refresh_tokens_per_user.
func TestIdentitySession_expiresAndIsPruned(t *testing.T) {
	f := newFixture(t)
	f.b.SetIdentitySource(&stubIdentities{
		entities: map[string]*logical.Entity{"e1": {ID: "e1", Name: "bot"}},
		groups:   map[string][]*logical.Group{"e1": {{Name: "ci"}}},
	})
	if _, err := f.b.WriteIdentityAccess(f.ctx, f.s, IdentityGroup, "ci", "repository:app:pull"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.IssueIdentitySession(f.ctx, f.s, ""); err != errNoEntity {
		t.Errorf("a session without an entity: %v", err)
	}
	s, err := f.b.IssueIdentitySession(f.ctx, f.s, "e1")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, identitySessionPrefix)
	if len(keys) != 1 || keys[0] != identitySessionPrefix+s.ID || s.ID != identitySessionID(s.Secret) {
		t.Fatalf("stored %v for session id %s", keys, s.ID)
	}
	entry, _ := f.s.Get(f.ctx, keys[0])
	if entry == nil || len(entry.Value) == 0 || containsString(entry.Value, s.Secret) {
		t.Fatalf("the stored session holds its secret, or nothing: %v", entry)
	}
	req := IdentityTokenRequest{Service: "registry", Scopes: []string{"repository:app:pull"}, Offline: true, EntityID: "e-other"}
	tok, err := f.b.TokenForIdentitySession(f.ctx, f.s, s.Secret, req)
	if err != nil || tok.Subject != "bot" || len(tok.Access) != 1 || tok.RefreshToken != "" {
		t.Fatalf("mint with the session: %v %+v", err, tok)
	}
	if _, err := f.b.TokenForIdentitySession(f.ctx, f.s, otherSecret(s.Secret), req); err != errInvalidSession {
		t.Errorf("a made-up secret: %v", err)
	}
	if n, err := f.b.PruneIdentitySessions(f.ctx, f.s); err != nil || n != 0 {
		t.Fatalf("pruned a live session: %d %v", n, err)
	}
	f.clock.Advance(IdentitySessionTTL + time.Second)
	if _, err := f.b.TokenForIdentitySession(f.ctx, f.s, s.Secret, req); err != errInvalidSession {
		t.Errorf("an expired session: %v", err)
	}
	if n, err := f.b.PruneIdentitySessions(f.ctx, f.s); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, identitySessionPrefix); len(keys) != 0 {
		t.Errorf("left %v", keys)
	}
	// Vault revoking the lease after the prune: nothing to do, no error.
	if err := f.b.RevokeIdentitySession(f.ctx, f.s, s.ID); err != nil {
		t.Errorf("revoking a pruned session: %v", err)
	}
}

// otherSecret is secret with its first character changed.
func otherSecret(secret string) string {
	if secret[0] == 'A' {
		return "B" + secret[1:]
	}
	return "A" + secret[1:]
}

func containsString(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return true
		}
	}
	return false
}
