package backend

import (
	"sync"

	"github.com/hashicorp/golang-lru/simplelru"
)

// userRecordsKept bounds the user records kept in memory; a name past it
// is read from storage again (more users than this only cost the storage
// read each of their token requests did before the cache).
const userRecordsKept = 65536

// userRecords keeps the user records read from storage, so that a warm
// token request neither reads its user through the storage gRPC call back
// into Vault nor decodes the record again. An absent user is kept too (as
// nil), so that an unknown name costs the same storage work as a user.
//
// Every write of a user record drops it here after the storage write, and
// Invalidate drops what another node changed. A read that raced a write
// must not put the old record back: each drop advances epoch, and a read
// keeps what it read only if no drop happened since it began.
//
// A record holds the password's bcrypt hash, as storage does; never a
// password. The node's storage is the truth: a leadership change tears the
// mount down, and the new active node starts with an empty cache.
type userRecords struct {
	mu    sync.Mutex
	epoch uint64
	lru   *simplelru.LRU // name → *User (nil: no such user)
}

func newUserRecords(size int) *userRecords {
	l, err := simplelru.NewLRU(size, nil)
	if err != nil {
		panic("backend: " + err.Error()) // only for a size < 1
	}
	return &userRecords{lru: l}
}

// get returns a copy of name's record (nil for a user known not to exist)
// and whether it was kept; when it was not, epoch is what fill needs.
func (c *userRecords) get(name string) (u *User, ok bool, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.lru.Get(name)
	if !ok {
		return nil, false, c.epoch
	}
	if kept := v.(*User); kept != nil {
		cp := *kept // a User holds values only: the copy shares nothing
		return &cp, true, 0
	}
	return nil, true, 0
}

// fill keeps u (a copy) as name's record, read from storage after get
// returned epoch, unless a drop happened since.
func (c *userRecords) fill(name string, u *User, epoch uint64) {
	if u != nil {
		cp := *u
		u = &cp
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch == epoch {
		c.lru.Add(name, u)
	}
}

// drop forgets name's record, after it was written or deleted.
func (c *userRecords) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.lru.Remove(name)
}

// clear forgets every record.
func (c *userRecords) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.lru.Purge()
}
