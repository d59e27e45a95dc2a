//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// robotCreds is a robot as GET <service>/creds/<role> answers it.
type robotCreds struct {
	User, Password, DockerConfigJSON string
	LeaseID                          string
	LeaseDuration                    int
	Renewable                        bool
}

// robotCredsAs reads <service>/creds/<role> with a plain GET and token,
// the call the Vault Secrets Operator and external-secrets make.
func robotCredsAs(t testing.TB, v *Vault, token, service, role string) robotCreds {
	t.Helper()
	code, out := v.callAs(t, token, http.MethodGet, service+"/creds/"+role, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s/creds/%s: %d %v", service, role, code, out)
	}
	return robotCredsOf(t, out)
}

// robotCredsOf reads a creds/ answer.
func robotCredsOf(t testing.TB, out map[string]any) robotCreds {
	t.Helper()
	rc := robotCreds{
		User:             jsonField(out, "data", "username"),
		Password:         jsonField(out, "data", "password"),
		DockerConfigJSON: jsonField(out, "data", "dockerconfigjson"),
		LeaseID:          jsonField(out, "lease_id"),
	}
	d, _ := out["lease_duration"].(float64)
	rc.LeaseDuration = int(d)
	rc.Renewable, _ = out["renewable"].(bool)
	if rc.User == "" || rc.Password == "" || rc.LeaseID == "" {
		t.Fatalf("creds/: no robot or no lease in %v", out)
	}
	return rc
}

