package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Identity sessions let the relay put the token requests of a Vault
// identity into token/batch, whose caller is the relay's own Vault token.
// A session is asked for on token/identity, so with the Vault token of the
// identity itself, and issued as a Vault lease of that token (paths): Vault
// revokes the lease, and so the session, when that token is revoked or
// expires, or after IdentitySessionTTL. The session names the entity of
// the token that asked for it, and no other; each request made with it is
// granted the entity's access as it is then (its groups, its own access,
// the anonymous access), and refused once the entity is deleted or
// disabled.
//
// The secret (256 random bits) goes to the caller only; the store keeps
// its SHA-256 as the record's name, never the secret, like refresh tokens.
// A secret alone is useless: only token/batch takes it, and only the relay
// holds update there. Sessions are not refresh tokens: they need no
// identity_refresh_tokens, are not counted against refresh_tokens_per_user
// and cannot be refreshed or renewed.

// IdentitySessionTTL bounds a session's life; Vault ends it sooner with
// the Vault token that asked for it.
const IdentitySessionTTL = time.Minute

const (
	identitySessionPrefix = "identity-sessions/"
	// identitySessionsKept bounds the session records kept in memory.
	identitySessionsKept = 65536
	identitySessionBytes = 32
)

// identitySessionIDRE is a session's id: the hex SHA-256 of its secret.
var identitySessionIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// IdentitySession is a stored session: the entity it stands for, and
// until when.
type IdentitySession struct {
	EntityID string    `json:"entity_id"`
	Expires  time.Time `json:"expires"`
}

// IssuedIdentitySession is a session just issued: the secret for the
// caller, the id its lease keeps.
type IssuedIdentitySession struct {
	Secret string
	ID     string
	TTL    time.Duration
}

// errInvalidSession refuses a session that is unknown, expired or revoked.
var errInvalidSession = &Error{Kind: KindUnauthorized, Msg: "identity session unknown, expired or revoked"}

func identitySessionID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// IssueIdentitySession stores a new session for the entity, for
// IdentitySessionTTL.
func (b *Backend) IssueIdentitySession(ctx context.Context, s logical.Storage, entityID string) (*IssuedIdentitySession, error) {
	if err := EntitySubject(entityID).check(); err != nil || entityID == "" {
		return nil, errNoEntity
	}
	var raw [identitySessionBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	id := identitySessionID(secret)
	rec := IdentitySession{EntityID: entityID, Expires: b.now().UTC().Add(IdentitySessionTTL)}
	entry, err := logical.StorageEntryJSON(identitySessionPrefix+id, rec)
	if err != nil {
		return nil, err
	}
	if err := s.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("store identity session: %w", err)
	}
	return &IssuedIdentitySession{Secret: secret, ID: id, TTL: IdentitySessionTTL}, nil
}

// TokenForIdentitySession mints as TokenForIdentity for the entity of a live
// session; req's EntityID, Accessor and Offline are ignored.
func (b *Backend) TokenForIdentitySession(ctx context.Context, s logical.Storage, secret string, req IdentityTokenRequest) (*Token, error) {
	if len(secret) != base64.RawURLEncoding.EncodedLen(identitySessionBytes) {
		return nil, errInvalidSession
	}
	rec, err := b.liveIdentitySession(ctx, s, identitySessionID(secret))
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errInvalidSession
	}
	req.EntityID, req.Accessor, req.Offline = rec.EntityID, "", false
	tok, err := b.tokenForIdentity(ctx, s, req, identityMemoOf(ctx))
	if e, ok := AsError(err); ok && e.Kind == KindUnauthorized {
		return nil, errInvalidSession // the entity was deleted or disabled
	}
	return tok, err
}

// liveIdentitySession reads a session that has not expired; nil if none.
func (b *Backend) liveIdentitySession(ctx context.Context, s logical.Storage, id string) (*IdentitySession, error) {
	rec, err := readRecord(ctx, s, b.sessions, identitySessionPrefix+id, "identity session", id, nil)
	if err != nil || rec == nil || !b.now().Before(rec.Expires) {
		return nil, err
	}
	return rec, nil
}

// RevokeIdentitySession deletes a session; a session that is gone, or an
// id that names none, is not an error, so Vault may revoke its lease
// again (after a failure, or a restart of the plugin) without harm.
func (b *Backend) RevokeIdentitySession(ctx context.Context, s logical.Storage, id string) error {
	if !identitySessionIDRE.MatchString(id) {
		return nil
	}
	err := s.Delete(ctx, identitySessionPrefix+id)
	b.sessions.drop(id)
	if err != nil {
		return fmt.Errorf("revoke identity session: %w", err)
	}
	return nil
}

// PruneIdentitySessions deletes the sessions past their end whose lease
// revocation did not (yet) delete them, so that the store never keeps more
// than a session TTL's worth of sessions.
func (b *Backend) PruneIdentitySessions(ctx context.Context, s logical.Storage) (int, error) {
	ids, err := s.List(ctx, identitySessionPrefix)
	if err != nil {
		return 0, fmt.Errorf("list identity sessions: %w", err)
	}
	pruned := 0
	for _, id := range ids {
		if strings.HasSuffix(id, "/") {
			continue
		}
		entry, err := s.Get(ctx, identitySessionPrefix+id)
		if err != nil {
			return pruned, fmt.Errorf("read identity session: %w", err)
		}
		var rec IdentitySession
		if entry != nil && entry.DecodeJSON(&rec) == nil && b.now().Before(rec.Expires) {
			continue
		}
		if err := s.Delete(ctx, identitySessionPrefix+id); err != nil {
			return pruned, fmt.Errorf("prune identity session: %w", err)
		}
		b.sessions.drop(id)
		pruned++
	}
	return pruned, nil
}

// identityMemo resolves each entity once per token/batch call: the
// requests of a batch are answered at one moment, so those of one entity
// see its groups and access as they are then, read once.
type identityMemo struct {
	mu      sync.Mutex
	entries map[string]*memoIdentity
}

type memoIdentity struct {
	once sync.Once
	id   *Identity
	err  error
}

type identityMemoKey struct{}

// WithIdentityMemo gives the requests of one batch a shared memo of the
// entities they resolve.
func WithIdentityMemo(ctx context.Context) context.Context {
	return context.WithValue(ctx, identityMemoKey{}, &identityMemo{entries: map[string]*memoIdentity{}})
}

// identityMemoOf is ctx's memo; nil outside a batch.
func identityMemoOf(ctx context.Context) *identityMemo {
	m, _ := ctx.Value(identityMemoKey{}).(*identityMemo)
	return m
}

// resolve is ResolveIdentity, once per entity of the memo; a nil memo
// resolves every time.
func (m *identityMemo) resolve(entityID string, resolve func() (*Identity, error)) (*Identity, error) {
	if m == nil {
		return resolve()
	}
	m.mu.Lock()
	e, ok := m.entries[entityID]
	if !ok {
		e = &memoIdentity{}
		m.entries[entityID] = e
	}
	m.mu.Unlock()
	e.once.Do(func() { e.id, e.err = resolve() })
	return e.id, e.err
}
