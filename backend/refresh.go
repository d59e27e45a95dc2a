package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// The refresh-token store: one for every kind of subject (a user of
// users/<name>, a Vault identity entity), so the cap, the listing, the
// revocation and the prune apply to each kind alike. A token is stored
// only as its SHA-256, under refresh/<hash>, with an index entry under
// refresh-index/<subject>/<hash> so an operator can list and revoke a
// subject's tokens. The storage is the mount's own, which binds a token to
// its service.
const (
	refreshPrefix      = "refresh/"
	refreshIndexPrefix = "refresh-index/"
	refreshTokenBytes  = 32 // 256 random bits
)

// Kinds of subject a refresh token can stand for.
const (
	SubjectUser   = "user"
	SubjectEntity = "entity"
	SubjectRobot  = "robot" // a robot account (robots.go)
)

// tokenPrefixes are the visible forms of each kind's tokens, so that a
// person holding one can tell what it is; the store does not depend on it.
var tokenPrefixes = map[string]string{SubjectUser: "vpr.", SubjectEntity: "vpri.", SubjectRobot: "vprr."}

// A Subject is what a refresh token stands for: a kind and an id within
// the kind (a user's name, an entity's id). An id never contains "/".
type Subject struct {
	Kind string
	ID   string
}

// UserSubject is the subject of the user of users/<name>.
func UserSubject(name string) Subject { return Subject{Kind: SubjectUser, ID: name} }

// EntitySubject is the subject of the Vault identity entity of that id.
func EntitySubject(id string) Subject { return Subject{Kind: SubjectEntity, ID: id} }

// EntityIDPattern is what an identity entity id may be (Vault's are
// UUIDs), for path patterns.
const EntityIDPattern = `[A-Za-z0-9-]{1,64}`

var entityIDRE = regexp.MustCompile(`^` + EntityIDPattern + `$`)

func (sub Subject) check() error {
	switch {
	case sub.Kind == SubjectUser && access.ValidUserName(sub.ID):
	case sub.Kind == SubjectEntity && entityIDRE.MatchString(sub.ID):
	case sub.Kind == SubjectEntity:
		return errorf(KindBadRequest, "entity id %s: a Vault identity entity id such as 5f3c…-…", quote(sub.ID))
	default:
		return errorf(KindBadRequest, "user name %s: use 1 to 256 letters, digits, _ - . @", quote(sub.ID))
	}
	return nil
}

// indexDir is the subject's directory under refresh-index/. A user's is
// its name (as before kinds existed); another kind's is "kind:id", which
// cannot be a user name (no ':' in access.UserNamePattern).
func (sub Subject) indexDir() string {
	if sub.Kind == SubjectUser {
		return sub.ID
	}
	return sub.Kind + ":" + sub.ID
}

func subjectOfIndexDir(dir string) Subject {
	if kind, id, ok := strings.Cut(dir, ":"); ok {
		return Subject{Kind: kind, ID: id}
	}
	return UserSubject(dir)
}

// lock is the subject's write lock: a change of the subject (a user's
// password, a revocation) and the issue of a token exclude each other.
func (b *Backend) subjectLock(sub Subject) sync.Locker {
	return locksutil.LockForKey(b.userLocks, sub.indexDir())
}

// A refresh token is not bound to a client_id: public clients choose it
// freely, so binding protects nothing and breaks every tool that reads
// docker's identity token (BuildKit, containerd, crane...). The issuing
// client and the last client that used the token are recorded for auditing.
type storedRefreshToken struct {
	Kind string `json:"kind,omitempty"` // "" is SubjectUser
	ID   string `json:"user"`           // the subject's id: for a user, the name
	// Generation is a user's credential generation at issue; the token is
	// good only while the user's is the same.
	Generation uint64 `json:"generation,omitempty"`
	// Accessor is the accessor of the Vault token that asked for an
	// entity's token; the token's Vault lease is that Vault token's.
	Accessor string    `json:"accessor,omitempty"`
	ClientID string    `json:"client_id"` // the client it was issued to
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	// LastClientID and LastUsed are the last use's; written only when the
	// client changes or LastUsed is older than lastUsedResolution, so a
	// refresh does not cost a storage write each time.
	LastClientID string    `json:"last_client_id,omitempty"`
	LastUsed     time.Time `json:"last_used,omitzero"`
}

func (r *storedRefreshToken) subject() Subject {
	if r.Kind == "" {
		return UserSubject(r.ID)
	}
	return Subject{Kind: r.Kind, ID: r.ID}
}

// expires is when the token ends under cfg: its own end, and for an entity
// also identity_refresh_token_ttl after its issue, so that shortening the
// setting shortens the tokens already out.
func (r *storedRefreshToken) expires(cfg *Config) time.Time {
	if r.Kind == SubjectEntity {
		if end := r.Created.Add(cfg.IdentityRefreshTokenTTL); end.Before(r.Expires) {
			return end
		}
	}
	return r.Expires
}

// lastUsedResolution is how stale a refresh token's last_used may get.
const lastUsedResolution = time.Hour