// robotToken asks the relay for a token as the robot, as a registry client
// does; it returns the status and the granted actions ("" for none).
func robotToken(t testing.TB, relay *Relay, service string, rc robotCreds, scope string) (int, string) {
	t.Helper()
	code, _, body := relay.Token(t, service, rc.User, rc.Password, scope)
	if code != http.StatusOK {
		return code, string(body)
	}
	var granted []string
	for _, a := range tokenClaims(t, body).Access {
		granted = append(granted, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
	}
	return code, strings.Join(granted, ";")
}

// wantRobotRefused checks that the relay refuses the robot exactly as it
// refuses an unknown user.
func wantRobotRefused(t testing.TB, relay *Relay, service string, rc robotCreds, what string) {
	t.Helper()
	code, _, body := relay.Token(t, service, rc.User, rc.Password, "repository:team/app:pull")
	// A new unknown name each time: an unknown name is counted and locked
	// out like a user, and so is an ended robot's name.
	unknown := fmt.Sprintf("robot-unknown-%d", time.Now().UnixNano())
	ucode, _, ubody := relay.Token(t, service, unknown, rc.Password, "repository:team/app:pull")
	if code != http.StatusUnauthorized || code != ucode || string(body) != string(ubody) {
		t.Fatalf("%s: robot answered %d %q, an unknown user %d %q", what, code, truncate(body, 200), ucode, truncate(ubody, 200))
	}
}

// wantNoRole checks that creds/<role> of a role that does not exist is a
// 404 naming it (the CLI shows any 404 as "No value found").
func wantNoRole(t testing.TB, v *Vault, role string) {
	t.Helper()
	code, out := v.callAs(t, rootToken, http.MethodGet, "registry/creds/"+role, nil)
	if code != http.StatusNotFound || !strings.Contains(fmt.Sprint(out["errors"]), fmt.Sprintf("role %q not found", role)) {
		t.Errorf("creds/%s of no role: %d %v, want 404 naming it", role, code, out)
	}
}

func (v *Vault) liveRobots(t testing.TB, service, role string) []string {
	t.Helper()
	code, out := v.callAs(t, rootToken, "LIST", service+"/roles/"+role+"/robots", nil)
	if code == http.StatusNotFound {
		return nil // Vault's answer to an empty list
	}
	if code != http.StatusOK {
		t.Fatalf("LIST robots: %d %v", code, out)
	}
	var names []string
	data, _ := out["data"].(map[string]any)
	keys, _ := data["keys"].([]any)
	for _, k := range keys {
		names = append(names, k.(string))
	}
	if info := fmt.Sprint(data["key_info"]); strings.Contains(info, "password") {
		t.Errorf("robots list shows a secret: %s", info)
	}
	return names
}

// TestRobots_leases: robots are Vault leases on a real Vault, at the
// relay: renew (up to max_ttl), revoke, revoke -prefix, expiry with no
// call, a role's change and delete, a plugin reload while robots are live.
func TestRobots_leases(t *testing.T) {
	st := NewStack(t, "registry")
	v, relay := st.Vault, st.Relay
	v.CLI(t, "write", "registry/roles/ci", "access=repository:team/*:pull,push;repository:${user}/**:*", "ttl=10m", "max_ttl=20m")

	rc := robotCredsAs(t, v, rootToken, "registry", "ci")
	if rc.LeaseDuration != 600 || !rc.Renewable || !strings.HasPrefix(rc.LeaseID, "registry/creds/ci/") {
		t.Fatalf("lease %s: duration %d renewable %v", rc.LeaseID, rc.LeaseDuration, rc.Renewable)
	}
	if code, got := robotToken(t, relay, "registry", rc, "repository:team/app:pull,push,delete"); code != 200 || got != "repository:team/app:pull,push" {
		t.Fatalf("robot token: %d %q", code, got)
	}
	if _, got := robotToken(t, relay, "registry", rc, "repository:other/app:pull"); got != "" {
		t.Errorf("outside the role's access: %q", got)
	}
	if _, got := robotToken(t, relay, "registry", rc, "repository:"+rc.User+"/x:delete"); got != "repository:"+rc.User+"/x:delete" {
		t.Errorf("${user}: %q", got)
	}
	if live := v.liveRobots(t, "registry", "ci"); len(live) != 1 || live[0] != rc.User {
		t.Errorf("live robots = %v", live)
	}

	t.Run("renew up to max_ttl", func(t *testing.T) {
		out := v.CLI(t, "lease", "renew", "-format=json", "-increment=15m", rc.LeaseID)
		var lease struct {
			LeaseDuration int `json:"lease_duration"`
		}
		if err := json.Unmarshal([]byte(out), &lease); err != nil || lease.LeaseDuration != 900 {
			t.Fatalf("renew by 15m: %s (%v)", out, err)
		}
		out = v.CLI(t, "lease", "renew", "-format=json", "-increment=2h", rc.LeaseID)
		if err := json.Unmarshal([]byte(out), &lease); err != nil || lease.LeaseDuration > 1200 || lease.LeaseDuration < 1100 {
			t.Fatalf("renew by 2h: %s, want capped at max_ttl 20m", out)
		}
		if code, _ := robotToken(t, relay, "registry", rc, "repository:team/app:pull"); code != 200 {
			t.Fatalf("after renew: %d", code)
		}
	})

	t.Run("revoke ends the robot and its refresh tokens", func(t *testing.T) {
		r2 := robotCredsAs(t, v, rootToken, "registry", "ci")
		code, body := postForm(t, relay, url.Values{
			"grant_type": {"password"}, "username": {r2.User}, "password": {r2.Password},
			"access_type": {"offline"}, "client_id": {"ci"}, "service": {"registry"},
		})
		if code != 200 {
			t.Fatalf("password grant: %d %s", code, body)
		}
		rt := refreshTokenOf(t, body)
		if code, _ := postRefreshGrant(t, relay, "registry", rt, "ci"); code != 200 {
			t.Fatalf("refresh before revoke: %d", code)
		}
		v.CLI(t, "lease", "revoke", r2.LeaseID)
		wantRobotRefused(t, relay, "registry", r2, "after lease revoke")
		if code, body := postRefreshGrant(t, relay, "registry", rt, "ci"); code == 200 || oauthError(body) != "invalid_grant" {
			t.Errorf("refresh after revoke: %d %s", code, body)
		}
		v.CLI(t, "lease", "revoke", r2.LeaseID) // again: nothing left, no error
	})

	t.Run("revoke -prefix", func(t *testing.T) {
		a, b := robotCredsAs(t, v, rootToken, "registry", "ci"), robotCredsAs(t, v, rootToken, "registry", "ci")
		v.CLI(t, "lease", "revoke", "-prefix", "registry/creds/ci")
		for _, r := range []robotCreds{rc, a, b} {
			wantRobotRefused(t, relay, "registry", r, "after revoke -prefix")
		}
		if live := v.liveRobots(t, "registry", "ci"); len(live) != 0 {
			t.Errorf("live robots after revoke -prefix: %v", live)
		}
	})

	t.Run("role change and delete", func(t *testing.T) {
		r := robotCredsAs(t, v, rootToken, "registry", "ci")
		v.CLI(t, "write", "registry/roles/ci", "access=repository:team/*:pull")
		if _, got := robotToken(t, relay, "registry", r, "repository:team/app:pull,push"); got != "repository:team/app:pull" {
			t.Errorf("after the role lost push: %q", got)
		}
		v.CLI(t, "delete", "registry/roles/ci")
		wantRobotRefused(t, relay, "registry", r, "after the role's delete")
		wantNoRole(t, v, "ci")
		v.CLI(t, "write", "registry/roles/ci", "access=repository:team/*:pull,push", "ttl=10m", "max_ttl=20m")
		wantRobotRefused(t, relay, "registry", r, "after the role is made again")
	})

	t.Run("plugin reload while robots are live", func(t *testing.T) {
		r := robotCredsAs(t, v, rootToken, "registry", "ci")
		gone := robotCredsAs(t, v, rootToken, "registry", "ci")
		before := findPluginPID(v.Proc.cmd.Process.Pid)
		v.CLI(t, "plugin", "reload", "-plugin="+pluginName)
		if code, _ := robotToken(t, relay, "registry", r, "repository:team/app:pull"); code != 200 {
			t.Fatalf("robot after a plugin reload: %d", code)
		}
		if after := findPluginPID(v.Proc.cmd.Process.Pid); before == 0 || after == before {
			t.Errorf("the plugin process was not restarted (%d, then %d)", before, after)
		}
		v.CLI(t, "lease", "revoke", gone.LeaseID)
		wantRobotRefused(t, relay, "registry", gone, "revoked after a plugin reload")
		if code, _ := v.callAs(t, rootToken, http.MethodPut, "sys/leases/renew", map[string]any{"lease_id": r.LeaseID}); code != 200 {
			t.Errorf("renew after a plugin reload: %d", code)
		}
	})

	t.Run("expiry with ttl=30s and no call", func(t *testing.T) {
		v.CLI(t, "write", "registry/roles/short", "access=repository:team/*:pull", "ttl=30s")
		r := robotCredsAs(t, v, rootToken, "registry", "short")
		if r.LeaseDuration != 30 {
			t.Fatalf("lease_duration %d, want 30", r.LeaseDuration)
		}
		if code, _ := robotToken(t, relay, "registry", r, "repository:team/app:pull"); code != 200 {
			t.Fatalf("before expiry: %d", code)
		}
		time.Sleep(31 * time.Second)
		wantRobotRefused(t, relay, "registry", r, "after expiry")
		// Vault's expiration manager revokes the lease; the robot's record goes.
		waitFor(t, "the expired robot's revoke", v.Proc, time.Minute, func() error {
			if live := v.liveRobots(t, "registry", "short"); len(live) != 0 {
				return fmt.Errorf("still listed: %v", live)
			}
			if code, out := v.callAs(t, rootToken, http.MethodPut, "sys/leases/lookup", map[string]any{"lease_id": r.LeaseID}); code == 200 {
				return fmt.Errorf("lease still there: %v", out)
			}
			return nil
		})
	})

	t.Run("bad input", func(t *testing.T) {
		wantNoRole(t, v, "nosuch")
		for args, want := range map[string]string{
			"write registry/roles/x access=repository:a:pull ttl=2h max_ttl=1h":             "ttl 2h0m0s is above max_ttl 1h0m0s",
			"write registry/roles/x access=repository:a:pull ttl=800h":                      "above the mount's max_lease_ttl",
			"write registry/roles/x access=repository:a:pull;repository:b:fly ttl=1m":       `access entry 2 "repository:b:fly"`,
			"write registry/roles/x access=repository:a:pull registry=https://h.example/v2": `registry "https://h.example/v2"`,
		} {
			_, errOut, err := v.TryCLI("", strings.Fields(args)...)
			if err == nil || !strings.Contains(errOut, want) {
				t.Errorf("vault %s: %v, want an error naming %q: %s", args, err, want, errOut)
			}
			if strings.Contains(errOut, "Code: 500") {
				t.Errorf("vault %s: a 500", args)
			}
		}
	})
	assertLogsFree(t, []string{rc.Password}, relay.Proc, v.Proc)
}

// TestRobots_clients: on registry 2.8 and v3, with a token of
// deploy/policies/robot-reader.hcl reading creds/ as a plain GET (the
// Vault Secrets Operator's call): docker with DOCKER_CONFIG holding only
// the dockerconfigjson (no docker login), podman with it as --authfile,
// crane; a push outside the role's access is refused; after the lease's
// revoke the next pull is refused.
func TestRobots_clients(t *testing.T) {
	st := NewStack(t, "registry")
	svc, v := st.Services["registry"], st.Vault
	svc.AddUsers(t, admin)
	ctrd := StartContainerd(t)
	dockerd := StartDockerd(t, ctrd)
	v.CLIInput(t, readFileString(t, filepath.Join("..", "deploy", "policies", "robot-reader.hcl")), "policy", "write", "registry-robot-ci", "-")
	reader := strings.TrimSpace(v.CLI(t, "token", "create", "-policy=registry-robot-ci", "-field=token"))
	checkVaultDynamicSecretExample(t)

	for _, rk := range registryKinds {
		reg := StartRegistry(t, rk, st.Relay, svc)
		t.Run(string(rk), func(t *testing.T) {
			v.CLI(t, "write", "registry/roles/ci", "access=repository:team/*:pull", "ttl=1h", "registry="+reg.Host)
			seeded := seed(t, reg, Crane, "team/app:v1")

			// The policy grants read on creds/ci and nothing else.
			if code, _ := v.callAs(t, reader, http.MethodGet, "registry/roles/ci", nil); code != http.StatusForbidden {
				t.Errorf("robot-reader read roles/ci: %d, want 403", code)
			}
			if code, _ := v.callAs(t, reader, http.MethodPut, "registry/creds/ci", nil); code != http.StatusForbidden {
				t.Errorf("robot-reader wrote creds/ci: %d, want 403", code)
			}
			rc := robotCredsAs(t, v, reader, "registry", "ci")
			var cfg struct {
				Auths map[string]struct{ Auth string } `json:"auths"`
			}
			if err := json.Unmarshal([]byte(rc.DockerConfigJSON), &cfg); err != nil || cfg.Auths[reg.Host].Auth == "" {
				t.Fatalf("dockerconfigjson %q: %v", rc.DockerConfigJSON, err)
			}
			if basic, _ := base64.StdEncoding.DecodeString(cfg.Auths[reg.Host].Auth); string(basic) != rc.User+":"+rc.Password {
				t.Fatalf("dockerconfigjson auth is not the robot's")
			}

			// docker: DOCKER_CONFIG holds only the dockerconfigjson.
			d := NewDocker(t, dockerd)
			mustWrite(t, filepath.Join(d.Config, "config.json"), []byte(rc.DockerConfigJSON))
			mustOK(t, d.Run("", "", nil, "pull", reg.Ref("team/app:v1")))
			mustOK(t, d.Run("", "", nil, "tag", reg.Ref("team/app:v1"), reg.Ref("other/app:v1")))
			mustFail(t, "docker push outside the role's access", d.Run("", "", nil, "push", reg.Ref("other/app:v1")))
			mustFail(t, "docker push without push in the role", d.Run("", "", nil, "push", reg.Ref("team/app:v1")))

			// crane, with the same config.
			c := NewClient(t, Crane)
			mustWrite(t, filepath.Join(c.Home, ".docker", "config.json"), []byte(rc.DockerConfigJSON))
			pullSame(t, c, reg, "team/app:v1", seeded)
			mustFail(t, "crane push outside the role's access", c.Push(reg, "other/x:v1", NewTestImage(t)))

			// podman, the dockerconfigjson as its --authfile.
			authFile := filepath.Join(t.TempDir(), "auth.json")
			mustWrite(t, authFile, []byte(rc.DockerConfigJSON))
			pm := NewContainers(t, Podman)
			mustOK(t, pm.Run("", "", "pull", "--tls-verify=false", "--authfile", authFile, reg.Ref("team/app:v1")))
			mustOK(t, pm.Run("", "", "tag", reg.Ref("team/app:v1"), reg.Ref("other/app:v2")))
			mustFail(t, "podman push outside the role's access", pm.Run("", "", "push", "--tls-verify=false", "--authfile", authFile, reg.Ref("other/app:v2")))

			// The lease's revoke: the next pull of each client is refused.
			v.CLI(t, "lease", "revoke", rc.LeaseID)
			mustOK(t, d.Run("", "", nil, "image", "rm", reg.Ref("team/app:v1"), reg.Ref("other/app:v1")))
			mustFail(t, "docker pull after revoke", d.Run("", "", nil, "pull", reg.Ref("team/app:v1")))
			mustFail(t, "crane pull after revoke", c.Run("", "", "pull", "--format=oci", reg.Ref("team/app:v1"), filepath.Join(t.TempDir(), "x")))
			mustFail(t, "podman pull after revoke", pm.Run("", "", "pull", "--tls-verify=false", "--authfile", authFile, reg.Ref("team/app:v1")))
		})
	}
	assertLogsFree(t, []string{admin.password}, st.Relay.Proc, v.Proc, dockerd.Proc)
}

// checkVaultDynamicSecretExample: deploy/kubernetes/vault-dynamic-secret.yaml
// reads the path robot-reader.hcl allows, with GET, into a
// kubernetes.io/dockerconfigjson Secret from the dockerconfigjson field,
// and restarts a workload when it changes.
func checkVaultDynamicSecretExample(t *testing.T) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "deploy", "kubernetes", "vault-dynamic-secret.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	policy := readFileString(t, filepath.Join("..", "deploy", "policies", "robot-reader.hcl"))
	dec := yaml.NewDecoder(f)
	found := false
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Mount, Path       string
				RequestHTTPMethod string `yaml:"requestHTTPMethod"`
				Destination       struct {
					Type           string
					Transformation struct {
						Templates map[string]struct{ Text string }
					}
				}
				RolloutRestartTargets []struct{ Kind, Name string } `yaml:"rolloutRestartTargets"`
			}
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "VaultDynamicSecret" {
			continue
		}
		found = true
		s := doc.Spec
		if !strings.Contains(policy, fmt.Sprintf("path %q", s.Mount+"/"+s.Path)) || s.RequestHTTPMethod != "GET" ||
			s.Destination.Type != "kubernetes.io/dockerconfigjson" ||
			!strings.Contains(s.Destination.Transformation.Templates[".dockerconfigjson"].Text, `"dockerconfigjson"`) ||
			len(s.RolloutRestartTargets) == 0 {
			t.Errorf("VaultDynamicSecret example does not match robot-reader.hcl or makes no dockerconfigjson secret: %+v", s)
		}
	}
	if !found {
		t.Error("deploy/kubernetes/vault-dynamic-secret.yaml has no VaultDynamicSecret")
	}
}
