package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// Refresh tokens are stored only as their SHA-256, under refresh/<hash>,
// with an index entry under refresh-index/<subject>/<hash> so an operator
// can list and revoke a subject's tokens. The storage is the mount's own,
// which binds a token to its service.
const (
	refreshPrefix      = "refresh/"
	refreshIndexPrefix = "refresh-index/"
	refreshTokenBytes  = 32 // 256 random bits
	refreshTokenPrefix = "vpr."
)

// SubjectUser is the kind of a subject that is a user of users/<name>.
const SubjectUser = "user"

// A Subject is what a refresh token stands for: a kind and an id within
// the kind. Each kind checks its own credential generation when a token is
// used; an id must not contain "/".
type Subject struct {
	Kind string
	ID   string
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
	return Subject{Kind: SubjectUser, ID: dir}
}

// A refresh token is not bound to a client_id: public clients choose it
// freely, so binding protects nothing and breaks every tool that reads
// docker's identity token (BuildKit, containerd, crane...). The issuing
// client and the last client that used the token are recorded for auditing.
type storedRefreshToken struct {
	Kind string `json:"kind,omitempty"` // "" is SubjectUser
	ID   string `json:"user"`           // the subject's id: for a user, the name
	// Generation is the subject's credential generation at issue; the
	// token is good only while the subject's is the same.
	Generation uint64    `json:"generation,omitempty"`
	ClientID   string    `json:"client_id"` // the client it was issued to
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	// LastClientID and LastUsed are the last use's; written only when the
	// client changes or LastUsed is older than lastUsedResolution, so a
	// refresh does not cost a storage write each time.
	LastClientID string    `json:"last_client_id,omitempty"`
	LastUsed     time.Time `json:"last_used,omitzero"`
}

func (r *storedRefreshToken) subject() Subject {
	if r.Kind == "" {
		return Subject{Kind: SubjectUser, ID: r.ID}
	}
	return Subject{Kind: r.Kind, ID: r.ID}
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

// issueRefreshToken stores a new refresh token for the subject at its
// credential generation. The caller holds the subject's lock and has just
// checked that generation, so no change of the subject can slip in between
// the check and the store (a change revokes under the same lock). When the
// subject would hold more than refresh_tokens_per_user live tokens, the
// oldest are revoked.
func (b *Backend) issueRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, sub Subject, generation uint64, clientID string) (string, error) {
	if err := b.capRefreshTokens(ctx, s, sub, cfg.RefreshTokensPerUser-1); err != nil {
		return "", err
	}
	raw := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := refreshTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	hash := refreshTokenHash(token)
	now := b.now().UTC()
	rec := storedRefreshToken{ID: sub.ID, Generation: generation, ClientID: clientID, Created: now, Expires: now.Add(cfg.RefreshTokenTTL)}
	if sub.Kind != SubjectUser {
		rec.Kind = sub.Kind
	}
	// The index first: a token that exists is always listed, so revoking
	// all of a subject's tokens cannot miss one.
	if err := s.Put(ctx, &logical.StorageEntry{Key: refreshIndexPrefix + sub.indexDir() + "/" + hash}); err != nil {
		return "", fmt.Errorf("store refresh token: %w", err)
	}
	if err := b.putRefreshRecord(ctx, s, hash, rec); err != nil {
		return "", err
	}
	return token, nil
}

