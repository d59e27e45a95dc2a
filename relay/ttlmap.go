package relay

import (
	"sync"
	"time"
)

// ttlMap is a map whose entries expire after a fixed time and whose size
// is bounded, safe for concurrent use. The relay remembers two things this
// way: which services are plugin mounts, and which credentials got a token
// lately.
type ttlMap[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	value   V
	expires time.Time
}

func newTTLMap[K comparable, V any](ttl time.Duration, max int) *ttlMap[K, V] {
	return &ttlMap[K, V]{ttl: ttl, max: max, m: map[K]ttlEntry[V]{}}
}

// get returns the value of a live entry.
func (t *ttlMap[K, V]) get(k K) (V, bool) {
	t.mu.Lock()
	e, ok := t.m[k]
	t.mu.Unlock()
	if !ok || !time.Now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.value, true
}

// put stores v under k for the map's ttl. When the map is full it first
// drops the expired entries; if it is still full, evict says whether to
// drop live ones to make room (true) or to store nothing (false).
func (t *ttlMap[K, V]) put(k K, v V, evict bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[k]; !ok && len(t.m) >= t.max {
		for key, e := range t.m {
			if !now.Before(e.expires) {
				delete(t.m, key)
			}
		}
		if len(t.m) >= t.max && !evict {
			return
		}
		for key := range t.m {
			if len(t.m) < t.max {
				break
			}
			delete(t.m, key)
		}
	}
	t.m[k] = ttlEntry[V]{value: v, expires: now.Add(t.ttl)}
}

func (t *ttlMap[K, V]) delete(k K) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// len counts the entries, expired ones not yet dropped included.
func (t *ttlMap[K, V]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
