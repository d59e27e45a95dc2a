package backend

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// userReadCounter counts the storage reads of user records.
type userReadCounter struct {
	logical.Storage
	reads atomic.Int64
}

func (s *userReadCounter) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if strings.HasPrefix(key, userPrefix) {
		s.reads.Add(1)
	}
	return s.Storage.Get(ctx, key)
}

func TestUserRecords_warmTokenRequestReadsNoUserFromStorage(t *testing.T) {
	f := newFixture(t)
	counter := &userReadCounter{Storage: f.s}
	f.s = counter
	f.addUser("bob", "right", "repository:bob/*:*")
	f.login("bob", "right", 0)
	f.login("nobody", "wrong", KindUnauthorized)
	before := counter.reads.Load()
	for range 5 {
		f.login("bob", "right", 0)
	}
	if n := counter.reads.Load() - before; n != 0 {
		t.Errorf("5 warm token requests read the user record from storage %d times, want 0", n)
	}
	f.login("nobody", "wrong", KindUnauthorized)
	if n := counter.reads.Load() - before; n != 0 {
		t.Errorf("an unknown name known to be absent was read from storage %d times, want 0 (as for a user)", n)
	}
}

// Another node (here a second backend over the same storage) changes the
// password; Vault then calls Invalidate on this one. From then on the old
// password is refused and the new one works.
func TestUserRecords_changeOnAnotherNodeSeenAfterInvalidate(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "old", "repository:bob/*:*")
	f.login("bob", "old", 0)
	other := New(Options{Now: f.clock.Now})
	password, access := "new", "repository:bob/*:*"
	if _, err := other.WriteUser(f.ctx, f.s, "bob", UserUpdate{Password: &password, Access: &access}); err != nil {
		t.Fatal(err)
	}
	f.b.Invalidate(f.ctx, userPrefix+"bob")
	f.login("bob", "old", KindUnauthorized)
	f.login("bob", "new", 0)

	// A user created on the other node, after this one saw the name absent.
	f.login("carol", "pw", KindUnauthorized)
	password = "pw"
	if _, err := other.WriteUser(f.ctx, f.s, "carol", UserUpdate{Password: &password, Access: &access}); err != nil {
		t.Fatal(err)
	}
	f.b.Invalidate(f.ctx, userPrefix+"carol")
	f.login("carol", "pw", 0)
}

// A read that began before a write and read the old record must not keep
// it once the write has dropped the record.
func TestUserRecords_readRacingAWriteKeepsNothing(t *testing.T) {
	c := newUserRecords(8)
	_, kept, epoch := c.get("bob")
	if kept {
		t.Fatal("an empty cache kept bob")
	}
	old := &User{Name: "bob", Version: 1}
	c.drop("bob") // the write ends while the read is under way
	c.fill("bob", old, epoch)
	if _, kept, _ := c.get("bob"); kept {
		t.Fatal("the record read before the write was kept after the write dropped it")
	}
	_, _, epoch = c.get("bob")
	c.fill("bob", &User{Name: "bob", Version: 2}, epoch)
	u, kept, _ := c.get("bob")
	if !kept || u.Version != 2 {
		t.Fatalf("got %+v kept=%v, want version 2", u, kept)
	}
	u.Version = 3 // a caller's change stays its own
	if u, _, _ := c.get("bob"); u.Version != 2 {
		t.Fatalf("a caller's change reached the cache: version %d", u.Version)
	}
}
