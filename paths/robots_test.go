package paths_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

// robot is a robot as creds/<role> answered it, with its lease.
type robot struct {
	user, password string
	secret         *logical.Secret
	data           map[string]any
}

func (m *mount) creds(role string) robot {
	m.t.Helper()
	resp := m.ok(read, "creds/"+role, nil)
	if resp.Secret == nil {
		m.t.Fatalf("creds/%s answered no lease: %v", role, resp)
	}
	return robot{user: resp.Data["username"].(string), password: resp.Data["password"].(string), secret: resp.Secret, data: resp.Data}
}

// lease runs a renew or revoke of the robot's lease as Vault's expiration
// manager does: the secret as issued, its internal data included.
func (m *mount) lease(op logical.Operation, rb robot, increment time.Duration) (int, *logical.Response, string) {
	m.t.Helper()
	sec := *rb.secret
	sec.IssueTime = time.Now()
	sec.Increment = increment
	req := &logical.Request{Operation: op, Path: "creds/x", Secret: &sec, Data: rb.data, Storage: m.storage, MountPoint: m.path + "/"}
	return m.do(req)
}

// robots lists a role's live robots (Vault answers an empty list with 404).
func (m *mount) robots(role string) []string {
	m.t.Helper()
	code, resp, msg := m.call(list, "roles/"+role+"/robots", nil)
	switch {
	case code == http.StatusNotFound && msg == "":
		return nil
	case code != http.StatusOK:
		m.t.Fatalf("list roles/%s/robots: %d %s", role, code, msg)
	}
	keys, _ := resp.Data["keys"].([]string)
	return keys
}

func (m *mount) robotToken(rb robot, scope string) (int, *logical.Response, string) {
	m.t.Helper()
	return m.call(update, "token", map[string]any{"username": rb.user, "password": rb.password, "scope": []string{scope}})
}

func (m *mount) robotGrant(rb robot, scope string) string {
	m.t.Helper()
	code, resp, msg := m.robotToken(rb, scope)
	if code != http.StatusOK {
		m.t.Fatalf("robot %s token for %s: %d %s", rb.user, scope, code, msg)
	}
	_, granted := grantsOf(m.t, resp)
	return granted
}

// refused checks that the robot gets exactly an unknown user's answer.
func (m *mount) refused(rb robot) {
	m.t.Helper()
	code, resp, msg := m.robotToken(rb, "repository:team/app:pull")
	_, unknownResp, _ := m.call(update, "token", map[string]any{"username": "robot-nobody-x", "password": rb.password, "scope": []string{"repository:team/app:pull"}})
	if code != http.StatusUnauthorized || msg != "invalid_credentials: invalid username or password" {
		m.t.Fatalf("ended robot: %d %q, want 401 invalid_credentials", code, msg)
	}
	if resp.Data[logical.HTTPRawBody] != unknownResp.Data[logical.HTTPRawBody] {
		m.t.Fatalf("ended robot's answer %v differs from an unknown user's %v", resp.Data, unknownResp.Data)
	}
}

