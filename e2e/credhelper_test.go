//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// docker-credential-vault-registry end to end: a person logs in to Vault
// (userpass; LDAP against the suite's slapd) and nothing else; every client
// finds its registry credentials through the helper named in its
// credHelpers, with no `login` of its own; `vault token revoke -self`
// logs them out of every registry.

// credHelperName is the helper's name in credHelpers (docker runs
// docker-credential-<name>).
const credHelperName = "vault-registry"

// vaultUser is a person's home after `vault login`: ~/.vault-token, the
// helper's configuration, and credHelpers in the configuration of docker,
// crane and cosign (~/.docker/config.json), podman and skopeo
// (~/auth.json, REGISTRY_AUTH_FILE) and helm (its registry config.json).
type vaultUser struct {
	home  string
	vault *Vault
	env   []string // PATH with the helper first
	t     testing.TB
}

// newVaultUser runs `vault login -method=<method> args…` in a new home and
// sets up the helper for regs.
func newVaultUser(t testing.TB, v *Vault, regs []*Registry, method string, args ...string) *vaultUser {
	t.Helper()
	u := &vaultUser{home: t.TempDir(), vault: v, t: t,
		env: []string{"PATH=" + filepath.Dir(bins.credHelper) + ":" + os.Getenv("PATH")}}
	r := u.vaultCLI(append([]string{"login", "-no-print", "-method=" + method}, args...)...)
	if !r.OK() || len(readBytes(t, filepath.Join(u.home, ".vault-token"))) == 0 {
		t.Fatalf("vault login: %v", r)
	}
	helpers := map[string]string{}
	entries := map[string]any{}
	for _, reg := range regs {
		helpers[reg.Host] = credHelperName
		entries[reg.Host] = map[string]string{"vault_addr": v.Addr, "mount": reg.Service.Name}
	}
	clientConfig := mustJSON(t, map[string]any{"credHelpers": helpers})
	for _, p := range []string{".docker/config.json", "auth.json", ".config/helm/registry/config.json"} {
		mustWrite(t, filepath.Join(u.home, p), clientConfig)
	}
	mustWrite(t, filepath.Join(u.home, ".config", "vault-registry", "config.json"), mustJSON(t, map[string]any{"registries": entries}))
	mustWrite(t, filepath.Join(u.home, "policy.json"), []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	return u
}

// vaultCLI runs the vault CLI as this person (HOME, so ~/.vault-token).
func (u *vaultUser) vaultCLI(args ...string) Result {
	u.t.Helper()
	return RunCommand(u.t, append(baseEnv(u.home), "VAULT_ADDR="+u.vault.Addr), "", "", tool(u.t, "vault"), args...)
}

// token is the person's Vault token, as the vault CLI keeps it.
func (u *vaultUser) token() string {
	return strings.TrimSpace(string(readBytes(u.t, filepath.Join(u.home, ".vault-token"))))
}

// client is a registry client of this person: their home, the helper on
// PATH, no login.
func (u *vaultUser) client(kind ClientKind) *Client {
	c := NewClient(u.t, kind)
	c.Home, c.Env = u.home, u.env
	return c
}

func (u *vaultUser) containers(kind ClientKind) *Containers {
	c := NewContainers(u.t, kind)
	c.Home, c.Env = u.home, append(c.Env, u.env...)
	return c
}

func (u *vaultUser) docker(d *Dockerd) *Docker {
	return &Docker{Config: filepath.Join(u.home, ".docker"), home: u.home, daemon: d, t: u.t}
}

// get runs the helper's get for host as this person.
func (u *vaultUser) get(host string) Result {
	u.t.Helper()
	return RunCommand(u.t, append(baseEnv(u.home), u.env...), "", host+"\n", bins.credHelper, "get")
}

// credentialsOf reads get's answer.
func credentialsOf(t testing.TB, r Result) (user, secret string) {
	t.Helper()
	var c struct{ Username, Secret string }
	if !r.OK() || json.Unmarshal([]byte(r.Stdout), &c) != nil {
		t.Fatalf("the helper's get: %v", r)
	}
	return c.Username, c.Secret
}

// identityRefreshBinding tells whether the plugin ties an identity refresh
// token to the Vault token that asked for it (the identity_refresh_tokens
// switch of the second security review), and turns them on where it does.
func identityRefreshBinding(t testing.TB, svc *Service) bool {
	t.Helper()
	code, out := svc.Vault.callAs(t, rootToken, http.MethodGet, svc.Name+"/config", nil)
	data, _ := out["data"].(map[string]any)
	if _, ok := data["identity_refresh_tokens"]; code != http.StatusOK || !ok {
		return false
	}
	svc.WriteConfig(t, "identity_refresh_tokens=true")
	return true
}

// helperRefusal: a client shows the helper's one line (`vault login`), or,
// where it goes on without credentials, the registry's refusal.
var helperRefusal = regexp.MustCompile("vault login|" + refusalWords.String())

// TestCredHelper_everyClientWithoutLogin: a userpass user pushes and pulls
// with docker (and BuildKit from a private base), crane, skopeo, podman,
// helm and cosign on registry 2.8 and v3, none of which logged in; the
// relay sees only identity refresh grants; the Vault token appears in no
// client file and no log. Then `vault token revoke -self` and each client
// is refused.
func TestCredHelper_everyClientWithoutLogin(t *testing.T) {
	st := newIdentityStack(t, "")
	v := st.Vault
	st.svc.AddUsers(t, admin)
	binding := identityRefreshBinding(t, st.svc)
	v.CLI(t, "auth", "enable", "userpass")
	v.root(t, http.MethodPut, "auth/userpass/users/alice", map[string]any{"password": "alice-vault-pw", "token_policies": identityPolicy})
	_, aliceID := v.login(t, "auth/userpass/login/alice", map[string]any{"password": "alice-vault-pw"})
	v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "devs", "member_entity_ids": []string{aliceID}})
	v.CLI(t, "write", "registry/groups/devs", "access=repository:team/**:*;repository:base/*:pull")
	ctrd := StartContainerd(t)
	dockerd := StartDockerd(t, ctrd)

	u := newVaultUser(t, v, st.regs, "userpass", "username=alice", "password=alice-vault-pw")
	vaultToken := u.token()
	for _, reg := range st.regs {
		t.Run(string(reg.Kind), func(t *testing.T) {
			log := relayLog(st.relay, func() { testEveryClientThroughTheHelper(t, u, dockerd, reg) })
			// BuildKit may ask once without credentials besides; what
			// counts is that identity refresh tokens served and none was
			// refused.
			n, others := grants(log, refreshGrant)
			if refused := countLines(log, "token request", refreshGrant, refused401); n == 0 || refused != 0 {
				t.Errorf("relay log: %d refresh grants minted, %d refused; want some and none", n, refused)
			}
			t.Logf("MEASURE %s through the helper: %d refresh grants, %d other token requests", reg.Kind, n, others)
		})
	}

	// `docker login` with the helper configured succeeds (here with the
	// relay's Vault-token way in) and the helper stores nothing: the
	// Vault token is in no file of the home (assertFilesFree below).
	d := u.docker(dockerd)
	mustOK(t, d.Run(vaultToken, "", u.env, "login", "-u", "vault", "--password-stdin", st.regs[0].Host))
	mustOK(t, d.Run("", "", u.env, "logout", st.regs[0].Host))

	p50 := getLatency(t, u, st.regs[0].Host)
	t.Logf("MEASURE credential helper get (process start, token file, token/identity with offline_token): p50 %s over 100 warm calls", p50)

	_, rt := credentialsOf(t, u.get(st.regs[0].Host))
	mustOK(t, u.vaultCLI("token", "revoke", "-self"))
	for _, reg := range st.regs {
		t.Run(string(reg.Kind)+" after vault token revoke -self", func(t *testing.T) {
			testEveryClientRefused(t, u, dockerd, reg)
		})
	}
	// A refresh token the helper handed out before dies with its Vault
	// token (when the plugin binds it; see identityRefreshBinding).
	code, body := postRefreshGrant(t, st.relay, "registry", rt, "crane")
	switch {
	case binding && (code != http.StatusUnauthorized || oauthError(body) != "invalid_grant"):
		t.Errorf("refresh with the helper's token after revoke -self: %d %s, want 401 invalid_grant", code, body)
	case !binding:
		t.Logf("NOT CHECKED: this plugin has no identity_refresh_tokens switch, so identity refresh tokens outlive their Vault token (refresh after revoke: %d)", code)
	}
	assertLogsFree(t, []string{vaultToken, rt, "alice-vault-pw"}, st.relay.Proc, dockerd.Proc, ctrd.Proc)
	assertFilesFree(t, u.home, vaultToken, ".vault-token")
}

