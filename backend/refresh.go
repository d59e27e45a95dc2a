package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Refresh tokens are stored only as their SHA-256, under refresh/<hash>,
// with an index entry under refresh-index/<user>/<hash> so an operator can
// list and revoke a user's tokens. The storage is the mount's own, which
// binds a token to its service.
const (
	refreshPrefix      = "refresh/"
	refreshIndexPrefix = "refresh-index/"
	refreshTokenBytes  = 32 // 256 random bits
	refreshTokenPrefix = "vpr."
)

// A refresh token is not bound to a client_id: public clients choose it
// freely, so binding protects nothing and breaks every tool that reads
// docker's identity token (BuildKit, containerd, crane...). The issuing
// client and the last client that used the token are recorded for auditing.
type storedRefreshToken struct {
	User     string    `json:"user"`
	ClientID string    `json:"client_id"` // the client it was issued to
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	// LastClientID and LastUsed are the last use's; written only when the
	// client changes or LastUsed is older than lastUsedResolution, so a
	// refresh does not cost a storage write each time.
	LastClientID string    `json:"last_client_id,omitempty"`
	LastUsed     time.Time `json:"last_used,omitzero"`
}

// lastUsedResolution is how stale a refresh token's last_used may get.
const lastUsedResolution = time.Hour

// RefreshTokenInfo is what an operator sees of a refresh token: never the
// token itself.
type RefreshTokenInfo struct {
	ID           string    `json:"id"` // first 16 hex digits of the token's hash
	ClientID     string    `json:"client_id"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	LastClientID string    `json:"last_client_id"`
	LastUsed     time.Time `json:"last_used"`
}

func refreshTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (b *Backend) issueRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, user, clientID string) (string, error) {
	raw := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := refreshTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	hash := refreshTokenHash(token)
	now := b.now().UTC()
	rec := storedRefreshToken{User: user, ClientID: clientID, Created: now, Expires: now.Add(cfg.RefreshTokenTTL)}
	// The index first: a token that exists is always listed, so revoking
	// all of a user's tokens cannot miss one.
	if err := s.Put(ctx, &logical.StorageEntry{Key: refreshIndexPrefix + user + "/" + hash}); err != nil {
		return "", fmt.Errorf("store refresh token: %w", err)
	}
	if err := b.putRefreshRecord(ctx, s, hash, rec); err != nil {
		return "", err
	}
	return token, nil
}

func (b *Backend) putRefreshRecord(ctx context.Context, s logical.Storage, hash string, rec storedRefreshToken) error {
	entry, err := logical.StorageEntryJSON(refreshPrefix+hash, rec)
	if err != nil {
		return err
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("store refresh token: %w", err)
	}
	return nil
}

// useRefreshToken returns the user a valid refresh token belongs to, from
// whichever client presents it, and records that client.
func (b *Backend) useRefreshToken(ctx context.Context, s logical.Storage, token, clientID string) (string, error) {
	if len(token) != len(refreshTokenPrefix)+base64.RawURLEncoding.EncodedLen(refreshTokenBytes) {
		return "", errInvalidRefreshToken
	}
	hash := refreshTokenHash(token)
	entry, err := s.Get(ctx, refreshPrefix+hash)
	if err != nil {
		return "", fmt.Errorf("read refresh token: %w", err)
	}
	if entry == nil {
		return "", errInvalidRefreshToken
	}
	var rec storedRefreshToken
	if err := json.Unmarshal(entry.Value, &rec); err != nil {
		return "", fmt.Errorf("decode refresh token: %w", err)
	}
	now := b.now()
	if !now.Before(rec.Expires) {
		return "", errInvalidRefreshToken
	}
	if rec.LastClientID != clientID || now.Sub(rec.LastUsed) >= lastUsedResolution {
		rec.LastClientID, rec.LastUsed = clientID, now.UTC()
		if err := b.putRefreshRecord(ctx, s, hash, rec); err != nil {
			// Only an audit record: the token stays good.
			b.logger.Warn("could not record a refresh token's last use", "id", hash[:16], "error", err)
		}
	}
	return rec.User, nil
}

// ListRefreshTokens lists a user's live refresh tokens.
func (b *Backend) ListRefreshTokens(ctx context.Context, s logical.Storage, user string) ([]RefreshTokenInfo, error) {
	if !ValidUserName(user) {
		return nil, errorf(KindBadRequest, "user name %s: use 1 to 256 letters, digits, _ - . @", quote(user))
	}
	hashes, err := s.List(ctx, refreshIndexPrefix+user+"/")
	if err != nil {
		return nil, fmt.Errorf("list refresh tokens: %w", err)
	}
	now := b.now()
	out := []RefreshTokenInfo{}
	for _, h := range hashes {
		entry, err := s.Get(ctx, refreshPrefix+h)
		if err != nil {
			return nil, fmt.Errorf("read refresh token: %w", err)
		}
		if entry == nil {
			continue
		}
		var rec storedRefreshToken
		if err := json.Unmarshal(entry.Value, &rec); err != nil || !now.Before(rec.Expires) {
			continue
		}
		out = append(out, RefreshTokenInfo{ID: h[:16], ClientID: rec.ClientID, Created: rec.Created, Expires: rec.Expires,
			LastClientID: rec.LastClientID, LastUsed: rec.LastUsed})
	}
	return out, nil
}

// RevokeRefreshTokens deletes all of a user's refresh tokens and returns
// how many there were.
func (b *Backend) RevokeRefreshTokens(ctx context.Context, s logical.Storage, user string) (int, error) {
	hashes, err := s.List(ctx, refreshIndexPrefix+user+"/")
	if err != nil {
		return 0, fmt.Errorf("list refresh tokens: %w", err)
	}
	for _, h := range hashes {
		// The token before its index entry, so a failure halfway leaves
		// the rest listed for the next try.
		if err := s.Delete(ctx, refreshPrefix+h); err != nil {
			return 0, fmt.Errorf("revoke refresh token: %w", err)
		}
		if err := s.Delete(ctx, refreshIndexPrefix+user+"/"+h); err != nil {
			return 0, fmt.Errorf("revoke refresh token: %w", err)
		}
	}
	return len(hashes), nil
}

// PruneRefreshTokens deletes expired refresh tokens and index entries that
// point at nothing. It is the periodic task's; the caller makes sure this
// node may write.
func (b *Backend) PruneRefreshTokens(ctx context.Context, s logical.Storage) (int, error) {
	users, err := s.List(ctx, refreshIndexPrefix)
	if err != nil {
		return 0, err
	}
	now := b.now()
	pruned := 0
	for _, u := range users {
		user := strings.TrimSuffix(u, "/")
		hashes, err := s.List(ctx, refreshIndexPrefix+u)
		if err != nil {
			return pruned, err
		}
		for _, h := range hashes {
			entry, err := s.Get(ctx, refreshPrefix+h)
			if err != nil {
				return pruned, err
			}
			if entry != nil {
				var rec storedRefreshToken
				if json.Unmarshal(entry.Value, &rec) == nil && now.Before(rec.Expires) {
					continue
				}
				if err := s.Delete(ctx, refreshPrefix+h); err != nil {
					return pruned, err
				}
			}
			if err := s.Delete(ctx, refreshIndexPrefix+user+"/"+h); err != nil {
				return pruned, err
			}
			pruned++
		}
	}
	return pruned, nil
}
