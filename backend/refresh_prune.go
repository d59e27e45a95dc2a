package backend

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// pruneBudget bounds the refresh tokens one prune pass reads; the next
// pass goes on where this one stopped.
const pruneBudget = 1000

// PruneRefreshTokens deletes refresh tokens that can no longer be used
// (expired; a user's of a user deleted or whose password changed since;
// an entity's of an entity deleted from Vault) and index entries that
// point at nothing, of every kind of subject. It reads at most
// pruneBudget tokens per call and resumes after the last one it read;
// tokens still in the old identity layout count against the same budget
// as they move into the store. It is the periodic task's; the caller
// makes sure this node may write.
func (b *Backend) PruneRefreshTokens(ctx context.Context, s logical.Storage) (int, error) {
	b.pruneMu.Lock()
	defer b.pruneMu.Unlock()
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return 0, err
	}
	p := &prunePass{b: b, s: s, cfg: cfg, now: b.now(), budget: pruneBudget}
	if p.budget, err = b.adoptLegacyTokens(ctx, s, p.budget); err != nil || p.budget == 0 {
		return 0, err
	}
	dirs, err := s.List(ctx, refreshIndexPrefix)
	if err != nil {
		return 0, err
	}
	slices.Sort(dirs)
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
	cfg    *Config
	now    time.Time
	budget int // tokens still to read in this pass
	pruned int
}

// dir prunes one subject's tokens under the subject's lock, so that a
// token issued at a user's new generation is not judged by the old one.
func (p *prunePass) dir(ctx context.Context, dir string, sub Subject) error {
	lock := p.b.subjectLock(sub)
	lock.Lock()
	defer lock.Unlock()
	alive, err := p.alive(ctx, sub)
	if err != nil {
		return err
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
		if rec != nil && p.now.Before(rec.expires(p.cfg)) && alive(rec) {
			continue
		}
		if err := p.b.deleteRefreshToken(ctx, p.s, sub, h); err != nil {
			return err
		}
		p.pruned++
	}
	return nil
}

// alive says which of the subject's tokens its subject still backs: a
// user's of the current generation; an entity's while Vault has the
// entity (a disabled one may come back; unreadable is kept for now).
func (p *prunePass) alive(ctx context.Context, sub Subject) (func(*storedRefreshToken) bool, error) {
	all := func(*storedRefreshToken) bool { return true }
	switch sub.Kind {
	case SubjectUser:
		u, err := p.b.ReadUser(ctx, p.s, sub.ID)
		if err != nil {
			return nil, err
		}
		return func(rec *storedRefreshToken) bool { return u != nil && rec.Generation == u.Generation }, nil
	case SubjectEntity:
		ids, err := p.b.identitySource()
		if err != nil {
			return all, nil
		}
		e, err := ids.EntityInfo(sub.ID)
		if err != nil || e != nil {
			return all, nil
		}
		return func(*storedRefreshToken) bool { return false }, nil
	}
	return all, nil // a kind this version does not know: only its end counts
}
