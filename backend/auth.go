package backend

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// passwordCheckWait is how long a login may wait, in all, for its turn
// among one user's checks and for a free password check before it is
// refused as busy; a flood of logins queues this long at most, so the
// plugin answers (429 busy) well within the relay's request timeout.
const passwordCheckWait = 2 * time.Second

// batchCheckWait is passwordCheckWait for a request of a token batch
// (WithinBatch): a batch answers when its slowest request does, so one
// request's wait must stay well under the relay's Vault timeout (3s by
// default) for the others' sake. Its waits go first (checkSlots).
const batchCheckWait = time.Second

// cachedUser is what a node remembers of a user between requests. It is
// immutable: a change stores a new value.
type cachedUser struct {
	version uint64
	access  access.List
	// credential is the MAC of the last verified password, valid until
	// credentialExpires; nil when none is cached.
	credential        []byte
	credentialExpires time.Time
}

// login is a verified password: the user's access and the credential
// generation it was verified against.
type login struct {
	access     access.List
	generation uint64
	robot      bool // a robot account's login (robots.go)
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
//
// A locked-out name's refusal never waits and never turns into busy
// (lockedOutCheck).
func (b *Backend) authenticate(ctx context.Context, s logical.Storage, cfg *Config, name, password string) (*login, error) {
	wait := passwordCheckWait
	if withinBatch(ctx) {
		wait = batchCheckWait
	}
	waitUntil := time.Now().Add(wait) // one budget for every wait below
	if !access.ValidUserName(name) || len(password) > maxPasswordLen {
		// Such a name cannot exist, such a password cannot be right.
		return nil, b.decoyCheck(ctx, cfg, password, errInvalidCredentials, waitUntil)
	}
	u, err := b.ReadUser(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if u == nil {
		// A robot's secret is random: checked by a keyed hash, with no
		// lockout. A robot that has ended, or a wrong secret, goes on as
		// an unknown name, with the same answer and the same work.
		if lg, ok, err := b.authenticateRobot(ctx, s, name, password); err != nil || ok {
			return lg, err
		}
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

	if err := b.reserveCheck(ctx, s, cfg, name, waitUntil); err != nil {
		if e, ok := AsError(err); ok && e.Kind == KindLockedOut {
			return nil, b.lockedOutCheck(cfg, password, err)
		}
		return nil, err
	}
	defer b.endCheck(cfg, name)

	if err := b.acquirePasswordCheck(ctx, waitUntil); err != nil {
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
	var ok bool
	var rehash []byte
	if _, hit := b.cachedCredentialOf(cfg, u, password); hit {
		// A check of the same user and password ended while this one
		// waited (after an election, every waiting request arrives with
		// a cold cache): it shares that check's bcrypt work. It is still
		// this request's own check: reserved, judged and concluded below.
		ok = true
	} else {
		hash := b.decoyHash(cfg.BcryptCost)
		if u != nil {
			hash = []byte(u.PasswordHash)
		}
		b.bcryptRuns.Add(1)
		ok = bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && u != nil
		if ok {
			rehash = b.rehash(cfg, u, password)
		}
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

// cachedCredentialOf is cachedCredential for a user that may not exist.
func (b *Backend) cachedCredentialOf(cfg *Config, u *User, password string) (*cachedUser, bool) {
	if u == nil {
		return nil, false
	}
	return b.cachedCredential(cfg, u, password)
}

// cachedUser returns the parsed form of u, from the cache when its version
// matches.
func (b *Backend) cachedUser(u *User) *cachedUser {
	if v, ok := b.users.Load(u.Name); ok {
		if cu := v.(*cachedUser); cu.version == u.Version {
			return cu
		}
	}
	access, err := access.Parse(u.Access)
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
func (b *Backend) decoyCheck(ctx context.Context, cfg *Config, password string, refusal error, waitUntil time.Time) error {
	if err := b.acquirePasswordCheck(ctx, waitUntil); err != nil {
		return err
	}
	defer b.releasePasswordCheck()
	b.bcryptRuns.Add(1)
	_ = bcrypt.CompareHashAndPassword(b.decoyHash(cfg.BcryptCost), []byte(password))
	return refusal
}

// lockedOutCheck spends a decoy check for a locked-out name when a
// password-check slot is free at once, then returns refusal. It never
// waits for a slot: the refusal says the name is locked out (for a user
// and an unknown name alike), so a decoy hides nothing there but the cost
// of a check when the plugin is idle. Waiting for one under a flood would
// hold the request for seconds (and a batch with it), and answering busy
// instead would keep the relay from learning that the credential it
// counted as proven is locked out.
func (b *Backend) lockedOutCheck(cfg *Config, password string, refusal error) error {
	if b.passwordChecks.tryAcquire() {
		b.bcryptRuns.Add(1)
		_ = bcrypt.CompareHashAndPassword(b.decoyHash(cfg.BcryptCost), []byte(password))
		b.releasePasswordCheck()
	}
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

// acquirePasswordCheck takes a password-check slot, waiting for one until
// waitUntil at most; a request of a batch goes first (checkSlots).
func (b *Backend) acquirePasswordCheck(ctx context.Context, waitUntil time.Time) error {
	return b.passwordChecks.acquire(ctx, waitUntil, withinBatch(ctx))
}

func (b *Backend) releasePasswordCheck() { b.passwordChecks.release() }