func testEveryClientThroughTheHelper(t *testing.T, u *vaultUser, dockerd *Dockerd, reg *Registry) {
	t.Run("crane", func(t *testing.T) {
		c, img := u.client(Crane), NewTestImage(t)
		mustOK(t, c.Push(reg, "team/crane:v1", img))
		pullSame(t, c, reg, "team/crane:v1", img)
	})
	t.Run("skopeo", func(t *testing.T) {
		c, img := u.client(Skopeo), NewTestImage(t)
		mustOK(t, c.Push(reg, "team/skopeo:v1", img))
		pullSame(t, c, reg, "team/skopeo:v1", img)
	})
	t.Run("podman", func(t *testing.T) {
		c, back, img := u.containers(Podman), u.containers(Podman), NewTestImage(t)
		mustOK(t, c.Push(reg, "team/podman:v1", img))
		mustOK(t, back.Pull(reg, "team/podman:v1"))
		if got := back.Layers(reg.Ref("team/podman:v1")); len(got) != 1 || got[0] != diffID(t, img) {
			t.Errorf("podman pulled layers %v, want %s", got, diffID(t, img))
		}
	})
	t.Run("helm", func(t *testing.T) {
		h := u.client(Helm)
		chart := helmChart(t, h, "app")
		mustOK(t, h.Run("", "", "push", chart, "oci://"+reg.Ref("team/charts"), "--plain-http"))
		out := t.TempDir()
		mustOK(t, h.Run("", "", "pull", "oci://"+reg.Ref("team/charts/app"), "--version", "0.1.0", "--plain-http", "-d", out))
		if string(readBytes(t, filepath.Join(out, "app-0.1.0.tgz"))) != string(readBytes(t, chart)) {
			t.Errorf("helm pulled another chart than it pushed")
		}
	})
	t.Run("cosign", func(t *testing.T) {
		img := seed(t, reg, Crane, "team/signed:v1")
		c := u.client(Cosign)
		c.Env = append(slices.Clone(u.env), "COSIGN_PASSWORD=", "COSIGN_REPOSITORY="+reg.Ref("team/signatures"), "TUF_ROOT="+c.path(".sigstore"))
		keys := cosignKeys(u, reg)
		mustOK(t, c.Run("", keys, "generate-key-pair"))
		ref := reg.Ref("team/signed@" + manifestDigest(t, img))
		mustOK(t, cosignSign(c, filepath.Join(keys, "cosign.key"), ref))
		mustOK(t, cosignVerify(c, filepath.Join(keys, "cosign.pub"), ref))
	})
	t.Run("docker push, pull and a BuildKit build from a private base", func(t *testing.T) {
		d := u.docker(dockerd)
		ref := reg.Ref("team/docker:v1")
		mustOK(t, d.Run("", buildContext(t, "FROM scratch\nCOPY "+payloadName+" /\n"), append([]string{"DOCKER_BUILDKIT=0"}, u.env...), "build", "-t", ref, "."))
		id := d.ImageID(ref)
		mustOK(t, d.Run("", "", u.env, "push", ref))
		mustOK(t, d.Run("", "", u.env, "image", "rm", ref))
		mustOK(t, d.Run("", "", u.env, "pull", ref))
		if got := d.ImageID(ref); got != id {
			t.Errorf("pulled image id %s, want the pushed %s", got, id)
		}
		base := seed(t, reg, Crane, "base/helper:v1")
		dir := buildContext(t, "FROM "+reg.Ref("base/helper:v1")+"\nCOPY "+payloadName+" /added.bin\n")
		tag := "built/helper:" + strings.ToLower(string(reg.Kind))
		mustOK(t, d.Run("", dir, append([]string{"DOCKER_BUILDKIT=1"}, u.env...), "build", "--pull", "-t", tag, "."))
		if layers := d.Layers(tag); len(layers) != 2 || layers[0] != diffID(t, base) {
			t.Errorf("built image layers %v, want the base's %s and one more", layers, diffID(t, base))
		}
	})
}

