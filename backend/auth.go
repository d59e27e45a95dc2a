package backend

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/simplelru"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"
)

// passwordCheckWait is how long a login waits for a free password check
// (and for its turn among one user's checks) before it is refused as busy;
// a flood of logins queues this long at most.
const passwordCheckWait = 2 * time.Second

// cachedUser is what a node remembers of a user between requests. It is
// immutable: a change stores a new value.
type cachedUser struct {
	version uint64
	access  Access
	// credential is the MAC of the last verified password, valid until
	// credentialExpires; nil when none is cached.
	credential        []byte
	credentialExpires time.Time
}

// login is a verified password: the user's access and the credential
// generation it was verified against.
type login struct {
	access     Access
	generation uint64
}

// authenticate checks a user's password and returns the user's access.
//
// An unknown name goes through the same steps as a user (reservation,
// password check against a decoy hash, failure count, lockout), so the two
// give the same answers in the same order and cost the same work. With a
// lockout threshold, each check is reserved under the name's lock before
// bcrypt runs: failures counted plus checks in flight never pass the
// threshold, so however many requests arrive at once, at most
// lockout_threshold checks conclude in one lockout window. A check is
// judged when it concludes, under the same lock: a right password whose
// check ends after the lockout began is refused with 429.
func (b *Backend) authenticate(ctx context.Context, s logical.Storage, cfg *Config, name, password string) (*login, error) {
	if !ValidUserName(name) || len(password) > maxPasswordLen {
		// Such a name cannot exist, such a password cannot be right.
		return nil, b.decoyCheck(ctx, cfg, password, errInvalidCredentials)
	}
	u, err := b.ReadUser(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if u != nil && !b.lockout(cfg, u.Lockout).locked {
		if cu, ok := b.cachedCredential(cfg, u, password); ok {
			if u.Lockout.Failures > 0 {
				if err := b.resetFailures(ctx, s, u); err != nil {
					return nil, err
				}
			}
			return &login{access: cu.access, generation: u.Generation}, nil
		}
	}

	if err := b.reserveCheck(ctx, s, cfg, name); err != nil {
		if e, ok := AsError(err); ok && e.Kind == KindLockedOut {
			return nil, b.decoyCheck(ctx, cfg, password, err)
		}
		return nil, err
	}
	defer b.endCheck(cfg, name)

	if err := b.acquirePasswordCheck(ctx); err != nil {
		return nil, err
	}
	// Look again now that the slot is ours: the lockout may have begun
	// while this check waited (on this node, or on another).
	u, l, err := b.lockoutState(ctx, s, name)
	if err != nil {
		b.releasePasswordCheck()
		return nil, err
	}
	if st := b.lockout(cfg, l); st.locked {
		b.bcryptRuns.Add(1)
		_ = bcrypt.CompareHashAndPassword(b.decoyHash(cfg.BcryptCost), []byte(password))
		b.releasePasswordCheck()
		return nil, st.refusal(name)
	}
	hash := b.decoyHash(cfg.BcryptCost)
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	b.bcryptRuns.Add(1)
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && u != nil
	var rehash []byte
	if ok {
		rehash = b.rehash(cfg, u, password)
	}
	b.releasePasswordCheck()

	lg, cur, err := b.concludeCheck(ctx, s, cfg, name, u, ok, rehash)
	if err != nil {
		return nil, err
	}
	if cfg.CredentialCacheTTL > 0 {
		b.users.Store(name, &cachedUser{
			version:           cur.Version,
			access:            lg.access,
			credential:        b.credentialMAC(name, cur.Version, password),
			credentialExpires: b.now().Add(cfg.CredentialCacheTTL),
		})
	}
	return lg, nil
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

// rehash returns password hashed at the configured cost when u's hash has
// another, so that a raised bcrypt_cost reaches every user at their next
// login; nil when the cost is right.
func (b *Backend) rehash(cfg *Config, u *User, password string) []byte {
	cost, err := bcrypt.Cost([]byte(u.PasswordHash))
	if err != nil || cost == cfg.BcryptCost {
		return nil
	}
	b.bcryptRuns.Add(1)
	h, err := bcrypt.GenerateFromPassword([]byte(password), cfg.BcryptCost)
	if err != nil {
		b.logger.Error("rehash at the configured cost failed", "user", u.Name, "error", err)
		return nil
	}
	return h
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

// countFailure counts a failed check of name and begins a lockout at the
// threshold. A user's count lives in the user record, so every node of a
// cluster sees it; an unknown name's lives in memory (see unknownNames),
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

// lockoutState reads name's user record (nil for an unknown name) and its
// lockout: the record's, or the in-memory one of an unknown name.
func (b *Backend) lockoutState(ctx context.Context, s logical.Storage, name string) (*User, Lockout, error) {
	u, err := b.ReadUser(ctx, s, name)
	if err != nil || u != nil {
		if u == nil {
			return nil, Lockout{}, err
		}
		return u, u.Lockout, nil
	}
	b.checks.mu.Lock()
	defer b.checks.mu.Unlock()
	l, _ := b.checks.unknown.Peek(name)
	lo, _ := l.(Lockout)
	return nil, lo, nil
}

// reserveCheck reserves a password check of name: under the name's lock,
// failures counted plus checks in flight must stay below the threshold.
// When they would not, it waits for a check in flight to conclude and
// looks again; a lockout that began meanwhile is its answer.
func (b *Backend) reserveCheck(ctx context.Context, s logical.Storage, cfg *Config, name string) error {
	if cfg.LockoutThreshold == 0 {
		return nil
	}
	deadline := time.NewTimer(passwordCheckWait)
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

// cachedCredential reports whether password is u's cached credential.
func (b *Backend) cachedCredential(cfg *Config, u *User, password string) (*cachedUser, bool) {
	if cfg.CredentialCacheTTL == 0 {
		return nil, false
	}
	cu := b.cachedUser(u)
	ok := cu.credential != nil && b.now().Before(cu.credentialExpires) &&
		hmac.Equal(cu.credential, b.credentialMAC(u.Name, u.Version, password))
	return cu, ok
}

// cachedUser returns the parsed form of u, from the cache when its version
// matches.
func (b *Backend) cachedUser(u *User) *cachedUser {
	if v, ok := b.users.Load(u.Name); ok {
		if cu := v.(*cachedUser); cu.version == u.Version {
			return cu
		}
	}
	access, err := ParseAccess(u.Access)
	if err != nil {
		// Stored access was validated on write; a record that no longer
		// parses grants nothing rather than failing every login.
		b.logger.Error("stored access string does not parse; granting nothing", "user", u.Name, "error", err)
		access = nil
	}
	cu := &cachedUser{version: u.Version, access: access}
	b.users.Store(u.Name, cu)
	return cu
}

// credentialMAC binds a password to the user and the record's version, so
// a cached credential dies with any change of the user.
func (b *Backend) credentialMAC(name string, version uint64, password string) []byte {
	m := hmac.New(sha256.New, b.credKey)
	var v [8]byte
	for i := range v {
		v[i] = byte(version >> (8 * i))
	}
	m.Write(v[:])
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return m.Sum(nil)
}

// decoyCheck spends a real bcrypt comparison against a hash of the
// configured cost, so that a refusal without a password check takes as
// long as one with it, then returns refusal.
func (b *Backend) decoyCheck(ctx context.Context, cfg *Config, password string, refusal error) error {
	if err := b.acquirePasswordCheck(ctx); err != nil {
		return err
	}
	defer b.releasePasswordCheck()
	b.bcryptRuns.Add(1)
	_ = bcrypt.CompareHashAndPassword(b.decoyHash(cfg.BcryptCost), []byte(password))
	return refusal
}

func (b *Backend) decoyHash(cost int) []byte {
	if h, ok := b.decoys.Load(cost); ok {
		return h.([]byte)
	}
	h, err := bcrypt.GenerateFromPassword([]byte("decoy password of no user"), cost)
	if err != nil {
		panic("backend: bcrypt decoy: " + err.Error()) // cost was validated
	}
	b.decoys.Store(cost, h)
	return h
}

var errBusy = &Error{Kind: KindBusy, Msg: "too many password checks in progress; retry after 1s", RetryAfter: time.Second}

func (b *Backend) acquirePasswordCheck(ctx context.Context) error {
	select {
	case b.passwordChecks <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(passwordCheckWait)
	defer t.Stop()
	select {
	case b.passwordChecks <- struct{}{}:
		return nil
	case <-t.C:
		return errBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Backend) releasePasswordCheck() { <-b.passwordChecks }

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
