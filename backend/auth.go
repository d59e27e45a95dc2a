package backend

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"strconv"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"
)

// passwordCheckWait is how long a login waits for a free password check
// before it is refused as busy; a flood of logins queues this long at most.
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

// authenticate checks a user's password and returns the user's parsed
// access. An unknown user, a wrong password and a locked-out user cost
// the same bcrypt work; the first two get the same error.
func (b *Backend) authenticate(ctx context.Context, s logical.Storage, cfg *Config, name, password string) (Access, error) {
	if !ValidUserName(name) || len(password) > maxPasswordLen {
		return nil, b.decoyCheck(ctx, cfg, password, errInvalidCredentials)
	}
	u, err := b.ReadUser(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, b.decoyCheck(ctx, cfg, password, errInvalidCredentials)
	}
	now := b.now()
	if cfg.LockoutThreshold > 0 && now.Before(u.Lockout.Until) {
		return nil, b.decoyCheck(ctx, cfg, password, lockedOut(name, u.Lockout.Until.Sub(now)))
	}

	cu := b.cachedUser(u)
	var mac []byte // the password's MAC, only when the cache is on
	if cfg.CredentialCacheTTL > 0 {
		mac = b.credentialMAC(name, u.Version, password)
	}
	cached := mac != nil && cu.credential != nil && now.Before(cu.credentialExpires) &&
		hmac.Equal(cu.credential, mac)
	if !cached {
		if err := b.acquirePasswordCheck(ctx); err != nil {
			return nil, err
		}
		b.bcryptRuns.Add(1)
		ok := bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil
		b.releasePasswordCheck()
		if !ok {
			if err := b.recordFailure(ctx, s, cfg, name); err != nil {
				return nil, err
			}
			return nil, errInvalidCredentials
		}
	}
	if u.Lockout.Failures > 0 {
		if err := b.resetFailures(ctx, s, name, u.Version); err != nil {
			return nil, err
		}
	}
	if cfg.CredentialCacheTTL > 0 && !cached {
		b.users.Store(name, &cachedUser{
			version:           cu.version,
			access:            cu.access,
			credential:        mac,
			credentialExpires: now.Add(cfg.CredentialCacheTTL),
		})
	}
	return cu.access, nil
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
		return &Error{Kind: KindBusy, Msg: "too many password checks in progress; retry after 1s", RetryAfter: time.Second}
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Backend) releasePasswordCheck() { <-b.passwordChecks }

func lockedOut(name string, left time.Duration) *Error {
	secs := int(left.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return &Error{
		Kind:       KindLockedOut,
		Msg:        "user " + quote(name) + " is locked out; retry after " + strconv.Itoa(secs) + "s",
		RetryAfter: time.Duration(secs) * time.Second,
	}
}

// recordFailure counts a failed login and locks the user out at the
// threshold. The state lives in the user record, so every node of a
// cluster sees it.
func (b *Backend) recordFailure(ctx context.Context, s logical.Storage, cfg *Config, name string) error {
	if cfg.LockoutThreshold == 0 {
		return nil
	}
	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()
	u, err := b.ReadUser(ctx, s, name)
	if err != nil || u == nil {
		return err
	}
	now := b.now().UTC()
	l := &u.Lockout
	if now.Before(l.Until) {
		// Already locked out: a failure that was checked before the lockout
		// began must not restart the count, which would lift the lockout.
		return nil
	}
	if l.Failures == 0 || now.Sub(l.Since) > cfg.LockoutDuration {
		*l = Lockout{Since: now}
	}
	l.Failures++
	if l.Failures >= cfg.LockoutThreshold {
		l.Until = now.Add(cfg.LockoutDuration)
		l.Failures = 0
		u.Version = newVersion() // a lockout drops the cached credential
		b.users.Delete(name)
		b.logger.Warn("user locked out", "user", name, "until", l.Until.Format(time.RFC3339))
	}
	return b.putUser(ctx, s, u)
}

// resetFailures clears the failure count after a successful login, unless
// the record changed meanwhile.
func (b *Backend) resetFailures(ctx context.Context, s logical.Storage, name string, version uint64) error {
	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()
	u, err := b.ReadUser(ctx, s, name)
	if err != nil || u == nil || u.Version != version {
		return err
	}
	u.Lockout = Lockout{}
	return b.putUser(ctx, s, u)
}

// Unlock clears a user's lockout (an operator's action).
func (b *Backend) Unlock(ctx context.Context, s logical.Storage, name string) error {
	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()
	u, err := b.ReadUser(ctx, s, name)
	if err != nil || u == nil {
		return err
	}
	u.Lockout = Lockout{}
	u.Version = newVersion()
	b.users.Delete(name)
	return b.putUser(ctx, s, u)
}