// testEveryClientRefused: after revoke -self, each client is refused.
func testEveryClientRefused(t *testing.T, u *vaultUser, dockerd *Dockerd, reg *Registry) {
	mustBeRefused := func(t *testing.T, what string, r Result, reason *regexp.Regexp) {
		t.Helper()
		mustBeRefused(t, what, r, reason)
		by := "the registry or relay"
		if strings.Contains(r.Stdout+r.Stderr, "vault login") {
			by = "the helper's line (`vault login`)"
		}
		t.Logf("MEASURE %s %s refused, showing %s", reg.Kind, what, by)
	}
	img := NewTestImage(t)
	mustBeRefused(t, "crane pull", first(u.client(Crane).Pull(reg, "team/crane:v1", img)), helperRefusal)
	mustBeRefused(t, "skopeo pull", first(u.client(Skopeo).Pull(reg, "team/skopeo:v1", img)), helperRefusal)
	mustBeRefused(t, "podman pull", u.containers(Podman).Pull(reg, "team/podman:v1"), helperRefusal)
	mustBeRefused(t, "helm pull", u.client(Helm).Run("", "", "pull", "oci://"+reg.Ref("team/charts/app"), "--version", "0.1.0",
		"--plain-http", "-d", t.TempDir()), helperRefusal)
	c := u.client(Cosign)
	c.Env = append(slices.Clone(u.env), "COSIGN_REPOSITORY="+reg.Ref("team/signatures"), "TUF_ROOT="+c.path(".sigstore"))
	mustBeRefused(t, "cosign verify", cosignVerify(c, filepath.Join(cosignKeys(u, reg), "cosign.pub"), reg.Ref("team/signed:v1")), helperRefusal)
	d := u.docker(dockerd)
	mustBeRefused(t, "docker pull", d.Run("", "", u.env, "pull", reg.Ref("team/docker:v1")), helperRefusal)
	dir := buildContext(t, "FROM "+reg.Ref("base/helper:v1")+"\nCOPY "+payloadName+" /added.bin\n")
	mustBeRefused(t, "BuildKit build", d.Run("", dir, append([]string{"DOCKER_BUILDKIT=1"}, u.env...), "build", "--pull", "-t", "built/after-revoke", "."), helperRefusal)
}

