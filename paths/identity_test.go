package paths_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/plugin"
)

// identityStore stands in for Vault's identity store in unit tests; the
// e2e tests use Vault's own.
type identityStore struct {
	logical.StaticSystemView
	entities map[string]*logical.Entity // by id
	groups   map[string][]*logical.Group
	lookups  atomic.Int32 // EntityInfo calls
}

func (s *identityStore) EntityInfo(id string) (*logical.Entity, error) {
	s.lookups.Add(1)
	return s.entities[id], nil
}
func (s *identityStore) GroupsForEntity(id string) ([]*logical.Group, error) {
	return s.groups[id], nil
}

func newIdentityMount(t *testing.T) (*mount, *identityStore) {
	t.Helper()
	ids := &identityStore{
		entities: map[string]*logical.Entity{
			"e-alice": {ID: "e-alice", Name: "alice", Aliases: []*logical.Alias{{MountAccessor: "auth_ldap_1", Name: "alice.ldap"}}},
			"e-ci":    {ID: "e-ci", Name: "ci-app"},
			"e-none":  {ID: "e-none", Name: "nobody"},
		},
		groups: map[string][]*logical.Group{
			"e-alice": {{Name: "devs"}, {Name: "staff"}}, // staff: inherited
			"e-ci":    {{Name: "deployers"}},
		},
	}
	b := plugin.New(backend.Options{Logger: hclog.NewNullLogger()})
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.System = ids
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	m := &mount{t: t, b: b, storage: conf.StorageView, path: "registry"}
	m.ok(update, "config", map[string]any{"bcrypt_cost": 4})
	return m, ids
}

// identityCall asks token/identity (or token/refresh) as a Vault token of
// the given entity would.
func (m *mount) identityCall(path, entityID string, data map[string]any) (int, *logical.Response, string) {
	m.t.Helper()
	req := &logical.Request{Operation: update, Path: path, Data: data, Storage: m.storage, MountPoint: m.path + "/", EntityID: entityID,
		ClientTokenAccessor: "accessor-of-" + entityID}
	return m.do(req)
}

func grantsOf(t *testing.T, resp *logical.Response) (sub string, granted string) {
	t.Helper()
	c := jwtClaims(t, resp.Data["token"].(string))
	var grants []access.Grant
	if err := json.Unmarshal(c["access"], &grants); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, g := range grants {
		parts = append(parts, g.Type+":"+g.Name+":"+strings.Join(g.Actions, ","))
	}
	if err := json.Unmarshal(c["sub"], &sub); err != nil {
		t.Fatal(err)
	}
	return sub, strings.Join(parts, ";")
}

func TestIdentityAccess_groupsAndEntitiesLifecycle(t *testing.T) {
	m, _ := newIdentityMount(t)
	for _, kind := range []string{"groups", "entities"} {
		m.ok(update, kind+"/devs", map[string]any{"access": " repository:app/*:pull,push ; ;registry:catalog:*"})
		got := m.ok(read, kind+"/devs", nil).Data
		if got["access"] != "repository:app/*:pull,push;registry:catalog:*" || got["created"] == "" {
			t.Errorf("%s/devs read = %v", kind, got)
		}
		m.fail(update, kind+"/devs", map[string]any{"access": "repository:app/*:pull;repository:x:fly"}, http.StatusBadRequest, `access entry 2 "repository:x:fly"`)
		if got := m.ok(read, kind+"/devs", nil).Data["access"]; got != "repository:app/*:pull,push;registry:catalog:*" {
			t.Errorf("a refused write changed %s/devs: %v", kind, got)
		}
		m.fail(update, kind+"/devs", map[string]any{}, http.StatusBadRequest, "access is required")
		m.fail(update, kind+"/bad name", map[string]any{"access": ""}, http.StatusNotFound, "")
		if keys := m.ok(list, kind+"/", nil).Data["keys"].([]string); strings.Join(keys, ",") != "devs" {
			t.Errorf("%s list = %v", kind, keys)
		}
		m.ok(del, kind+"/devs", nil)
		m.fail(read, kind+"/devs", nil, http.StatusNotFound, "")
	}
}

