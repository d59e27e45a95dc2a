package paths_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Hostile input to every field: each is a clear 4xx (or a refusal that
// looks like any wrong password), never a 5xx, and stores nothing.
func TestHostile_tokenFieldsAreRefusedCleanly(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "users/bob", map[string]any{"password": "pw", "access": "repository:bob/*:*"})

	manyScopes := make([]string, 10000)
	for i := range manyScopes {
		manyScopes[i] = fmt.Sprintf("repository:bob/r%d:pull", i)
	}
	for _, tc := range []struct {
		name string
		data map[string]any
		want int
	}{
		{"100 KB scope", map[string]any{"username": "bob", "password": "pw", "scope": []string{"repository:" + strings.Repeat("a", 100<<10) + ":pull"}}, 400},
		{"10,000 scopes", map[string]any{"username": "bob", "password": "pw", "scope": manyScopes}, 400},
		{"10,000 scopes in one item", map[string]any{"username": "bob", "password": "pw", "scope": []string{strings.Join(manyScopes, " ")}}, 400},
		{"control character in scope", map[string]any{"username": "bob", "password": "pw", "scope": []string{"repository:bob/a\x00:pull"}}, 400},
		{"non-UTF-8 in scope", map[string]any{"username": "bob", "password": "pw", "scope": []string{"repository:bob/\xff:pull"}}, 400},
		{"control character in user", map[string]any{"username": "bob\n", "password": "pw"}, 401},
		{"non-UTF-8 in user", map[string]any{"username": "b\xffob", "password": "pw"}, 401},
		{"path in user", map[string]any{"username": "../users/bob", "password": "pw"}, 401},
		{"huge user", map[string]any{"username": strings.Repeat("b", 100<<10), "password": "pw"}, 401},
		{"huge password", map[string]any{"username": "bob", "password": strings.Repeat("p", 100<<10)}, 401},
		{"non-UTF-8 in password", map[string]any{"username": "bob", "password": "p\xffw"}, 401},
		{"control character in account", map[string]any{"username": "bob", "password": "pw", "account": "bob\x00"}, 400},
		{"non-UTF-8 in client_id", map[string]any{"username": "bob", "password": "pw", "client_id": "\xff"}, 400},
		{"huge client_id", map[string]any{"username": "bob", "password": "pw", "client_id": strings.Repeat("c", 1000)}, 400},
		{"scope of the wrong type", map[string]any{"username": "bob", "password": "pw", "scope": map[string]any{"a": 1}}, 400},
		{"ttl of the wrong type", map[string]any{"username": "bob", "password": "pw", "ttl": []int{1}}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.fail(update, "token", tc.data, tc.want, "")
		})
	}
	// bob was not locked out by the refusals above that never checked a
	// password, and his password still works.
	m.ok(update, "token", map[string]any{"username": "bob", "password": "pw"})
}

func TestHostile_userWritesAreRefusedAndStoreNothing(t *testing.T) {
	m := newMount(t, "registry")
	entries := make([]string, 20000)
	for i := range entries {
		entries[i] = fmt.Sprintf("repository:team/r%d:pull", i)
	}
	for _, tc := range []struct {
		name string
		data map[string]any
	}{
		{"20,000 access entries", map[string]any{"password": "pw", "access": strings.Join(entries, ";")}},
		{"control character in access", map[string]any{"password": "pw", "access": "repository:a\x01:pull"}},
		{"non-UTF-8 in access", map[string]any{"password": "pw", "access": "repository:\xfe:pull"}},
		{"newline between entries", map[string]any{"password": "pw", "access": "repository:a:pull\nrepository:b:pull"}},
		{"access of the wrong type", map[string]any{"password": "pw", "access": []string{"a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.fail(update, "users/carol", tc.data, http.StatusBadRequest, "")
			m.fail(read, "users/carol", nil, http.StatusNotFound, "")
		})
	}
	// Thousands of valid entries are taken.
	m.ok(update, "users/carol", map[string]any{"password": "pw", "access": strings.Join(entries[:5000], ";")})
	resp := m.ok(update, "token", map[string]any{"username": "carol", "password": "pw", "scope": []string{"repository:team/r4999:pull,push"}})
	if !strings.Contains(string(jwtClaims(t, resp.Data["token"].(string))["access"]), `"team/r4999","actions":["pull"]`) {
		t.Error("entry 5000 of a long access string was not granted")
	}
}