func TestRobots_credsAreALeasedLoginWithTheRolesAccess(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "roles/ci", map[string]any{
		"access": "repository:team/*:pull,push; repository:${user}/**:*", "ttl": "1h", "max_ttl": "24h",
		"registry": "registry.example.com,127.0.0.1:5000",
	})
	role := m.ok(read, "roles/ci", nil).Data
	if role["access"] != "repository:team/*:pull,push;repository:${user}/**:*" || role["ttl"] != int64(3600) ||
		role["max_ttl"] != int64(86400) || role["name_prefix"] != "robot-" || fmt.Sprint(role["registry"]) != "[registry.example.com 127.0.0.1:5000]" {
		t.Errorf("roles/ci = %v", role)
	}
	if keys := m.ok(list, "roles/", nil).Data["keys"].([]string); strings.Join(keys, ",") != "ci" {
		t.Errorf("roles list = %v", keys)
	}

	rb := m.creds("ci")
	if !strings.HasPrefix(rb.user, "robot-ci-") || len(rb.user) <= len("robot-ci-") {
		t.Errorf("username = %q", rb.user)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(rb.password); err != nil || len(raw) < 32 {
		t.Errorf("password is not 256 random bits: %d bytes, %v", len(raw), err)
	}
	if rb.secret.TTL != time.Hour || rb.secret.MaxTTL != 24*time.Hour || !rb.secret.Renewable {
		t.Errorf("lease = ttl %s max %s renewable %v", rb.secret.TTL, rb.secret.MaxTTL, rb.secret.Renewable)
	}
	exp, err := time.Parse(time.RFC3339, rb.data["expires_at"].(string))
	if err != nil || exp.Sub(time.Now()) < 59*time.Minute || exp.Sub(time.Now()) > 61*time.Minute {
		t.Errorf("expires_at = %v (%v)", rb.data["expires_at"], err)
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password, Auth string }
	}
	if err := json.Unmarshal([]byte(rb.data["dockerconfigjson"].(string)), &cfg); err != nil || len(cfg.Auths) != 2 {
		t.Fatalf("dockerconfigjson = %v (%v)", rb.data["dockerconfigjson"], err)
	}
	for host, a := range cfg.Auths {
		basic, _ := base64.StdEncoding.DecodeString(a.Auth)
		if a.Username != rb.user || a.Password != rb.password || string(basic) != rb.user+":"+rb.password {
			t.Errorf("auths[%s] = %+v", host, a)
		}
	}

	if got := m.robotGrant(rb, "repository:team/app:pull,push,delete"); got != "repository:team/app:pull,push" {
		t.Errorf("team/app grant = %q", got)
	}
	if got := m.robotGrant(rb, "repository:"+rb.user+"/cache:delete"); got != "repository:"+rb.user+"/cache:delete" {
		t.Errorf("${user} grant = %q", got)
	}
	if got := m.robotGrant(rb, "repository:other/app:push"); got != "" {
		t.Errorf("outside the role: %q", got)
	}

	// Without registries, no Docker config.
	m.ok(update, "roles/plain", map[string]any{"access": "repository:x:pull"})
	if _, ok := m.creds("plain").data["dockerconfigjson"]; ok {
		t.Error("dockerconfigjson for a role without registries")
	}
}

func TestRobots_badInputIsAClear4xxAndStoresNothing(t *testing.T) {
	m := newMount(t, "registry")
	m.fail(read, "creds/nosuch", nil, http.StatusNotFound, `role "nosuch" not found`)
	m.fail(list, "roles/nosuch/robots", nil, http.StatusNotFound, `role "nosuch" not found`)
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "ttl": "2h", "max_ttl": "1h"}, http.StatusBadRequest, "ttl 2h0m0s is above max_ttl 1h0m0s")
	// The test system view's max lease TTL is 48h.
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "ttl": "72h"}, http.StatusBadRequest, "ttl 72h0m0s is above the mount's max_lease_ttl 48h0m0s")
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "max_ttl": "72h"}, http.StatusBadRequest, "max_ttl 72h0m0s is above the mount's max_lease_ttl 48h0m0s")
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull;repository:b:fly"}, http.StatusBadRequest, `access entry 2 "repository:b:fly"`)
	m.fail(update, "roles/ci", map[string]any{"ttl": "1h"}, http.StatusBadRequest, "a new role needs access")
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "registry": "https://reg.example.com/v2"}, http.StatusBadRequest, `registry "https://reg.example.com/v2"`)
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "name_prefix": "a:b"}, http.StatusBadRequest, `name_prefix "a:b"`)
	m.fail(update, "roles/bad name!", map[string]any{"access": "repository:a:pull"}, http.StatusBadRequest, `role name "bad name!"`)
	m.fail(read, "creds/bad name!", nil, http.StatusBadRequest, `role name "bad name!"`)
	m.fail(read, "roles/bad name!", nil, http.StatusBadRequest, `role name "bad name!"`)
	if keys, _ := m.storage.List(context.Background(), "roles/"); len(keys) != 0 {
		t.Errorf("refused writes stored roles %v", keys)
	}

	// An update that is refused changes nothing.
	m.ok(update, "roles/ci", map[string]any{"access": "repository:a:pull", "ttl": "1h", "max_ttl": "2h"})
	m.fail(update, "roles/ci", map[string]any{"ttl": "3h"}, http.StatusBadRequest, "ttl 3h0m0s is above max_ttl 2h0m0s")
	if got := m.ok(read, "roles/ci", nil).Data["ttl"]; got != int64(3600) {
		t.Errorf("a refused update changed ttl to %v", got)
	}
}

