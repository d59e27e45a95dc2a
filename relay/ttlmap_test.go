package relay

import (
	"testing"
	"time"
)

func TestTTLMap_entriesExpire(t *testing.T) {
	m := newTTLMap[string, int](20*time.Millisecond, 10)
	m.put("a", 1, true)
	if v, ok := m.get("a"); !ok || v != 1 {
		t.Fatalf("get = %v %v", v, ok)
	}
	time.Sleep(30 * time.Millisecond)
	if _, ok := m.get("a"); ok {
		t.Fatal("an expired entry is still answered")
	}
}

func TestTTLMap_boundedWithAndWithoutEviction(t *testing.T) {
	m := newTTLMap[int, bool](time.Minute, 3)
	for i := range 3 {
		m.put(i, true, true)
	}
	m.put(100, false, false) // full of live entries: not stored
	if _, ok := m.get(100); ok || m.len() != 3 {
		t.Fatalf("stored without room: len %d", m.len())
	}
	m.put(1, false, false) // a key already there is updated in place
	if v, ok := m.get(1); !ok || v {
		t.Fatalf("update in place: %v %v", v, ok)
	}
	m.put(200, true, true) // evicts a live entry
	if _, ok := m.get(200); !ok || m.len() != 3 {
		t.Fatalf("evicting put: len %d", m.len())
	}
	m.delete(200)
	if _, ok := m.get(200); ok || m.len() != 2 {
		t.Fatalf("delete: len %d", m.len())
	}
}

func TestTTLMap_expiredEntriesMakeRoomFirst(t *testing.T) {
	m := newTTLMap[int, bool](20*time.Millisecond, 2)
	m.put(1, true, true)
	m.put(2, true, true)
	time.Sleep(30 * time.Millisecond)
	m.put(3, false, false) // no live entry is dropped, the expired ones go
	if _, ok := m.get(3); !ok || m.len() != 1 {
		t.Fatalf("len %d", m.len())
	}
}
