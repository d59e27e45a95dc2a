package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/hashicorp/golang-lru/simplelru"
)

// userRecordsKept bounds the user records kept in memory; a name past it
// is read from storage again (more users than this only cost the storage
// read each of their token requests did before the cache).
const userRecordsKept = 65536

// recordCache keeps records read from storage (users, robots, roles);
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
type recordCache[T any] struct {
	mu    sync.Mutex
	epoch uint64
	lru   *simplelru.LRU // name → *T (nil: no such record)
}

// userRecords keeps user records.
type userRecords = recordCache[User]

func newUserRecords(size int) *userRecords { return newRecordCache[User](size) }

func newRecordCache[T any](size int) *recordCache[T] {
	l, err := simplelru.NewLRU(size, nil)
	if err != nil {
		panic("backend: " + err.Error()) // only for a size < 1
	}
	return &recordCache[T]{lru: l}
}

// get returns a copy of name's record (nil for a user known not to exist)
// and whether it was kept; when it was not, epoch is what fill needs.
func (c *recordCache[T]) get(name string) (u *T, ok bool, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.lru.Get(name)
	if !ok {
		return nil, false, c.epoch
	}
	if kept := v.(*T); kept != nil {
		cp := *kept // a record holds values (and immutable slices): the copy shares nothing mutable
		return &cp, true, 0
	}
	return nil, true, 0
}

// fill keeps u (a copy) as name's record, read from storage after get
// returned epoch, unless a drop happened since.
func (c *recordCache[T]) fill(name string, u *T, epoch uint64) {
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
func (c *recordCache[T]) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.lru.Remove(name)
}

// readRecord reads name's record at key through the cache c; nil when
// there is none. decoded, if set, completes a record read from storage
// (kept so in the cache).
func readRecord[T any](ctx context.Context, s logical.Storage, c *recordCache[T], key, what, name string, decoded func(*T)) (*T, error) {
	r, kept, epoch := c.get(name)
	if kept {
		return r, nil
	}
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if entry != nil {
		r = new(T)
		if err := json.Unmarshal(entry.Value, r); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", what, quote(name), err)
		}
		if decoded != nil {
			decoded(r)
		}
	}
	c.fill(name, r, epoch)
	return r, nil
}

// clear forgets every record.
func (c *recordCache[T]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.lru.Purge()
}