func TestIdentityToken_grantsUnionOfGroupsEntityAndAnonymous(t *testing.T) {
	m, _ := newIdentityMount(t)
	m.ok(update, "config", map[string]any{"anonymous_access": "repository:public/*:pull"})
	m.ok(update, "groups/devs", map[string]any{"access": "repository:app/*:pull;repository:${user}/**:*"})
	m.ok(update, "groups/staff", map[string]any{"access": "repository:app/web:push"})
	m.ok(update, "groups/deployers", map[string]any{"access": "repository:prod/*:push,pull"})
	m.ok(update, "entities/alice", map[string]any{"access": "repository:app/db:delete"})

	scopes := []any{"repository:app/web:pull,push", "repository:app/db:delete,push", "repository:alice/x/y:push",
		"repository:prod/api:push", "repository:public/lib:pull"}
	_, resp, msg := m.identityCall("token/identity", "e-alice", map[string]any{"scope": scopes})
	if resp == nil || resp.Data["token"] == nil {
		t.Fatalf("token/identity: %s", msg)
	}
	sub, access := grantsOf(t, resp)
	want := "repository:app/web:pull,push;repository:app/db:delete;repository:alice/x/y:push;repository:public/lib:pull"
	if sub != "alice" || access != want {
		t.Errorf("alice: sub %q access %q, want %q", sub, access, want)
	}

	_, resp, _ = m.identityCall("token/identity", "e-ci", map[string]any{"scope": scopes})
	if sub, access := grantsOf(t, resp); sub != "ci-app" || access != "repository:prod/api:push;repository:public/lib:pull" {
		t.Errorf("ci: sub %q access %q", sub, access)
	}

	// An entity in no configured group: a token without access, no error.
	code, resp, msg := m.identityCall("token/identity", "e-none", map[string]any{"scope": []any{"repository:app/web:pull"}})
	if code != http.StatusOK {
		t.Fatalf("entity in no group: %d %s", code, msg)
	}
	if sub, access := grantsOf(t, resp); sub != "nobody" || access != "" {
		t.Errorf("entity in no group: sub %q access %q", sub, access)
	}

	// A group change applies to the next token.
	m.ok(del, "groups/staff", nil)
	_, resp, _ = m.identityCall("token/identity", "e-alice", map[string]any{"scope": []any{"repository:app/web:pull,push"}})
	if _, access := grantsOf(t, resp); access != "repository:app/web:pull" {
		t.Errorf("after deleting groups/staff: %q", access)
	}
}

func TestIdentityToken_refusals(t *testing.T) {
	m, ids := newIdentityMount(t)
	for _, tc := range []struct {
		name, entity string
		data         map[string]any
		want         int
		mention      string
	}{
		{"root token, no entity", "", nil, 400, "no identity entity"},
		{"unknown entity", "e-gone", nil, 401, "does not exist"},
		{"malformed scope", "e-alice", map[string]any{"scope": []any{"repository:app"}}, 400, "repository:app"},
		{"huge client_id", "e-alice", map[string]any{"client_id": strings.Repeat("c", 1000)}, 400, "client_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, msg := m.identityCall("token/identity", tc.entity, tc.data)
			if code != tc.want || !strings.Contains(msg, tc.mention) {
				t.Errorf("status %d %q, want %d mentioning %q", code, msg, tc.want, tc.mention)
			}
		})
	}
	ids.entities["e-alice"].Disabled = true
	if code, _, msg := m.identityCall("token/identity", "e-alice", nil); code != 401 || !strings.Contains(msg, "disabled") {
		t.Errorf("disabled entity: %d %q", code, msg)
	}
}

func TestIdentityToken_aliasNameSubject(t *testing.T) {
	m, _ := newIdentityMount(t)
	m.fail(update, "config", map[string]any{"identity_subject": "alias_name"}, http.StatusBadRequest, "identity_alias_mount")
	m.fail(update, "config", map[string]any{"identity_subject": "email"}, http.StatusBadRequest, "identity_subject")
	m.ok(update, "config", map[string]any{"identity_subject": "alias_name", "identity_alias_mount": "auth_ldap_1"})
	m.ok(update, "groups/devs", map[string]any{"access": "repository:${user}/*:push"})
	m.ok(update, "groups/deployers", map[string]any{"access": "repository:${user}/*:push;repository:ci-app/*:pull"})

	_, resp, _ := m.identityCall("token/identity", "e-alice", map[string]any{"scope": []any{"repository:alice.ldap/a:push", "repository:alice/a:push"}})
	if sub, access := grantsOf(t, resp); sub != "alice.ldap" || access != "repository:alice.ldap/a:push" {
		t.Errorf("alias subject: sub %q access %q", sub, access)
	}
	// No alias on that mount: the entity name, and ${user} matches nothing.
	_, resp, _ = m.identityCall("token/identity", "e-ci", map[string]any{"scope": []any{"repository:ci-app/a:push,pull"}})
	if sub, access := grantsOf(t, resp); sub != "ci-app" || access != "repository:ci-app/a:pull" {
		t.Errorf("fallback subject: sub %q access %q", sub, access)
	}
}

