package backend

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// Refresh tokens of Vault identities are bound to the entity, not to a
// Vault token: they live on after the Vault token that asked for them, and
// die with the entity. Each refresh looks the entity up again, so a deleted
// or disabled entity's tokens are refused, and the grant follows the
// entity's groups as they are at that moment. Stored like users' refresh
// tokens: only the SHA-256, under identity-refresh/<hash>, indexed under
// identity-refresh-index/<entity id>/<hash>.
const (
	identityRefreshPrefix      = "identity-refresh/"
	identityRefreshIndexPrefix = "identity-refresh-index/"
	identityRefreshTokenPrefix = "vpri."
)

type storedIdentityRefreshToken struct {
	EntityID string    `json:"entity_id"`
	ClientID string    `json:"client_id"` // recorded for auditing; not a binding
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
}

// IsIdentityRefreshToken tells an identity's refresh token from a user's
// by its form; neither is looked up.
func IsIdentityRefreshToken(token string) bool {
	return strings.HasPrefix(token, identityRefreshTokenPrefix)
}

func (b *Backend) issueIdentityRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, entityID, clientID string) (string, error) {
	raw := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := identityRefreshTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	hash := refreshTokenHash(token)
	now := b.now().UTC()
	rec := storedIdentityRefreshToken{EntityID: entityID, ClientID: clientID, Created: now, Expires: now.Add(cfg.RefreshTokenTTL)}
	entry, err := logical.StorageEntryJSON(identityRefreshPrefix+hash, rec)
	if err != nil {
		return "", err
	}
	// The index first, so that every stored token is listed.
	if err := s.Put(ctx, &logical.StorageEntry{Key: identityRefreshIndexPrefix + entityID + "/" + hash}); err != nil {
		return "", fmt.Errorf("store refresh token: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return "", fmt.Errorf("store refresh token: %w", err)
	}
	return token, nil
}

// MintFromIdentityRefresh mints a token from an identity's refresh token,
// with the entity's access as it is now. client_id is not checked: public
// clients choose it freely.
func (b *Backend) MintFromIdentityRefresh(ctx context.Context, s logical.Storage, req RefreshRequest) (*Token, error) {
	ids, scopes, cfg, err := b.identityRequest(ctx, s, req.Scopes, req.ClientID)
	if err != nil {
		return nil, err
	}
	if cfg.RefreshTokenTTL == 0 || len(req.RefreshToken) != len(identityRefreshTokenPrefix)+base64.RawURLEncoding.EncodedLen(refreshTokenBytes) {
		return nil, errInvalidRefreshToken
	}
	hash := refreshTokenHash(req.RefreshToken)
	entry, err := s.Get(ctx, identityRefreshPrefix+hash)
	if err != nil {
		return nil, fmt.Errorf("read refresh token: %w", err)
	}
	if entry == nil {
		return nil, errInvalidRefreshToken
	}
	var rec storedIdentityRefreshToken
	if err := json.Unmarshal(entry.Value, &rec); err != nil {
		return nil, fmt.Errorf("decode refresh token: %w", err)
	}
	if !b.now().Before(rec.Expires) {
		return nil, errInvalidRefreshToken
	}
	id, err := b.ResolveIdentity(ctx, s, cfg, ids, rec.EntityID)
	if err != nil {
		if e, ok := AsError(err); ok && e.Kind == KindUnauthorized {
			// The entity was deleted or disabled: its tokens die with it.
			return nil, errInvalidRefreshToken
		}
		return nil, err
	}
	tok, err := b.sign(ctx, s, cfg, req.Service, id.Subject, access.GrantScopes(id.PatternUser, req.ClientAddr, scopes, id.Lists...), req.TTL)
	if err != nil {
		return nil, err
	}
	tok.RefreshToken = req.RefreshToken
	return tok, nil
}

// PruneIdentityRefreshTokens deletes expired identity refresh tokens; the
// periodic task's, on the node that may write.
func (b *Backend) PruneIdentityRefreshTokens(ctx context.Context, s logical.Storage) (int, error) {
	entities, err := s.List(ctx, identityRefreshIndexPrefix)
	if err != nil {
		return 0, err
	}
	now := b.now()
	pruned := 0
	for _, e := range entities {
		hashes, err := s.List(ctx, identityRefreshIndexPrefix+e)
		if err != nil {
			return pruned, err
		}
		for _, h := range hashes {
			entry, err := s.Get(ctx, identityRefreshPrefix+h)
			if err != nil {
				return pruned, err
			}
			if entry != nil {
				var rec storedIdentityRefreshToken
				if json.Unmarshal(entry.Value, &rec) == nil && now.Before(rec.Expires) {
					continue
				}
				if err := s.Delete(ctx, identityRefreshPrefix+h); err != nil {
					return pruned, err
				}
			}
			if err := s.Delete(ctx, identityRefreshIndexPrefix+e+h); err != nil {
				return pruned, err
			}
			pruned++
		}
	}
	return pruned, nil
}
