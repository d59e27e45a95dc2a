package backend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Until v0.2.0, an entity's refresh tokens had a store of their own:
// identity-refresh/<hash>, indexed under identity-refresh-index/<entity
// id>/<hash>. Such a token moves into the one store when it is used, when
// its entity's tokens are capped, listed or revoked, and in the periodic
// prune (within its budget), always under the entity's lock; after the
// move it is an entity's token like any other, without a Vault lease (it
// was issued without one) and ended by identity_refresh_token_ttl after
// its issue at the latest.
const (
	legacyIdentityPrefix      = "identity-refresh/"
	legacyIdentityIndexPrefix = "identity-refresh-index/"
)

// legacyIdentityToken is the old layout's record.
type legacyIdentityToken struct {
	EntityID string    `json:"entity_id"`
	ClientID string    `json:"client_id"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
}

// adoptLegacyRefreshToken moves the old-layout token of that hash, if
// there is one, and returns its record in the new layout, or nil.
func (b *Backend) adoptLegacyRefreshToken(ctx context.Context, s logical.Storage, hash string) (*storedRefreshToken, error) {
	old, err := readLegacyIdentityToken(ctx, s, hash)
	if err != nil || old == nil {
		return nil, err
	}
	sub := EntitySubject(old.EntityID)
	lock := b.subjectLock(sub)
	lock.Lock()
	defer lock.Unlock()
	if _, err := b.adoptLegacyEntityTokens(ctx, s, old.EntityID, -1); err != nil {
		return nil, err
	}
	// Moved now, or meanwhile (and perhaps revoked since): read it anew.
	return b.readRefreshRecord(ctx, s, hash)
}

// adoptLegacyEntityTokens moves up to budget (-1: all) of one entity's
// old-layout tokens into the store and returns how many it read; the
// caller holds the entity's lock.
func (b *Backend) adoptLegacyEntityTokens(ctx context.Context, s logical.Storage, entityID string, budget int) (int, error) {
	dir := legacyIdentityIndexPrefix + entityID + "/"
	hashes, err := s.List(ctx, dir)
	if err != nil {
		return 0, fmt.Errorf("list refresh tokens: %w", err)
	}
	read := 0
	for _, h := range hashes {
		if read == budget {
			break
		}
		read++
		old, err := readLegacyIdentityToken(ctx, s, h)
		if err != nil {
			return read, err
		}
		if old != nil && old.EntityID == entityID {
			// The index first, as issueRefreshToken does; the old record
			// goes only once the new one is stored.
			if err := s.Put(ctx, &logical.StorageEntry{Key: refreshIndexPrefix + EntitySubject(entityID).indexDir() + "/" + h}); err != nil {
				return read, fmt.Errorf("store refresh token: %w", err)
			}
			rec := storedRefreshToken{Kind: SubjectEntity, ID: entityID, ClientID: old.ClientID, Created: old.Created, Expires: old.Expires}
			if err := b.putRefreshRecord(ctx, s, h, rec); err != nil {
				return read, err
			}
			if err := s.Delete(ctx, legacyIdentityPrefix+h); err != nil {
				return read, fmt.Errorf("move refresh token: %w", err)
			}
		}
		if err := s.Delete(ctx, dir+h); err != nil {
			return read, fmt.Errorf("move refresh token: %w", err)
		}
	}
	return read, nil
}

// adoptLegacyTokens moves old-layout tokens into the store, reading at
// most budget of them, and returns the budget left.
func (b *Backend) adoptLegacyTokens(ctx context.Context, s logical.Storage, budget int) (int, error) {
	entities, err := s.List(ctx, legacyIdentityIndexPrefix)
	if err != nil {
		return budget, err
	}
	for _, e := range entities {
		if budget == 0 {
			break
		}
		id, ok := strings.CutSuffix(e, "/") // a directory: "<entity id>/"
		if !ok {
			continue
		}
		lock := b.subjectLock(EntitySubject(id))
		lock.Lock()
		n, err := b.adoptLegacyEntityTokens(ctx, s, id, budget)
		lock.Unlock()
		budget -= n
		if err != nil {
			return budget, err
		}
	}
	return budget, nil
}

func readLegacyIdentityToken(ctx context.Context, s logical.Storage, hash string) (*legacyIdentityToken, error) {
	return readJSON[legacyIdentityToken](ctx, s, legacyIdentityPrefix+hash, "refresh token")
}