func TestIdentityRefresh_boundToTheEntity(t *testing.T) {
	m, ids := newIdentityMount(t)
	m.ok(update, "config", map[string]any{"identity_refresh_tokens": true})
	m.ok(update, "groups/devs", map[string]any{"access": "repository:app/*:pull,push"})
	_, resp, msg := m.identityCall("token/identity", "e-alice", map[string]any{"offline_token": true, "client_id": "docker"})
	rt, _ := resp.Data["refresh_token"].(string)
	if rt == "" {
		t.Fatalf("no refresh token: %s", msg)
	}
	// Any caller (the relay's token, no entity) may refresh it, with any
	// client_id; the grant is the entity's.
	_, resp, msg = m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt, "client_id": "buildkit", "scope": []any{"repository:app/web:push"}})
	if resp == nil || resp.Data["token"] == nil {
		t.Fatalf("refresh: %s", msg)
	}
	if sub, access := grantsOf(t, resp); sub != "alice" || access != "repository:app/web:push" || resp.Data["refresh_token"] != rt {
		t.Errorf("refresh: sub %q access %q", sub, access)
	}
	// The entity's groups as they are now.
	ids.groups["e-alice"] = nil
	_, resp, _ = m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt, "scope": []any{"repository:app/web:push"}})
	if _, access := grantsOf(t, resp); access != "" {
		t.Errorf("refresh after leaving the group: %q", access)
	}
	ids.entities["e-alice"].Disabled = true
	if code, _, msg := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt}); code != 400 || msg != "invalid_grant: invalid refresh token" {
		t.Errorf("disabled entity's refresh token: %d %q", code, msg)
	}
	ids.entities["e-alice"].Disabled = false
	delete(ids.entities, "e-alice")
	if code, _, msg := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt}); code != 400 || msg != "invalid_grant: invalid refresh token" {
		t.Errorf("deleted entity's refresh token: %d %q", code, msg)
	}
	if code, _, msg := m.identityCall("token/refresh", "", map[string]any{"refresh_token": rt[:len(rt)-1] + "A"}); code != 400 || msg != "invalid_grant: invalid refresh token" {
		t.Errorf("made-up refresh token: %d %q", code, msg)
	}
}

// Hostile input to the identity paths: clear 4xx, nothing stored.
func TestIdentityHostile_refusedCleanly(t *testing.T) {
	m, _ := newIdentityMount(t)
	for _, tc := range []struct {
		name, path string
		data       map[string]any
		want       int
	}{
		{"access over 1 MiB", "groups/devs", map[string]any{"access": strings.Repeat("repository:a:pull;", 70000)}, 400},
		{"access of the wrong type", "groups/devs", map[string]any{"access": map[string]any{"a": 1}}, 400},
		{"name too long", "groups/" + strings.Repeat("g", 300), map[string]any{"access": ""}, 404},
		{"path in name", "entities/../users/bob", map[string]any{"access": ""}, 404},
		{"dots only", "entities/..", map[string]any{"access": ""}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, msg := m.call(update, tc.path, tc.data); code != tc.want {
				t.Errorf("status %d (%s), want %d", code, msg, tc.want)
			}
		})
	}
	for _, kind := range []string{"groups/", "entities/"} {
		if code, resp, _ := m.call(list, kind, nil); code != http.StatusNotFound && len(resp.Data["keys"].([]string)) != 0 {
			t.Errorf("refused writes stored %v", resp.Data["keys"])
		}
	}
	for name, data := range map[string]map[string]any{
		"control character in scope": {"scope": []any{"repository:a\x00:pull"}},
		"scope of the wrong type":    {"scope": map[string]any{"a": 1}},
		"ttl of the wrong type":      {"ttl": []int{1}},
	} {
		if code, _, msg := m.identityCall("token/identity", "e-alice", data); code != 400 {
			t.Errorf("%s: %d %s", name, code, msg)
		}
	}
}