func first(r Result, _ []byte) Result { return r }

// cosignKeys is the directory of the person's key pair for reg.
func cosignKeys(u *vaultUser, reg *Registry) string {
	dir := filepath.Join(u.home, "cosign-"+string(reg.Kind))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		u.t.Fatal(err)
	}
	return dir
}

// getLatency runs the helper's get 100 times after 5 warm-up calls and
// returns the median.
func getLatency(t testing.TB, u *vaultUser, host string) time.Duration {
	t.Helper()
	for range 5 {
		mustOK(t, u.get(host))
	}
	var d []time.Duration
	for range 100 {
		start := time.Now()
		mustOK(t, u.get(host))
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// assertFilesFree fails the test if a file under dir holds secret (skip
// names the file that may: the vault CLI's own).
func assertFilesFree(t testing.TB, dir, secret, skip string) {
	t.Helper()
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Name() == skip || fi.Size() > 1<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), secret) {
			t.Errorf("%s holds the Vault token", p)
		}
		return nil
	})
}

// TestCredHelper_ldapLogin: an LDAP user (Vault's ldap method against
// slapd) pushes and pulls with crane and podman through the helper on
// both registries, access from the LDAP group; revoke -self ends it.
func TestCredHelper_ldapLogin(t *testing.T) {
	ldap := startSlapd(t, ldapTree)
	st := newIdentityStack(t, "")
	v := st.Vault
	identityRefreshBinding(t, st.svc)
	accessor := ldap.enableAuth(t, v, "service") // revoke -self needs a service token
	st.svc.WriteConfig(t, "identity_subject=alias_name", "identity_alias_mount="+accessor)
	id := jsonField(v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "ldap-developers", "type": "external"}), "data", "id")
	v.root(t, http.MethodPut, "identity/group-alias", map[string]any{"name": "developers", "mount_accessor": accessor, "canonical_id": id})
	v.CLI(t, "write", "registry/groups/ldap-developers", "access=repository:dev/*:pull,push;repository:${user}/**:*")

	u := newVaultUser(t, v, st.regs, "ldap", "username=erin", "password=erin-ldap-pw")
	for _, reg := range st.regs {
		t.Run(string(reg.Kind), func(t *testing.T) {
			for _, repo := range []string{"dev/app:v1", "erin/own:v1"} {
				c, img := u.client(Crane), NewTestImage(t)
				mustOK(t, c.Push(reg, repo, img))
				pullSame(t, c, reg, repo, img)
			}
			mustFail(t, "erin pushes to frank/", u.client(Crane).Push(reg, "frank/app:v1", NewTestImage(t)))
			p := u.containers(Podman)
			mustOK(t, p.Push(reg, "dev/podman:v1", NewTestImage(t)))
		})
	}
	if user, _ := credentialsOf(t, u.get(st.regs[0].Host)); user != "<token>" {
		t.Errorf("the helper answered user %q, want the identity-token form", user)
	}
	mustOK(t, u.vaultCLI("token", "revoke", "-self"))
	for _, reg := range st.regs {
		mustBeRefused(t, fmt.Sprintf("crane pull from %s after revoke -self", reg.Kind),
			first(u.client(Crane).Pull(reg, "dev/app:v1", NewTestImage(t))), helperRefusal)
	}
	assertLogsFree(t, []string{"erin-ldap-pw"}, st.relay.Proc)
}