// RefreshTokenInfo is what an operator sees of a refresh token: never the
// token itself.
type RefreshTokenInfo struct {
	ID           string // first 16 hex digits of the token's hash
	EntityID     string // for an entity's token
	Accessor     string // of the Vault token that asked for an entity's token
	ClientID     string
	Created      time.Time
	Expires      time.Time
	LastClientID string
	LastUsed     time.Time
}

func refreshTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// refreshGrant is what a new refresh token records of its subject.
type refreshGrant struct {
	Subject    Subject
	Generation uint64 // a user's
	Accessor   string // an entity's: the asking Vault token's
	ClientID   string
	TTL        time.Duration
}

// IssuedRefreshToken is a new refresh token and what its revocation needs.
type IssuedRefreshToken struct {
	Token   string
	Hash    string // its id in the store: RevokeRefreshToken takes it
	Subject Subject
	TTL     time.Duration
}

// issueRefreshToken stores a new refresh token. The caller holds the
// subject's lock and has just checked the subject (a user's generation),
// so no change of the subject can slip in between the check and the store
// (a change revokes under the same lock). When the subject would hold more
// than refresh_tokens_per_user live tokens, the oldest are revoked.
func (b *Backend) issueRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, g refreshGrant) (*IssuedRefreshToken, error) {
	if err := b.capRefreshTokens(ctx, s, g.Subject, cfg.RefreshTokensPerUser-1); err != nil {
		return nil, err
	}
	raw := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	token := tokenPrefixes[g.Subject.Kind] + base64.RawURLEncoding.EncodeToString(raw)
	hash := refreshTokenHash(token)
	now := b.now().UTC()
	rec := storedRefreshToken{ID: g.Subject.ID, Generation: g.Generation, Accessor: g.Accessor, ClientID: g.ClientID,
		Created: now, Expires: now.Add(g.TTL)}
	if g.Subject.Kind != SubjectUser {
		rec.Kind = g.Subject.Kind
	}
	// The index first: a token that exists is always listed, so revoking
	// all of a subject's tokens cannot miss one.
	if err := s.Put(ctx, &logical.StorageEntry{Key: refreshIndexPrefix + g.Subject.indexDir() + "/" + hash}); err != nil {
		return nil, fmt.Errorf("store refresh token: %w", err)
	}
	if err := b.putRefreshRecord(ctx, s, hash, rec); err != nil {
		return nil, err
	}
	return &IssuedRefreshToken{Token: token, Hash: hash, Subject: g.Subject, TTL: g.TTL}, nil
}

// capRefreshTokens revokes the subject's oldest refresh tokens until at
// most keep are left; the caller holds the subject's lock. Listing is one
// storage call; the records are read only when there are more than keep.
func (b *Backend) capRefreshTokens(ctx context.Context, s logical.Storage, sub Subject, keep int) error {
	hashes, err := b.subjectTokens(ctx, s, sub)
	if err != nil {
		return err
	}
	if len(hashes) <= keep {
		return nil
	}
	type aged struct {
		hash    string
		created time.Time // zero for a dangling index entry: oldest
	}
	all := make([]aged, 0, len(hashes))
	for _, h := range hashes {
		rec, err := b.readRefreshRecord(ctx, s, h)
		if err != nil {
			return err
		}
		a := aged{hash: h}
		if rec != nil {
			a.created = rec.Created
		}
		all = append(all, a)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].created.Before(all[j].created) })
	for _, a := range all[:len(all)-keep] {
		if err := b.deleteRefreshToken(ctx, s, sub, a.hash); err != nil {
			return err
		}
	}
	b.logger.Debug("revoked the oldest refresh tokens over the cap", "kind", sub.Kind, "revoked", len(all)-keep)
	return nil
}

// subjectTokens lists the hashes of the subject's tokens; the caller holds
// the subject's lock. An entity's tokens stored in the old layout move
// into the store first, so none is missed.
func (b *Backend) subjectTokens(ctx context.Context, s logical.Storage, sub Subject) ([]string, error) {
	if sub.Kind == SubjectEntity {
		if _, err := b.adoptLegacyEntityTokens(ctx, s, sub.ID, -1); err != nil {
			return nil, err
		}
	}
	hashes, err := s.List(ctx, refreshIndexPrefix+sub.indexDir()+"/")
	if err != nil {
		return nil, fmt.Errorf("list refresh tokens: %w", err)
	}
	return hashes, nil
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

// readRefreshRecord returns the stored token of that hash, or nil.
func (b *Backend) readRefreshRecord(ctx context.Context, s logical.Storage, hash string) (*storedRefreshToken, error) {
	return readJSON[storedRefreshToken](ctx, s, refreshPrefix+hash, "refresh token")
}

// readJSON returns the decoded entry at key, or nil when there is none.
func readJSON[T any](ctx context.Context, s logical.Storage, key, what string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if entry == nil {
		return nil, nil
	}
	v := new(T)
	if err := json.Unmarshal(entry.Value, v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, err)
	}
	return v, nil
}

