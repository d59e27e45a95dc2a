package backend

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/simplelru"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"
)

// Lockout: a name's failed password checks are counted, and at
// lockout_threshold failures within lockout_duration the name is refused
// (429) for lockout_duration. Every check is reserved before bcrypt runs and
// judged when it concludes, both under the name's lock, so requests sent at
// once cannot pass the threshold. Unknown names are counted like users.

// reserveCheck reserves a password check of name: under the name's lock,
// failures counted plus checks in flight must stay below the threshold.
// When they would not, it waits (until waitUntil at most) for a check in
// flight to conclude and looks again; a lockout that began meanwhile is its
// answer.
func (b *Backend) reserveCheck(ctx context.Context, s logical.Storage, cfg *Config, name string, waitUntil time.Time) error {
	if cfg.LockoutThreshold == 0 {
		return nil
	}
	deadline := time.NewTimer(time.Until(waitUntil))
	defer deadline.Stop()
	lock := locksutil.LockForKey(b.userLocks, name)
	for {
		lock.Lock()
		_, l, err := b.lockoutState(ctx, s, name)
		if err != nil {
			lock.Unlock()
			return err
		}
		st := b.lockout(cfg, l)
		if st.locked {
			lock.Unlock()
			return st.refusal(name)
		}
		b.checks.mu.Lock()
		p := b.checks.inFlight[name]
		if p == nil {
			p = &checksInFlight{done: make(chan struct{})}
			b.checks.inFlight[name] = p
		}
		if st.failures+p.n < cfg.LockoutThreshold {
			p.n++
			b.checks.mu.Unlock()
			lock.Unlock()
			return nil
		}
		done := p.done
		b.checks.mu.Unlock()
		lock.Unlock()
		select {
		case <-done:
		case <-deadline.C:
			return errBusy
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// endCheck gives back a reserved check and wakes those waiting for one.
func (b *Backend) endCheck(cfg *Config, name string) {
	if cfg.LockoutThreshold == 0 {
		return
	}
	b.checks.mu.Lock()
	defer b.checks.mu.Unlock()
	p := b.checks.inFlight[name]
	p.n--
	close(p.done)
	if p.n == 0 {
		delete(b.checks.inFlight, name)
	} else {
		p.done = make(chan struct{})
	}
}

// lockoutState reads name's user record (nil for an unknown name) and its
// lockout: the record's, or the in-memory one of an unknown name.
func (b *Backend) lockoutState(ctx context.Context, s logical.Storage, name string) (*User, Lockout, error) {
	u, err := b.ReadUser(ctx, s, name)
	switch {
	case err != nil:
		return nil, Lockout{}, err
	case u != nil:
		return u, u.Lockout, nil
	}
	b.checks.mu.Lock()
	defer b.checks.mu.Unlock()
	v, _ := b.checks.unknown.Peek(name)
	l, _ := v.(Lockout)
	return nil, l, nil
}

// lockoutStatus is a name's lockout as of now.
type lockoutStatus struct {
	locked   bool
	left     time.Duration // while locked
	failures int           // counted in the current window, while not locked
}

func (b *Backend) lockout(cfg *Config, l Lockout) lockoutStatus {
	if cfg.LockoutThreshold == 0 {
		return lockoutStatus{}
	}
	now := b.now()
	if now.Before(l.Until) {
		return lockoutStatus{locked: true, left: l.Until.Sub(now)}
	}
	if l.Failures == 0 || now.Sub(l.Since) > cfg.LockoutDuration {
		return lockoutStatus{}
	}
	return lockoutStatus{failures: l.Failures}
}

// refusal is the answer to a locked-out name: the same text for a user
// and an unknown name.
func (st lockoutStatus) refusal(name string) *Error {
	secs := int(st.left.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return &Error{
		Kind:       KindLockedOut,
		Msg:        "user " + quote(name) + " is locked out; retry after " + strconv.Itoa(secs) + "s",
		RetryAfter: time.Duration(secs) * time.Second,
	}
}

// concludeCheck judges a finished password check under the name's lock,
// against the record as it is now: a failure is counted (and may begin a
// lockout); a success grants only if the user is not locked out and the
// password it was checked against is still the user's.
// It also returns the user record as it is now.
func (b *Backend) concludeCheck(ctx context.Context, s logical.Storage, cfg *Config, name string, checked *User, ok bool, rehash []byte) (*login, *User, error) {
	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()
	u, err := b.ReadUser(ctx, s, name)
	if err != nil {
		return nil, nil, err
	}
	now := b.now().UTC()
	if !ok {
		if err := b.countFailure(ctx, s, cfg, name, u, now); err != nil {
			return nil, nil, err
		}
		return nil, nil, errInvalidCredentials
	}
	if u == nil || u.Generation != checked.Generation {
		return nil, nil, errInvalidCredentials // deleted or password changed meanwhile
	}
	if st := b.lockout(cfg, u.Lockout); st.locked {
		return nil, nil, st.refusal(name)
	}
	changed := false
	if u.Lockout != (Lockout{}) {
		u.Lockout = Lockout{}
		changed = true
	}
	if rehash != nil && u.PasswordHash == checked.PasswordHash {
		u.PasswordHash = string(rehash)
		changed = true
	}
	if changed {
		if err := b.putUser(ctx, s, u); err != nil {
			return nil, nil, err
		}
	}
	return &login{access: b.cachedUser(u).access, generation: u.Generation}, u, nil
}

// resetFailures clears the failure count after a login with a cached
// credential, unless the record changed meanwhile.
func (b *Backend) resetFailures(ctx context.Context, s logical.Storage, seen *User) error {
	lock := locksutil.LockForKey(b.userLocks, seen.Name)
	lock.Lock()
	defer lock.Unlock()
	u, err := b.ReadUser(ctx, s, seen.Name)
	if err != nil || u == nil || u.Version != seen.Version {
		return err
	}
	u.Lockout = Lockout{}
	return b.putUser(ctx, s, u)
}

// countFailure counts a failed check of name and begins a lockout at the
// threshold. A user's count lives in the user record, so every node of a
// cluster sees it; an unknown name's lives in memory (see checkState),
// and a record of the same size is written in its place so that both cost
// the same storage work. The caller holds the name's lock.
func (b *Backend) countFailure(ctx context.Context, s logical.Storage, cfg *Config, name string, u *User, now time.Time) error {
	if cfg.LockoutThreshold == 0 {
		return nil
	}
	if u == nil {
		b.checks.mu.Lock()
		v, _ := b.checks.unknown.Get(name)
		l, _ := v.(Lockout)
		if now.Before(l.Until) {
			b.checks.mu.Unlock()
			return nil // already locked out: nothing to count
		}
		started := addFailure(&l, cfg, now)
		b.checks.unknown.Add(name, l)
		b.checks.mu.Unlock()
		if started {
			b.logger.Warn("unknown user name locked out", "user", name, "until", l.Until.Format(time.RFC3339))
		}
		return b.putFailureDecoy(ctx, s, name, l)
	}
	if now.Before(u.Lockout.Until) {
		return nil // already locked out: nothing to count
	}
	if addFailure(&u.Lockout, cfg, now) {
		u.Version = newVersion() // a lockout drops the cached credential
		b.users.Delete(name)
		b.logger.Warn("user locked out", "user", name, "until", u.Lockout.Until.Format(time.RFC3339))
	}
	return b.putUser(ctx, s, u)
}

// addFailure counts one failure in l, which is not locked out, and reports
// whether it began a lockout. (A failure while locked out counts nothing:
// one checked before the lockout began must not restart the count, which
// would lift it.)
func addFailure(l *Lockout, cfg *Config, now time.Time) bool {
	if l.Failures == 0 || now.Sub(l.Since) > cfg.LockoutDuration {
		*l = Lockout{Since: now}
	}
	l.Failures++
	if l.Failures >= cfg.LockoutThreshold {
		l.Until = now.Add(cfg.LockoutDuration)
		l.Failures = 0
		return true
	}
	return false
}

// failureDecoyKey is where an unknown name's failure writes a record of a
// user's size, so that a wrong password costs the same storage write
// (a consensus round on integrated storage) whether the user exists or not.
const failureDecoyKey = "lockout-decoy"

func (b *Backend) putFailureDecoy(ctx context.Context, s logical.Storage, name string, l Lockout) error {
	decoy := &User{Name: name, PasswordHash: string(b.decoyHash(bcrypt.MinCost)), Version: newVersion(), Lockout: l}
	entry, err := logical.StorageEntryJSON(failureDecoyKey, decoy)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

// unknownNamesTracked bounds the unknown names whose failed logins are
// remembered. Unknown names' failures live only in memory, so spraying
// random names grows no storage; past this many names the least recently
// failed are forgotten first. 65,536 entries take a few MB. Forgetting a
// name early takes the attacker about as many failed logins (each a full
// bcrypt check, limited by the password-check slots) as there are entries.
const unknownNamesTracked = 1 << 16

// checkState is the per-node state of password checks: checks reserved
// and not yet concluded, per name, and the failures of unknown names.
type checkState struct {
	mu       sync.Mutex
	inFlight map[string]*checksInFlight
	unknown  *simplelru.LRU // name → Lockout
}

type checksInFlight struct {
	n    int
	done chan struct{} // closed when one of them concludes
}

func newCheckState(unknownNames int) *checkState {
	unknown, err := simplelru.NewLRU(unknownNames, nil)
	if err != nil {
		panic("backend: " + err.Error()) // only for a size < 1
	}
	return &checkState{inFlight: map[string]*checksInFlight{}, unknown: unknown}
}