// TestCredHelper_vaultTokenWhereNoRefreshTokens: on a mount that gives no
// identity refresh tokens the helper answers user "vault" and the Vault
// token (the relay's Vault-token way in), and says so once on stderr.
func TestCredHelper_vaultTokenWhereNoRefreshTokens(t *testing.T) {
	st := newIdentityStack(t, "")
	v := st.Vault
	if !identityRefreshBinding(t, st.svc) {
		st.svc.WriteConfig(t, "refresh_token_ttl=0") // this plugin's way to give none
	} else {
		st.svc.WriteConfig(t, "identity_refresh_tokens=false")
	}
	v.CLI(t, "auth", "enable", "userpass")
	v.root(t, http.MethodPut, "auth/userpass/users/alice", map[string]any{"password": "alice-vault-pw", "token_policies": identityPolicy})
	_, aliceID := v.login(t, "auth/userpass/login/alice", map[string]any{"password": "alice-vault-pw"})
	v.CLI(t, "write", "registry/entities/"+v.entityName(t, aliceID), "access=repository:team/**:*")
	u := newVaultUser(t, v, st.regs, "userpass", "username=alice", "password=alice-vault-pw")
	vaultToken := u.token()

	r := u.get(st.regs[0].Host)
	if user, secret := credentialsOf(t, r); user != "vault" || secret != vaultToken {
		t.Fatalf("the helper answered user %q, want vault and the Vault token", user)
	}
	if !strings.Contains(r.Stderr, "your Vault token is sent to the registry's token server") || strings.Contains(r.Stderr, vaultToken) {
		t.Errorf("the first get's stderr: %q, want the notice without the token", r.Stderr)
	}
	var notices int
	for _, reg := range st.regs {
		c, img := u.client(Crane), NewTestImage(t)
		r := c.Push(reg, "team/app:v1", img)
		mustOK(t, r)
		notices += strings.Count(r.Stderr, "your Vault token is sent to the registry's token server")
		pullSame(t, c, reg, "team/app:v1", img)
	}
	if notices != 0 {
		t.Errorf("the notice came again after the first get: %d times", notices)
	}
	mustOK(t, u.vaultCLI("token", "revoke", "-self"))
	mustBeRefused(t, "crane pull after revoke -self", first(u.client(Crane).Pull(st.regs[0], "team/app:v1", NewTestImage(t))), helperRefusal)
	assertLogsFree(t, []string{vaultToken, "alice-vault-pw"}, st.relay.Proc)
}