func TestRobots_revokeEndsTheRobotAndItsRefreshTokens(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull", "ttl": "1h"})
	rb := m.creds("ci")
	other := m.creds("ci")
	resp := m.ok(update, "token", map[string]any{"username": rb.user, "password": rb.password, "offline_token": true, "client_id": "docker"})
	rt := resp.Data["refresh_token"].(string)
	m.ok(update, "token/refresh", map[string]any{"refresh_token": rt, "scope": []string{"repository:team/app:pull"}})

	robots := m.ok(list, "roles/ci/robots", nil).Data
	if keys := robots["keys"].([]string); len(keys) != 2 {
		t.Fatalf("robots = %v", robots)
	}
	if info := fmt.Sprint(robots["key_info"]); !strings.Contains(info, "issued:") || !strings.Contains(info, "expires:") ||
		strings.Contains(info, rb.password) || strings.Contains(info, other.password) {
		t.Errorf("robots key_info = %s", info)
	}

	for range 2 { // idempotent
		if code, _, msg := m.lease(logical.RevokeOperation, rb, 0); code >= 300 {
			t.Fatalf("revoke: %d %s", code, msg)
		}
	}
	m.refused(rb)
	m.fail(update, "token/refresh", map[string]any{"refresh_token": rt}, http.StatusBadRequest, "invalid refresh token")
	if code, _, _ := m.lease(logical.RenewOperation, rb, 0); code != http.StatusBadRequest {
		t.Errorf("renew of a revoked robot: %d", code)
	}
	if keys := m.robots("ci"); len(keys) != 1 || keys[0] != other.user {
		t.Errorf("robots after revoke = %v", keys)
	}
	if keys, _ := m.storage.List(context.Background(), "refresh-index/"); len(keys) != 0 {
		t.Errorf("refresh tokens left after revoke: %v", keys)
	}
	// The other robot is untouched.
	m.robotGrant(other, "repository:team/app:pull")
}

func TestRobots_expiryEndsTheRobotWithoutAnyCall(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := startMount(t, "registry", backend.Options{Now: clock}, &logical.InmemStorage{})
	m.ok(update, "config", map[string]any{"bcrypt_cost": 4})
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull", "ttl": "30s"})
	rb := m.creds("ci")
	rt := m.ok(update, "token", map[string]any{"username": rb.user, "password": rb.password, "offline_token": true}).Data["refresh_token"].(string)
	m.robotGrant(rb, "repository:team/app:pull")

	mu.Lock()
	now = now.Add(31 * time.Second)
	mu.Unlock()
	m.refused(rb)
	m.fail(update, "token/refresh", map[string]any{"refresh_token": rt}, http.StatusBadRequest, "invalid refresh token")
	if keys := m.robots("ci"); len(keys) != 0 {
		t.Errorf("an expired robot is listed: %v", keys)
	}
	// Vault's revoke at expiry then removes it.
	if code, _, msg := m.lease(logical.RevokeOperation, rb, 0); code >= 300 {
		t.Fatalf("revoke at expiry: %d %s", code, msg)
	}
	if keys, _ := m.storage.List(context.Background(), "robots/"); len(keys) != 0 {
		t.Errorf("robot records left: %v", keys)
	}
}

func TestRobots_renewExtendsUpToMaxTTL(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull", "ttl": "10m", "max_ttl": "30m"})
	rb := m.creds("ci")
	code, resp, msg := m.lease(logical.RenewOperation, rb, 20*time.Minute)
	if code != http.StatusOK || resp.Secret == nil || resp.Secret.TTL != 20*time.Minute {
		t.Fatalf("renew by 20m: %d %v %s", code, resp, msg)
	}
	code, resp, _ = m.lease(logical.RenewOperation, rb, 2*time.Hour)
	if code != http.StatusOK || resp.Secret.TTL > 30*time.Minute || resp.Secret.TTL < 29*time.Minute {
		t.Fatalf("renew by 2h: %d ttl %v, want capped at max_ttl 30m", code, resp.Secret.TTL)
	}
	robots := m.ok(list, "roles/ci/robots", nil).Data["key_info"].(map[string]any)
	exp, _ := time.Parse(time.RFC3339, robots[rb.user].(map[string]any)["expires"].(string))
	if d := time.Until(exp); d < 29*time.Minute || d > 31*time.Minute {
		t.Errorf("robot's end after renew is %s away, want 30m", d)
	}
	m.robotGrant(rb, "repository:team/app:pull")
}

