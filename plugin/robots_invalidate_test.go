package plugin

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

// TestInvalidate_robotRoleAndRevokeSeenByTheOtherNode: a node keeps robot
// and role records in memory; a role change and a lease revoke on the
// active node reach it when Vault calls its Invalidate with the storage
// key, as on a standby.
func TestInvalidate_robotRoleAndRevokeSeenByTheOtherNode(t *testing.T) {
	active, standby := clusterOfTwo(t)
	ctx := context.Background()
	active.ok(logical.UpdateOperation, "ca/generate", nil)
	active.ok(logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4})
	active.ok(logical.UpdateOperation, "roles/ci", map[string]any{"access": "repository:team/*:pull"})
	creds := active.ok(logical.ReadOperation, "creds/ci", nil)
	user, password := creds.Data["username"].(string), creds.Data["password"].(string)

	grant := func() (int, string) {
		code, resp, _ := plugintest.Call(ctx, standby.b, &logical.Request{Operation: logical.UpdateOperation, Path: "token",
			Data: map[string]any{"username": user, "password": password, "scope": []string{"repository:team/app:pull,push"}}, Storage: standby.s, MountPoint: "registry/"})
		if code != http.StatusOK {
			return code, ""
		}
		access, _ := jwtPart(t, resp.Data["token"].(string), 1)["access"].([]any)
		var actions []string
		for _, a := range access {
			for _, act := range a.(map[string]any)["actions"].([]any) {
				actions = append(actions, act.(string))
			}
		}
		return code, strings.Join(actions, ",")
	}
	if _, got := grant(); got != "pull" {
		t.Fatalf("standby grant %q, want pull", got)
	}

	active.ok(logical.UpdateOperation, "roles/ci", map[string]any{"access": "repository:team/*:pull,push"})
	if _, got := grant(); got != "pull" {
		t.Fatalf("standby grant %q before Invalidate; want the cached pull", got)
	}
	standby.b.InvalidateKey(ctx, "roles/ci")
	if _, got := grant(); got != "pull,push" {
		t.Errorf("standby grant %q after Invalidate(roles/ci), want pull,push", got)
	}

	revoke := &logical.Request{Operation: logical.RevokeOperation, Path: "creds/ci", Secret: creds.Secret, Storage: active.s, MountPoint: "registry/"}
	if _, err := active.b.HandleRequest(ctx, revoke); err != nil {
		t.Fatal(err)
	}
	if code, _ := grant(); code != http.StatusOK {
		t.Fatalf("standby refused the robot before Invalidate (%d): the test shows nothing", code)
	}
	standby.b.InvalidateKey(ctx, "robots/"+user)
	if code, _ := grant(); code != http.StatusUnauthorized {
		t.Errorf("standby after Invalidate(robots/%s): %d, want 401", user, code)
	}
}
