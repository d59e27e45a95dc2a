package backend

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// newRawToken makes a token of the kind's form without storing it.
func newRawToken(t *testing.T, kind string) (token, hash string) {
	t.Helper()
	raw := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	token = tokenPrefixes[kind] + base64.RawURLEncoding.EncodeToString(raw)
	return token, refreshTokenHash(token)
}

func (f *fixture) putRaw(key, value string) {
	f.t.Helper()
	if err := f.s.Put(f.ctx, &logical.StorageEntry{Key: key, Value: []byte(value)}); err != nil {
		f.t.Fatal(err)
	}
}

// putLegacyIdentityToken stores an entity's token as v0.1.0 did.
func (f *fixture) putLegacyIdentityToken(entityID string, created, expires time.Time) string {
	f.t.Helper()
	token, hash := newRawToken(f.t, SubjectEntity)
	f.putRaw(legacyIdentityIndexPrefix+entityID+"/"+hash, "")
	f.putRaw(legacyIdentityPrefix+hash, fmt.Sprintf(`{"entity_id":%q,"client_id":"docker","created":%q,"expires":%q}`,
		entityID, created.Format(time.RFC3339Nano), expires.Format(time.RFC3339Nano)))
	return token
}

func (f *fixture) identitiesOn(entities ...string) *stubIdentities {
	f.t.Helper()
	cfg := f.config()
	cfg.IdentityRefreshTokens = true
	f.saveConfig(cfg)
	ids := &stubIdentities{entities: map[string]*logical.Entity{}}
	for _, e := range entities {
		ids.entities[e] = &logical.Entity{ID: e, Name: "name-of-" + e}
	}
	f.b.SetIdentitySource(ids)
	return ids
}

// Refresh tokens stored by v0.1.0, a user's (refresh/, as now) and an
// entity's (identity-refresh/, a store of its own then), still mint after
// the change; the entity's move into the one store on use, and on the
// operator's list and revoke, so none escapes them.
func TestRefreshStore_oldLayoutRecordsStillWork(t *testing.T) {
	f := newFixture(t)
	f.identitiesOn("e1")
	f.addUser("bob", "pw", "repository:bob/*:pull")
	bob, err := f.b.ReadUser(f.ctx, f.s, "bob")
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now().UTC()
	userToken, userHash := newRawToken(t, SubjectUser)
	f.putRaw(refreshIndexPrefix+"bob/"+userHash, "")
	f.putRaw(refreshPrefix+userHash, fmt.Sprintf(`{"user":"bob","generation":%d,"client_id":"docker","created":%q,"expires":%q}`,
		bob.Generation, now.Format(time.RFC3339Nano), now.Add(720*time.Hour).Format(time.RFC3339Nano)))
	used := f.putLegacyIdentityToken("e1", now, now.Add(720*time.Hour))
	listed := f.putLegacyIdentityToken("e1", now, now.Add(720*time.Hour))

	if tok, err := f.refresh(userToken, "docker", "repository:bob/app:pull"); err != nil || tok.Subject != "bob" || len(tok.Access) != 1 {
		t.Fatalf("a user's token of the old layout: %v %+v", err, tok)
	}
	if tok, err := f.refresh(used, "docker"); err != nil || tok.Subject != "name-of-e1" {
		t.Fatalf("an entity's token of the old layout: %v %+v", err, tok)
	}
	if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, legacyIdentityPrefix); len(keys) != 0 {
		t.Errorf("the old layout is still there after use and listing: %v", keys)
	}
	list, err := f.b.ListRefreshTokens(f.ctx, f.s, EntitySubject("e1"))
	if err != nil || len(list) != 2 {
		t.Fatalf("the entity's tokens: %v %+v; want both", err, list)
	}
	if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, "identity-refresh"); len(keys) != 0 {
		t.Errorf("old-layout keys left after the list: %v", keys)
	}
	if n, err := f.b.RevokeRefreshTokens(f.ctx, f.s, EntitySubject("e1")); err != nil || n != 2 {
		t.Fatalf("revoked %d, %v; want 2", n, err)
	}
	for _, rt := range []string{used, listed} {
		if _, err := f.refresh(rt, "docker"); err != errInvalidRefreshToken {
			t.Errorf("a revoked token of the old layout: %v", err)
		}
	}
	// An old-layout token ends identity_refresh_token_ttl after its issue,
	// though it was issued for 720h.
	late := f.putLegacyIdentityToken("e1", now, now.Add(720*time.Hour))
	f.clock.Advance(f.config().IdentityRefreshTokenTTL + time.Second)
	if _, err := f.refresh(late, "docker"); err != errInvalidRefreshToken {
		t.Errorf("an old-layout token past identity_refresh_token_ttl: %v", err)
	}
	if _, err := f.refresh(userToken, "docker"); err != nil {
		t.Errorf("the user's token of the old layout after a day: %v", err)
	}
}

