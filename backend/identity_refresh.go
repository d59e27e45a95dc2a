package backend

import (
	"context"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// Refresh tokens of Vault identities (entities) are off unless the config
// turns them on (identity_refresh_tokens). They live in the one
// refresh-token store (refresh.go) as the entity's, under the same
// per-subject cap, listing, revocation and prune as users' tokens. Each
// is issued with a Vault lease of the Vault token that asked for it
// (paths: the token/identity answer carries the lease), so Vault revokes
// the refresh token when that Vault token is revoked or expires; it also
// ends identity_refresh_token_ttl after its issue, when the operator
// revokes it, and when the entity is deleted or disabled (each refresh
// looks the entity up again, and grants its groups' access as it is then).

// issueEntityRefreshToken issues a refresh token for the entity, asked by
// the Vault token of that accessor, under the entity's lock.
func (b *Backend) issueEntityRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, entityID, accessor, clientID string) (*IssuedRefreshToken, error) {
	sub := EntitySubject(entityID)
	if err := sub.check(); err != nil {
		return nil, err
	}
	lock := b.subjectLock(sub)
	lock.Lock()
	defer lock.Unlock()
	return b.issueRefreshToken(ctx, s, cfg, refreshGrant{Subject: sub, Accessor: accessor, ClientID: clientID, TTL: cfg.IdentityRefreshTokenTTL})
}

// entityTokenFromRefresh mints a token from an entity's live refresh token,
// with the entity's access as it is now.
func (b *Backend) entityTokenFromRefresh(ctx context.Context, s logical.Storage, cfg *Config, scopes []access.Scope, req RefreshRequest, hash string, rec *storedRefreshToken) (*Token, error) {
	if !cfg.IdentityRefreshTokens {
		return nil, errInvalidRefreshToken
	}
	ids, err := b.identitySource()
	if err != nil {
		return nil, err
	}
	id, err := b.ResolveIdentity(ctx, s, cfg, ids, rec.ID)
	if err != nil {
		if e, ok := AsError(err); ok && e.Kind == KindUnauthorized {
			// The entity was deleted or disabled: its tokens die with it.
			return nil, errInvalidRefreshToken
		}
		return nil, err
	}
	b.recordUse(ctx, s, hash, rec, req.ClientID)
	return b.sign(ctx, s, cfg, req.Service, id.Subject, access.GrantScopes(id.PatternUser, req.ClientAddr, scopes, id.Lists...), req.TTL)
}

// EntitySubjects are the subjects of the entities, among those holding
// refresh tokens here, that Vault names so now (one at most: Vault's
// entity names are unique). An entity Vault no longer has is found by its
// id only.
func (b *Backend) EntitySubjects(ctx context.Context, s logical.Storage, name string) ([]Subject, error) {
	if !access.ValidUserName(name) {
		return nil, errorf(KindBadRequest, "entity name %s: use 1 to 256 letters, digits, _ - . @", quote(name))
	}
	ids, err := b.identitySource()
	if err != nil {
		return nil, err
	}
	dirs, err := s.List(ctx, refreshIndexPrefix)
	if err != nil {
		return nil, err
	}
	legacy, err := s.List(ctx, legacyIdentityIndexPrefix)
	if err != nil {
		return nil, err
	}
	for _, d := range legacy {
		dirs = append(dirs, EntitySubject(strings.TrimSuffix(d, "/")).indexDir()+"/")
	}
	slices.Sort(dirs)
	var out []Subject
	for _, d := range slices.Compact(dirs) {
		sub := subjectOfIndexDir(strings.TrimSuffix(d, "/"))
		if sub.Kind != SubjectEntity {
			continue
		}
		e, err := ids.EntityInfo(sub.ID)
		if err != nil {
			return nil, err
		}
		if e != nil && e.Name == name {
			out = append(out, sub)
		}
	}
	return out, nil
}
