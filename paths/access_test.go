package paths_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// grantedBy is the access of a token answer, as type:name:actions joined
// by ";" ("" for none).
func grantedBy(t *testing.T, data map[string]any) string {
	t.Helper()
	grants, ok := data["access"].([]tokenapi.Grant)
	if !ok {
		raw, _ := json.Marshal(data["access"])
		if err := json.Unmarshal(raw, &grants); err != nil {
			t.Fatalf("access %v: %v", data["access"], err)
		}
	}
	var out []string
	for _, g := range grants {
		out = append(out, g.Type+":"+g.Name+":"+strings.Join(g.Actions, ","))
	}
	return strings.Join(out, ";")
}

func TestAccess_denyAndNetworksThroughEveryTokenPath(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "config", map[string]any{"anonymous_access": "repository:mirror/**:pull@10.0.0.0/8,fd00::/8;!repository:team/**:push"})
	m.ok(update, "users/alice", map[string]any{"password": "pw",
		"access": "repository:team/**:*;!repository:team/release/**:push,delete;repository:lab/**:push@192.0.2.0/24"})
	// vault read shows the forms as written.
	if got := m.ok(read, "users/alice", nil).Data["access"]; got != "repository:team/**:*;!repository:team/release/**:push,delete;repository:lab/**:push@192.0.2.0/24" {
		t.Errorf("read back %q", got)
	}
	token := func(addr string, scope string) string {
		d := map[string]any{"username": "alice", "password": "pw", "scope": []string{scope}}
		if addr != "" {
			d["client_addr"] = addr
		}
		return grantedBy(t, m.ok(update, "token", d).Data)
	}
	if got := token("", "repository:team/release/app:pull,push,delete"); got != "repository:team/release/app:pull" {
		t.Errorf("release push: %q", got)
	}
	if got := token("", "repository:team/app:push"); got != "" {
		t.Errorf("team/app push: anonymous_access's deny must win over alice's allow, got %q", got)
	}
	if got := token("192.0.2.9", "repository:lab/x:push"); got != "repository:lab/x:push" {
		t.Errorf("lab push from inside: %q", got)
	}
	if got := token("198.51.100.1", "repository:lab/x:push"); got != "" {
		t.Errorf("lab push from outside: %q", got)
	}
	if got := token("", "repository:lab/x:push"); got != "" {
		t.Errorf("lab push from an unknown address: %q", got)
	}

	anon := func(addr string) string {
		return grantedBy(t, m.ok(update, "token", map[string]any{"scope": []string{"repository:mirror/debian:pull"}, "client_addr": addr}).Data)
	}
	if got := anon("10.9.9.9"); got != "repository:mirror/debian:pull" {
		t.Errorf("anonymous mirror pull from 10/8: %q", got)
	}
	if got := anon("fd00::5"); got != "repository:mirror/debian:pull" {
		t.Errorf("anonymous mirror pull from fd00::/8: %q", got)
	}
	if got := anon("127.0.0.2"); got != "" {
		t.Errorf("anonymous mirror pull from 127.0.0.2: %q", got)
	}

	// The refresh path and the batch path read the address the same way.
	rt := m.ok(update, "token", map[string]any{"username": "alice", "password": "pw", "offline_token": true}).Data["refresh_token"].(string)
	refresh := func(addr string) string {
		return grantedBy(t, m.ok(update, "token/refresh", map[string]any{"refresh_token": rt, "scope": []string{"repository:lab/x:push"}, "client_addr": addr}).Data)
	}
	if refresh("192.0.2.1") != "repository:lab/x:push" || refresh("203.0.113.1") != "" {
		t.Errorf("refresh: inside %q, outside %q", refresh("192.0.2.1"), refresh("203.0.113.1"))
	}
	answers := m.batch(
		map[string]any{"username": "alice", "password": "pw", "scope": []string{"repository:lab/x:push"}, "client_addr": "192.0.2.1"},
		map[string]any{"username": "alice", "password": "pw", "scope": []string{"repository:lab/x:push"}, "client_addr": "203.0.113.1"},
		map[string]any{"refresh_token": rt, "scope": []string{"repository:lab/x:push"}, "client_addr": "192.0.2.2"},
		map[string]any{"scope": []string{"repository:mirror/a:pull"}, "client_addr": "10.0.0.1"},
	)
	var got []string
	for _, a := range answers {
		var d map[string]any
		if err := json.Unmarshal(a.Data, &d); err != nil {
			t.Fatal(err)
		}
		got = append(got, grantedBy(t, d))
	}
	if want := []string{"repository:lab/x:push", "", "repository:lab/x:push", "repository:mirror/a:pull"}; !reflect.DeepEqual(got, want) {
		t.Errorf("batch grants %q, want %q", got, want)
	}
}