// capRefreshTokens revokes the subject's oldest refresh tokens until at
// most keep are left. Listing is one storage call; the records are read
// only when there are more than keep.
func (b *Backend) capRefreshTokens(ctx context.Context, s logical.Storage, sub Subject, keep int) error {
	dir := refreshIndexPrefix + sub.indexDir() + "/"
	hashes, err := s.List(ctx, dir)
	if err != nil {
		return fmt.Errorf("list refresh tokens: %w", err)
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
		if err := b.deleteRefreshToken(ctx, s, dir, a.hash); err != nil {
			return err
		}
	}
	b.logger.Debug("revoked the oldest refresh tokens over the cap", "kind", sub.Kind, "revoked", len(all)-keep)
	return nil
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
	entry, err := s.Get(ctx, refreshPrefix+hash)
	if err != nil {
		return nil, fmt.Errorf("read refresh token: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	rec := new(storedRefreshToken)
	if err := json.Unmarshal(entry.Value, rec); err != nil {
		return nil, fmt.Errorf("decode refresh token: %w", err)
	}
	return rec, nil
}

// deleteRefreshToken removes one token: the token before its index entry,
// so a failure halfway leaves it listed for the next try.
func (b *Backend) deleteRefreshToken(ctx context.Context, s logical.Storage, dir, hash string) error {
	if err := s.Delete(ctx, refreshPrefix+hash); err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	if err := s.Delete(ctx, dir+hash); err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	return nil
}

// liveRefreshToken returns the record of a live (known, unexpired)
// refresh token and its hash. The caller checks the subject's generation
// against the record's, then calls recordUse.
func (b *Backend) liveRefreshToken(ctx context.Context, s logical.Storage, token string) (string, *storedRefreshToken, error) {
	if len(token) != len(refreshTokenPrefix)+base64.RawURLEncoding.EncodedLen(refreshTokenBytes) {
		return "", nil, errInvalidRefreshToken
	}
	hash := refreshTokenHash(token)
	rec, err := b.readRefreshRecord(ctx, s, hash)
	if err != nil {
		return "", nil, err
	}
	if rec == nil || !b.now().Before(rec.Expires) {
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

// ListRefreshTokens lists a user's live refresh tokens.
func (b *Backend) ListRefreshTokens(ctx context.Context, s logical.Storage, user string) ([]RefreshTokenInfo, error) {
	if !access.ValidUserName(user) {
		return nil, errorf(KindBadRequest, "user name %s: use 1 to 256 letters, digits, _ - . @", quote(user))
	}
	u, err := b.ReadUser(ctx, s, user)
	if err != nil {
		return nil, err
	}
	hashes, err := s.List(ctx, refreshIndexPrefix+user+"/")
	if err != nil {
		return nil, fmt.Errorf("list refresh tokens: %w", err)
	}
	now := b.now()
	out := []RefreshTokenInfo{}
	for _, h := range hashes {
		rec, err := b.readRefreshRecord(ctx, s, h)
		if err != nil {
			return nil, err
		}
		if rec == nil || !now.Before(rec.Expires) || u == nil || rec.Generation != u.Generation {
			continue // not live
		}
		out = append(out, RefreshTokenInfo{ID: h[:16], ClientID: rec.ClientID, Created: rec.Created, Expires: rec.Expires,
			LastClientID: rec.LastClientID, LastUsed: rec.LastUsed})
	}
	return out, nil
}

// RevokeRefreshTokens deletes all of a user's refresh tokens and returns
// how many there were.
func (b *Backend) RevokeRefreshTokens(ctx context.Context, s logical.Storage, user string) (int, error) {
	if !access.ValidUserName(user) {
		return 0, errorf(KindBadRequest, "user name %s: use 1 to 256 letters, digits, _ - . @", quote(user))
	}
	lock := locksutil.LockForKey(b.userLocks, user)
	lock.Lock()
	defer lock.Unlock()
	return b.revokeRefreshTokens(ctx, s, Subject{Kind: SubjectUser, ID: user})
}

// revokeRefreshTokens deletes all of a subject's refresh tokens; the caller
// holds the subject's lock.
func (b *Backend) revokeRefreshTokens(ctx context.Context, s logical.Storage, sub Subject) (int, error) {
	dir := refreshIndexPrefix + sub.indexDir() + "/"
	hashes, err := s.List(ctx, dir)
	if err != nil {
		return 0, fmt.Errorf("list refresh tokens: %w", err)
	}
	for _, h := range hashes {
		if err := b.deleteRefreshToken(ctx, s, dir, h); err != nil {
			return 0, err
		}
	}
	return len(hashes), nil
}

// pruneBudget bounds the refresh tokens one prune pass reads; the next
// pass goes on where this one stopped.
const pruneBudget = 1000

// PruneRefreshTokens deletes refresh tokens that can no longer be used
// (expired, or of a user deleted or whose password changed since) and index
// entries that point at nothing. It reads at most pruneBudget tokens per
// call and resumes after the last one it read. It is the periodic task's;
// the caller makes sure this node may write.
func (b *Backend) PruneRefreshTokens(ctx context.Context, s logical.Storage) (int, error) {
	b.pruneMu.Lock()
	defer b.pruneMu.Unlock()
	dirs, err := s.List(ctx, refreshIndexPrefix)
	if err != nil {
		return 0, err
	}
	slices.Sort(dirs)
	p := &prunePass{b: b, s: s, now: b.now(), budget: pruneBudget}
	for _, d := range dirs {
		dir := refreshIndexPrefix + d
		if dir < b.pruneCursor && !strings.HasPrefix(b.pruneCursor, dir) {
			continue // done in an earlier pass
		}
		if err := p.dir(ctx, dir, subjectOfIndexDir(strings.TrimSuffix(d, "/"))); err != nil || p.budget == 0 {
			return p.pruned, err
		}
	}
	b.pruneCursor = "" // a full round: the next pass starts again
	return p.pruned, nil
}

type prunePass struct {
	b      *Backend
	s      logical.Storage
	now    time.Time
	budget int // tokens still to read in this pass
	pruned int
}

// dir prunes one subject's tokens, a user's under the user's lock so that
// a token issued at a new generation is not judged by the old one.
func (p *prunePass) dir(ctx context.Context, dir string, sub Subject) error {
	generation, alive := uint64(0), true
	if sub.Kind == SubjectUser {
		lock := locksutil.LockForKey(p.b.userLocks, sub.ID)
		lock.Lock()
		defer lock.Unlock()
		u, err := p.b.ReadUser(ctx, p.s, sub.ID)
		if err != nil {
			return err
		}
		if alive = u != nil; alive {
			generation = u.Generation
		}
	}
	hashes, err := p.s.List(ctx, dir)
	if err != nil {
		return err
	}
	slices.Sort(hashes)
	for _, h := range hashes {
		if dir+h <= p.b.pruneCursor {
			continue
		}
		if p.budget == 0 {
			return nil
		}
		p.budget--
		p.b.pruneCursor = dir + h
		rec, err := p.b.readRefreshRecord(ctx, p.s, h)
		if err != nil {
			return err
		}
		if rec != nil && p.now.Before(rec.Expires) &&
			(sub.Kind != SubjectUser || (alive && rec.Generation == generation)) {
			continue
		}
		if err := p.b.deleteRefreshToken(ctx, p.s, dir, h); err != nil {
			return err
		}
		p.pruned++
	}
	return nil
}
