package backend

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// stubIdentities stands in for Vault's identity store (unit tests only).
type stubIdentities struct {
	entities map[string]*logical.Entity
	groups   map[string][]*logical.Group
}

func (s *stubIdentities) EntityInfo(id string) (*logical.Entity, error) { return s.entities[id], nil }
func (s *stubIdentities) GroupsForEntity(id string) ([]*logical.Group, error) {
	return s.groups[id], nil
}

func TestIdentityRefresh_expiredTokensArePruned(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.IdentityRefreshTokens = true
	f.saveConfig(cfg)
	f.b.SetIdentitySource(&stubIdentities{
		entities: map[string]*logical.Entity{"e1": {ID: "e1", Name: "bot"}},
		groups:   map[string][]*logical.Group{"e1": {{Name: "ci"}}},
	})
	if _, err := f.b.WriteIdentityAccess(f.ctx, f.s, IdentityGroup, "ci", "repository:app:pull"); err != nil {
		t.Fatal(err)
	}
	tok, err := f.b.TokenForIdentity(f.ctx, f.s, IdentityTokenRequest{Service: "registry", EntityID: "e1", Offline: true, Scopes: []string{"repository:app:pull"}})
	if err != nil || tok.RefreshToken == "" || tok.Subject != "bot" || len(tok.Access) != 1 {
		t.Fatalf("mint: %v %+v", err, tok)
	}
	if n, err := f.b.PruneRefreshTokens(f.ctx, f.s); err != nil || n != 0 {
		t.Fatalf("pruned a live token: %d %v", n, err)
	}
	f.clock.Advance(cfg.IdentityRefreshTokenTTL + time.Second)
	if _, err := f.b.TokenForRefreshToken(f.ctx, f.s, RefreshRequest{Service: "registry", RefreshToken: tok.RefreshToken}); err != errInvalidRefreshToken {
		t.Errorf("expired refresh token: %v", err)
	}
	if n, err := f.b.PruneRefreshTokens(f.ctx, f.s); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	for _, prefix := range []string{refreshPrefix, refreshIndexPrefix} {
		if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, prefix); len(keys) != 0 {
			t.Errorf("left %v", keys)
		}
	}
}

// Group and entity access records are kept in memory: a write or delete
// through the plugin applies to the next token, and a change another node
// made applies once Vault invalidates the key.
func TestIdentityAccess_cachedUntilWrittenOrInvalidated(t *testing.T) {
	f := newFixture(t)
	f.b.SetIdentitySource(&stubIdentities{
		entities: map[string]*logical.Entity{"e1": {ID: "e1", Name: "bot"}},
		groups:   map[string][]*logical.Group{"e1": {{Name: "ci"}}},
	})
	grant := func() string {
		t.Helper()
		tok, err := f.b.TokenForIdentity(f.ctx, f.s, IdentityTokenRequest{Service: "registry", EntityID: "e1", Scopes: []string{"repository:app:pull,push"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(tok.Access) == 0 {
			return ""
		}
		return strings.Join(tok.Access[0].Actions, ",")
	}
	write := func(text string) {
		t.Helper()
		if _, err := f.b.WriteIdentityAccess(f.ctx, f.s, IdentityGroup, "ci", text); err != nil {
			t.Fatal(err)
		}
	}
	write("repository:app:pull")
	if g := grant(); g != "pull" {
		t.Fatalf("grant %q, want pull", g)
	}
	write("repository:app:pull,push")
	if g := grant(); g != "pull,push" {
		t.Errorf("after a write: %q, want pull,push", g)
	}
	// Another node's write: storage changes under this node's cache.
	entry, err := logical.StorageEntryJSON(identityKey(IdentityGroup, "ci"), &IdentityAccess{Name: "ci", Access: "repository:app:push"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.Put(f.ctx, entry); err != nil {
		t.Fatal(err)
	}
	if g := grant(); g != "pull,push" {
		t.Errorf("before the invalidation: %q, want the cached pull,push", g)
	}
	f.b.Invalidate(f.ctx, identityKey(IdentityGroup, "ci"))
	if g := grant(); g != "push" {
		t.Errorf("after the invalidation: %q, want push", g)
	}
	if err := f.b.DeleteIdentityAccess(f.ctx, f.s, IdentityGroup, "ci"); err != nil {
		t.Fatal(err)
	}
	if g := grant(); g != "" {
		t.Errorf("after a delete: %q, want nothing", g)
	}
}