func TestAccess_badFormsAre400WithThePosition(t *testing.T) {
	m := newMount(t, "registry")
	for _, c := range []struct{ path, field, value, mention string }{
		{"users/bob", "access", "repository:a:pull;repository:b:pull@10.0.0.0/33", `access entry 2 "repository:b:pull@10.0.0.0/33": network "10.0.0.0/33" is not a CIDR`},
		{"users/bob", "access", "!repository:a@b:pull@10.0.0.0/8", `pattern "a@b": "@" is not allowed`},
		{"groups/dev", "access", "repository:a:pull@", `no network after "@"`},
		{"entities/carol", "access", "!!repository:a:pull", `unknown type "!repository"`},
		{"config", "anonymous_access", "repository:a:pull@localhost", `network "localhost" is not a CIDR`},
	} {
		data := map[string]any{c.field: c.value}
		if strings.HasPrefix(c.path, "users/") {
			data["password"] = "pw"
		}
		m.fail(update, c.path, data, 400, c.mention)
	}
	// Nothing was stored by the refused writes.
	if code, _, _ := m.call(read, "users/bob", nil); code != 404 {
		t.Errorf("users/bob after a refused write: %d", code)
	}
	m.ok(update, "users/alice", map[string]any{"password": "pw", "access": "repository:a:pull"})
	m.fail(update, "token", map[string]any{"username": "alice", "password": "pw", "client_addr": "10.0.0.1:5000"}, 400, `client address "10.0.0.1:5000" is not an IP address`)
	m.fail(update, "token/refresh", map[string]any{"refresh_token": "x", "client_addr": "fe80::1%eth0"}, 400, "is not an IP address")
}

func TestAccessExplain_namesTheEntriesThatDecide(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "config", map[string]any{"anonymous_access": "repository:team/**:pull"})
	m.ok(update, "users/alice", map[string]any{"password": "pw",
		"access": "repository:team/**:*;!repository:team/release/**:push,delete;repository:team/release/**:push@10.0.0.0/8"})
	d := m.ok(read, "access/explain", map[string]any{"user": "alice", "scope": "repository:team/release/app", "address": "192.0.2.1"}).Data
	if d["subject"] != "alice" || !reflect.DeepEqual(d["sources"], []string{"user alice", "anonymous_access"}) {
		t.Errorf("subject %v sources %v", d["subject"], d["sources"])
	}
	actions := d["actions"].(map[string]any)
	push := actions["push"].(map[string]any)
	if push["granted"] != false ||
		!reflect.DeepEqual(push["denied_by"], []string{"user alice: !repository:team/release/**:push,delete"}) ||
		!reflect.DeepEqual(push["allowed_by"], []string{"user alice: repository:team/**:*"}) ||
		!reflect.DeepEqual(push["not_from_here"], []string{"user alice: repository:team/release/**:push@10.0.0.0/8"}) {
		t.Errorf("push: %v", push)
	}
	pull := actions["pull"].(map[string]any)
	if pull["granted"] != true || len(pull["allowed_by"].([]string)) != 2 {
		t.Errorf("pull: %v", pull)
	}

	m.ok(update, "groups/dev", map[string]any{"access": "!repository:team/**:delete"})
	g := m.ok(read, "access/explain", map[string]any{"group": "dev", "scope": "repository:team/app:delete"}).Data
	del := g["actions"].(map[string]any)["delete"].(map[string]any)
	if del["granted"] != false || len(del["denied_by"].([]string)) != 1 {
		t.Errorf("group dev delete: %v", del)
	}

	m.fail(read, "access/explain", map[string]any{"user": "nobody", "scope": "repository:a"}, 404, `user "nobody" does not exist`)
	m.fail(read, "access/explain", map[string]any{"group": "ghosts", "scope": "repository:a"}, 404, `group "ghosts"`)
	m.fail(read, "access/explain", map[string]any{"user": "alice", "group": "dev", "scope": "repository:a"}, 400, "exactly one of user, group and entity_id")
	m.fail(read, "access/explain", map[string]any{"user": "alice"}, 400, "scope is required")
	m.fail(read, "access/explain", map[string]any{"user": "alice", "scope": "repository:a", "address": "nowhere"}, 400, "is not an IP address")
}
