package backend

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

const userPrefix = "users/"

// maxPasswordLen is bcrypt's limit: it ignores bytes past 72, so a longer
// password is refused rather than silently truncated.
const maxPasswordLen = tokenapi.MaxPasswordBytes

// User is one stored user.
type User struct {
	Name         string    `json:"name"`
	PasswordHash string    `json:"password_hash"`
	Access       string    `json:"access"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
	// Version changes (randomly) with every change a cached credential
	// depends on: password, access, lockout. A cache entry of another
	// version is stale.
	Version uint64 `json:"version"`
	// Generation is the credential generation: random, new with every
	// create and password change. A refresh token is good only while its
	// user's generation is the one it was issued under. Being random, a
	// user deleted and created again gets another (a 2^-64 chance of the
	// same), so no tombstone has to outlive the delete.
	Generation uint64  `json:"generation,omitempty"`
	Lockout    Lockout `json:"lockout"`
}

// BcryptCost is the cost of the stored hash; 0 if it does not parse.
func (u *User) BcryptCost() int {
	cost, _ := bcrypt.Cost([]byte(u.PasswordHash))
	return cost
}

// Lockout is a user's recent failed logins.
type Lockout struct {
	Failures int       `json:"failures,omitempty"`
	Since    time.Time `json:"since,omitzero"` // first failure of the current run
	Until    time.Time `json:"until,omitzero"` // locked out until then
}

// UserUpdate is an operator's write to users/<name>. Nil fields are left as
// they are.
type UserUpdate struct {
	Password     *string
	PasswordHash *string
	Access       *string
}

// UserChange says what a write changed, so a re-run migration can tell.
type UserChange struct {
	Created         bool
	PasswordChanged bool
	AccessChanged   bool
}

func newVersion() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("backend: no randomness: " + err.Error())
	}
	return binary.LittleEndian.Uint64(b[:])
}

// newGeneration returns a random credential generation, never 0 (the
// generation of records stored before generations existed).
func newGeneration() uint64 {
	for {
		if g := newVersion(); g != 0 {
			return g
		}
	}
}

// ReadUser returns the stored user, or nil if there is none.
func (b *Backend) ReadUser(ctx context.Context, s logical.Storage, name string) (*User, error) {
	if !access.ValidUserName(name) {
		return nil, nil
	}
	return readRecord(ctx, s, b.records, userPrefix+name, "user", name, nil)
}

// ListUsers returns the user names.
func (b *Backend) ListUsers(ctx context.Context, s logical.Storage) ([]string, error) {
	return s.List(ctx, userPrefix)
}

// WriteUser creates or updates a user. Everything is validated before
// anything is stored. A password change (not a rewrite of the same
// password) starts a new credential generation, which ends the user's
// refresh tokens (they are also deleted); setting the password, even to
// the same, unlocks the user.
func (b *Backend) WriteUser(ctx context.Context, s logical.Storage, name string, up UserUpdate) (UserChange, error) {
	var change UserChange
	if !access.ValidUserName(name) {
		return change, errorf(KindBadRequest, "user name %s: use 1 to 256 letters, digits, _ - . @", quote(name))
	}
	if up.Password != nil && up.PasswordHash != nil {
		return change, errorf(KindBadRequest, "give password or password_hash, not both")
	}
	var parsed access.List
	if up.Access != nil {
		a, err := access.Parse(*up.Access)
		if err != nil {
			return change, errorf(KindBadRequest, "access: %s", err)
		}
		parsed = a
	}
	if up.Password != nil {
		if err := checkPassword(*up.Password); err != nil {
			return change, err
		}
	}
	if up.PasswordHash != nil {
		if err := checkBcryptHash(*up.PasswordHash); err != nil {
			return change, err
		}
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return change, err
	}

	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()

	u, err := b.ReadUser(ctx, s, name)
	if err != nil {
		return change, err
	}
	now := b.now().UTC()
	if u == nil {
		if up.Password == nil && up.PasswordHash == nil {
			return change, errorf(KindBadRequest, "a new user needs password or password_hash")
		}
		u = &User{Name: name, Created: now}
		change.Created = true
	}
	switch {
	case up.Password != nil:
		if u.PasswordHash == "" || bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(*up.Password)) != nil {
			hash, err := bcrypt.GenerateFromPassword([]byte(*up.Password), cfg.BcryptCost)
			if err != nil {
				return change, fmt.Errorf("hash password: %w", err)
			}
			u.PasswordHash = string(hash)
			change.PasswordChanged = true
		}
	case up.PasswordHash != nil:
		if u.PasswordHash != *up.PasswordHash {
			u.PasswordHash = *up.PasswordHash
			change.PasswordChanged = true
		}
	}
	if up.Access != nil && (change.Created || parsed.String() != u.Access) {
		u.Access = parsed.String()
		change.AccessChanged = true
	}
	// An operator who sets the password unlocks the user, even when the
	// password is the same.
	unlock := (up.Password != nil || up.PasswordHash != nil) && u.Lockout != (Lockout{})
	if !change.Created && !change.PasswordChanged && !change.AccessChanged && !unlock {
		return change, nil
	}
	if change.PasswordChanged || unlock {
		u.Lockout = Lockout{}
	}
	if change.PasswordChanged {
		u.Generation = newGeneration()
	}
	u.Updated = now
	u.Version = newVersion()
	if err := b.putUser(ctx, s, u); err != nil {
		return change, err
	}
	b.users.Delete(name)
	if change.PasswordChanged {
		// The new generation already refuses them; this frees the storage
		// (and clears what an earlier user of the name left).
		if _, err := b.revokeRefreshTokens(ctx, s, UserSubject(name)); err != nil {
			return change, fmt.Errorf("password changed, but deleting the old refresh tokens failed: %w", err)
		}
	}
	return change, nil
}

// DeleteUser removes a user, the user's refresh tokens and cached
// credential. Deleting a user that does not exist is not an error. A user
// created again under the name gets a new credential generation, so a
// refresh token the delete missed stays refused.
func (b *Backend) DeleteUser(ctx context.Context, s logical.Storage, name string) error {
	if !access.ValidUserName(name) {
		return errorf(KindBadRequest, "user name %s: use 1 to 256 letters, digits, _ - . @", quote(name))
	}
	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()
	err := s.Delete(ctx, userPrefix+name)
	b.records.drop(name) // whether or not the delete got through
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	b.users.Delete(name)
	if _, err := b.revokeRefreshTokens(ctx, s, UserSubject(name)); err != nil {
		return fmt.Errorf("user deleted, but revoking refresh tokens failed: %w", err)
	}
	return nil
}

func (b *Backend) putUser(ctx context.Context, s logical.Storage, u *User) error {
	entry, err := logical.StorageEntryJSON(userPrefix+u.Name, u)
	if err != nil {
		return err
	}
	err = s.Put(ctx, entry)
	b.records.drop(u.Name) // whether or not the write got through
	if err != nil {
		return fmt.Errorf("store user: %w", err)
	}
	return nil
}

func checkPassword(p string) error {
	switch {
	case p == "":
		return errorf(KindBadRequest, "password must not be empty")
	case len(p) > maxPasswordLen:
		return errorf(KindBadRequest, "password is longer than %d bytes, which bcrypt cannot take", maxPasswordLen)
	}
	return nil
}

func checkBcryptHash(h string) error {
	if !strings.HasPrefix(h, "$2a$") && !strings.HasPrefix(h, "$2b$") && !strings.HasPrefix(h, "$2y$") {
		return errorf(KindBadRequest, "password_hash is not a bcrypt hash ($2a$, $2b$ or $2y$)")
	}
	cost, err := bcrypt.Cost([]byte(h))
	if err != nil || len(h) != 60 {
		return errorf(KindBadRequest, "password_hash is not a valid bcrypt hash")
	}
	if cost > maxBcryptCost {
		return errorf(KindBadRequest, "password_hash has bcrypt cost %d; at most %d is accepted", cost, maxBcryptCost)
	}
	return nil
}