// deleteRefreshToken removes one token: the token before its index entry,
// so a failure halfway leaves it listed for the next try.
func (b *Backend) deleteRefreshToken(ctx context.Context, s logical.Storage, sub Subject, hash string) error {
	if err := s.Delete(ctx, refreshPrefix+hash); err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	if err := s.Delete(ctx, refreshIndexPrefix+sub.indexDir()+"/"+hash); err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	return nil
}

// liveRefreshToken returns the record of a live (known, unexpired under
// cfg) refresh token and its hash. The caller checks the subject, then
// calls recordUse.
func (b *Backend) liveRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, token string) (string, *storedRefreshToken, error) {
	kind := ""
	for k, prefix := range tokenPrefixes {
		if strings.HasPrefix(token, prefix) && len(token) == len(prefix)+base64.RawURLEncoding.EncodedLen(refreshTokenBytes) {
			kind = k
		}
	}
	if kind == "" {
		return "", nil, errInvalidRefreshToken
	}
	hash := refreshTokenHash(token)
	rec, err := b.readRefreshRecord(ctx, s, hash)
	if err == nil && rec == nil && kind == SubjectEntity {
		rec, err = b.adoptLegacyRefreshToken(ctx, s, hash)
	}
	if err != nil {
		return "", nil, err
	}
	if rec == nil || rec.subject().Kind != kind || !b.now().Before(rec.expires(cfg)) {
		return "", nil, errInvalidRefreshToken
	}
	return hash, rec, nil
}

// recordUse records the client that used a refresh token, whichever it is.
// It writes only when the client changed or the last use is older than
// lastUsedResolution; a failed write is logged, not fatal: it is an audit
// record and the token stays good.
func (b *Backend) recordUse(ctx context.Context, s logical.Storage, hash string, rec *storedRefreshToken, clientID string) {
	now := b.now()
	if rec.LastClientID == clientID && now.Sub(rec.LastUsed) < lastUsedResolution {
		return
	}
	rec.LastClientID, rec.LastUsed = clientID, now.UTC()
	if err := b.putRefreshRecord(ctx, s, hash, *rec); err != nil {
		b.logger.Warn("could not record a refresh token's last use", "id", hash[:16], "error", err)
	}
}

// ListRefreshTokens lists a subject's live refresh tokens.
func (b *Backend) ListRefreshTokens(ctx context.Context, s logical.Storage, sub Subject) ([]RefreshTokenInfo, error) {
	if err := sub.check(); err != nil {
		return nil, err
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, err
	}
	live := func(*storedRefreshToken) bool { return true }
	if sub.Kind == SubjectUser {
		u, err := b.ReadUser(ctx, s, sub.ID)
		if err != nil {
			return nil, err
		}
		live = func(rec *storedRefreshToken) bool { return u != nil && rec.Generation == u.Generation }
	}
	lock := b.subjectLock(sub)
	lock.Lock()
	hashes, err := b.subjectTokens(ctx, s, sub)
	lock.Unlock()
	if err != nil {
		return nil, err
	}
	now := b.now()
	out := []RefreshTokenInfo{}
	for _, h := range hashes {
		rec, err := b.readRefreshRecord(ctx, s, h)
		if err != nil {
			return nil, err
		}
		if rec == nil || !now.Before(rec.expires(cfg)) || !live(rec) {
			continue
		}
		info := RefreshTokenInfo{ID: h[:16], Accessor: rec.Accessor, ClientID: rec.ClientID, Created: rec.Created,
			Expires: rec.expires(cfg), LastClientID: rec.LastClientID, LastUsed: rec.LastUsed}
		if sub.Kind == SubjectEntity {
			info.EntityID = sub.ID
		}
		out = append(out, info)
	}
	return out, nil
}

// RevokeRefreshTokens deletes all of a subject's refresh tokens and
// returns how many there were.
func (b *Backend) RevokeRefreshTokens(ctx context.Context, s logical.Storage, sub Subject) (int, error) {
	if err := sub.check(); err != nil {
		return 0, err
	}
	lock := b.subjectLock(sub)
	lock.Lock()
	defer lock.Unlock()
	return b.revokeRefreshTokens(ctx, s, sub)
}

// revokeRefreshTokens deletes all of a subject's refresh tokens; the caller
// holds the subject's lock.
func (b *Backend) revokeRefreshTokens(ctx context.Context, s logical.Storage, sub Subject) (int, error) {
	hashes, err := b.subjectTokens(ctx, s, sub)
	if err != nil {
		return 0, err
	}
	for _, h := range hashes {
		if err := b.deleteRefreshToken(ctx, s, sub, h); err != nil {
			return 0, err
		}
	}
	return len(hashes), nil
}

// RevokeRefreshToken deletes one refresh token of the subject, if it is
// still there: what Vault's revocation of the token's lease does.
func (b *Backend) RevokeRefreshToken(ctx context.Context, s logical.Storage, sub Subject, hash string) error {
	if err := sub.check(); err != nil {
		return err
	}
	if len(hash) != sha256.Size*2 {
		return errorf(KindBadRequest, "refresh token id %s: want its SHA-256 in hex", quote(hash))
	}
	lock := b.subjectLock(sub)
	lock.Lock()
	defer lock.Unlock()
	return b.deleteRefreshToken(ctx, s, sub, hash)
}