// One prune budget covers every kind: users', entities' and old-layout
// tokens, 2,500 expired, are read at most pruneBudget per pass.
func TestRefresh_pruneBudgetCoversEveryKind(t *testing.T) {
	f := newFixture(t)
	f.identitiesOn("e1", "e2", "e3")
	cfg := f.config()
	cfg.RefreshTokensPerUser = maxRefreshTokensPerUser
	f.saveConfig(cfg)
	const perSubject = 500
	for _, sub := range []Subject{UserSubject("u1"), UserSubject("u2"), EntitySubject("e1"), EntitySubject("e2")} {
		for range perSubject {
			if _, err := f.b.issueRefreshToken(f.ctx, f.s, cfg, refreshGrant{Subject: sub, TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
	}
	now := f.clock.Now().UTC()
	for range perSubject {
		f.putLegacyIdentityToken("e3", now, now.Add(time.Hour))
	}
	f.clock.Advance(2 * time.Hour)
	var passes []int
	for total := 0; total < 5*perSubject && len(passes) < 10; {
		n, err := f.b.PruneRefreshTokens(f.ctx, f.s)
		if err != nil {
			t.Fatal(err)
		}
		passes = append(passes, n)
		total += n
	}
	t.Logf("MEASURE prune passes over users', entities' and old-layout tokens=%v budget=%d", passes, pruneBudget)
	// The first pass spends 500 of its budget moving the old layout.
	if fmt.Sprint(passes) != fmt.Sprint([]int{pruneBudget - perSubject, pruneBudget, pruneBudget}) {
		t.Errorf("pruned per pass %v; want 500, then %d, %d", passes, pruneBudget, pruneBudget)
	}
	for _, prefix := range []string{refreshPrefix, refreshIndexPrefix, legacyIdentityPrefix, legacyIdentityIndexPrefix} {
		if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, prefix); len(keys) != 0 {
			t.Errorf("%d keys left under %s", len(keys), prefix)
		}
	}
}

// The tokens of an entity Vault no longer has are pruned before their
// end; a disabled entity's stay (refused while it is disabled).
func TestIdentityRefresh_deletedEntitysTokensPruned(t *testing.T) {
	f := newFixture(t)
	ids := f.identitiesOn("gone", "off")
	for _, e := range []string{"gone", "off"} {
		if _, err := f.b.TokenForIdentity(f.ctx, f.s, IdentityTokenRequest{Service: "registry", EntityID: e, Offline: true}); err != nil {
			t.Fatal(err)
		}
	}
	delete(ids.entities, "gone")
	ids.entities["off"].Disabled = true
	if n, err := f.b.PruneRefreshTokens(f.ctx, f.s); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1 (the deleted entity's)", n, err)
	}
	if list, _ := f.b.ListRefreshTokens(f.ctx, f.s, EntitySubject("off")); len(list) != 1 {
		t.Errorf("the disabled entity's tokens: %+v", list)
	}
}