func TestRobots_roleChangeAndDeleteReachLiveRobots(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull"})
	rb := m.creds("ci")
	rt := m.ok(update, "token", map[string]any{"username": rb.user, "password": rb.password, "offline_token": true}).Data["refresh_token"].(string)
	if got := m.robotGrant(rb, "repository:team/app:pull,push"); got != "repository:team/app:pull" {
		t.Errorf("before the change: %q", got)
	}
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull,push"})
	if got := m.robotGrant(rb, "repository:team/app:pull,push"); got != "repository:team/app:pull,push" {
		t.Errorf("after the change: %q", got)
	}
	_, granted := grantsOf(t, m.ok(update, "token/refresh", map[string]any{"refresh_token": rt, "scope": []string{"repository:team/app:push"}}))
	if granted != "repository:team/app:push" {
		t.Errorf("refresh after the change: %q", granted)
	}

	m.ok(del, "roles/ci", nil)
	m.refused(rb)
	m.fail(update, "token/refresh", map[string]any{"refresh_token": rt}, http.StatusBadRequest, "invalid refresh token")
	m.fail(read, "creds/ci", nil, http.StatusNotFound, `role "ci" not found`)
	// A role made again under the name does not bring its robots back.
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull,push"})
	m.refused(rb)
	if keys := m.robots("ci"); len(keys) != 0 {
		t.Errorf("robots of the deleted role listed: %v", keys)
	}
	// Its lease's revoke still cleans up.
	if code, _, msg := m.lease(logical.RevokeOperation, rb, 0); code >= 300 {
		t.Fatalf("revoke: %d %s", code, msg)
	}
}

func TestRobots_surviveAPluginRestartAndAreRevokedAfterIt(t *testing.T) {
	storage := &logical.InmemStorage{}
	m := startMount(t, "registry", backend.Options{}, storage)
	m.ok(update, "config", map[string]any{"bcrypt_cost": 4})
	m.ok(update, "roles/ci", map[string]any{"access": "repository:team/*:pull"})
	rb := m.creds("ci")
	m.robotGrant(rb, "repository:team/app:pull")

	m2 := startMount(t, "registry", backend.Options{}, storage)
	m2.robotGrant(rb, "repository:team/app:pull")
	if code, _, msg := m2.lease(logical.RevokeOperation, rb, 0); code >= 300 {
		t.Fatalf("revoke after restart: %d %s", code, msg)
	}
	m2.refused(rb)
}

func TestHostile_robotPathsRefuseCleanly(t *testing.T) {
	m := newMount(t, "registry")
	long := strings.Repeat("a", 300)
	m.fail(read, "creds/"+long, nil, http.StatusBadRequest, "role name")
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "registry": strings.Repeat("h,", 40)}, http.StatusBadRequest, "at most 16")
	m.fail(update, "roles/ci", map[string]any{"access": "repository:a:pull", "ttl": "-5s"}, http.StatusBadRequest, "")
	m.ok(update, "roles/ci", map[string]any{"access": "repository:a:pull"})
	// A lease with no or foreign internal data is refused, never a panic.
	for _, internal := range []map[string]any{nil, {"robot": 7}, {"robot": "../users/alice", "role": "../x"}} {
		sec := &logical.Secret{InternalData: map[string]any{"secret_type": "robot"}}
		for k, v := range internal {
			sec.InternalData[k] = v
		}
		req := &logical.Request{Operation: logical.RenewOperation, Path: "creds/ci", Secret: sec, Storage: m.storage, MountPoint: "registry/"}
		if code, _, _ := m.do(req); code != http.StatusBadRequest {
			t.Errorf("renew with %v: %d", internal, code)
		}
		req.Operation = logical.RevokeOperation
		if code, _, msg := m.do(req); code >= 500 {
			t.Errorf("revoke with %v: %d %s", internal, code, msg)
		}
	}
}
