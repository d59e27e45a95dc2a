//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Podman and buildah (Debian's, as root), helm v4 and cosign v2 on registry
// 2.8 and v3 through the relay. Podman and buildah keep images in
// containers/storage: each client here has storage of its own (vfs, its
// own --root and --runroot under a scratch directory) and builds with
// --isolation chroot, so no daemon, no overlay mount and no container
// runtime is involved.

const (
	Podman  ClientKind = "podman"
	Buildah ClientKind = "buildah"
	Helm    ClientKind = "helm"
	Cosign  ClientKind = "cosign"
)

var storageKinds = []ClientKind{Podman, Buildah}

// Containers is podman or buildah with storage of its own.
type Containers struct {
	*Client
	global []string // storage flags before every command
}

// NewContainers returns podman or buildah with an empty home and empty
// storage.
func NewContainers(t testing.TB, kind ClientKind) *Containers {
	t.Helper()
	dir := scratchDir(t, "vpr-"+string(kind)+"-")
	c := &Containers{Client: NewClient(t, kind), global: []string{
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}}
	if kind == Podman {
		// No systemd, no journald: cgroupfs and a file for events.
		c.global = append(c.global, "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", filepath.Join(dir, "tmp"))
	}
	// Both refuse a REGISTRY_AUTH_FILE that does not exist; and nothing
	// of the machine's registries.conf is read.
	mustWrite(t, c.path("auth.json"), []byte("{}\n"))
	mustWrite(t, filepath.Join(dir, "registries.conf"), []byte("unqualified-search-registries = []\n"))
	c.Env = []string{"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(dir, "registries.conf")}
	return c
}

func (c *Containers) Run(stdin, dir string, args ...string) Result {
	c.t.Helper()
	return c.Client.Run(stdin, dir, append(slices.Clone(c.global), args...)...)
}

func (c *Containers) Login(reg *Registry, user, password string) Result {
	c.t.Helper()
	return c.Run(password, "", "login", "--tls-verify=false", "-u", user, "--password-stdin", reg.Host)
}

// Import copies img's OCI layout into the storage and returns its id.
func (c *Containers) Import(img *TestImage) string {
	c.t.Helper()
	// Both name the image after the layout's path: a copy under a short,
	// lower-case one makes that a valid reference.
	layout := scratchDir(c.t, "vpr-oci-")
	if err := os.CopyFS(layout, os.DirFS(img.Layout)); err != nil {
		c.t.Fatal(err)
	}
	r := c.Run("", "", "pull", "-q", "oci:"+layout+":"+layoutTag)
	mustOK(c.t, r)
	lines := strings.Fields(r.Stdout)
	if len(lines) == 0 {
		c.t.Fatalf("%s pull oci: printed no image id: %v", c.Kind, r)
	}
	return lines[len(lines)-1]
}

// Push imports img and pushes it to reg as repoTag.
func (c *Containers) Push(reg *Registry, repoTag string, img *TestImage) Result {
	c.t.Helper()
	return c.Run("", "", "push", "--tls-verify=false", c.Import(img), "docker://"+reg.Ref(repoTag))
}

func (c *Containers) Pull(reg *Registry, repoTag string) Result {
	c.t.Helper()
	return c.Run("", "", "pull", "--tls-verify=false", reg.Ref(repoTag))
}

// Build builds dir's Dockerfile as tag, pulling its base.
func (c *Containers) Build(dir, tag string) Result {
	c.t.Helper()
	return c.Run("", dir, "build", "--isolation", "chroot", "--tls-verify=false", "-t", tag, ".")
}

// Layers returns the image's layer diff ids, base image first.
func (c *Containers) Layers(ref string) []string {
	c.t.Helper()
	// buildah's templates have no json function.
	var r Result
	if c.Kind == Podman {
		r = c.Run("", "", "image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}} {{end}}", ref)
	} else {
		r = c.Run("", "", "inspect", "--type", "image", "--format", "{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}", ref)
	}
	mustOK(c.t, r)
	return strings.Fields(r.Stdout)
}

// TestContainers_podmanBuildahHelmCosign: podman and buildah log in, push,
// pull back the same layers and build from a private base; podman pushes a
// manifest list with --all; helm pushes and pulls a chart; cosign signs
// and verifies with the signature in another repository; each is refused
// what it is not granted, and shows why. On registry 2.8 and v3.
func TestContainers_podmanBuildahHelmCosign(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, alice, bob, admin)
	for _, rk := range registryKinds {
		reg := StartRegistry(t, rk, st.Relay, svc)
		t.Run(string(rk), func(t *testing.T) {
			for _, kind := range storageKinds {
				t.Run(string(kind), func(t *testing.T) { testContainers(t, st.Relay, reg, kind) })
			}
			t.Run("podman manifest push --all", func(t *testing.T) { testManifestPushAll(t, st.Relay, reg) })
			t.Run("helm", func(t *testing.T) { testHelm(t, st.Relay, reg) })
			t.Run("cosign", func(t *testing.T) { testCosign(t, st.Relay, reg) })
		})
	}
	assertLogsFree(t, []string{alice.password, bob.password, admin.password, "not-" + alice.password}, st.Relay.Proc, st.Vault.Proc)
}

// deniedWords: how podman, buildah, helm and cosign show a registry's
// refusal of a token's scope.
var deniedWords = regexp.MustCompile(`(?i)denied|insufficient_scope|unauthorized|\b403\b`)

// badLoginWords: how they show the relay's 401 for a wrong password.
var badLoginWords = regexp.MustCompile(`(?i)unauthorized|invalid username/password|\b401\b`)

func testContainers(t *testing.T, relay *Relay, reg *Registry, kind ClientKind) {
	t.Run("login, push, pull back the same layers", func(t *testing.T) {
		img := NewTestImage(t)
		ref := "alice/" + string(kind) + ":v1"
		c, back := NewContainers(t, kind), NewContainers(t, kind)
		delta := outcomesOf(t, relay, func() {
			mustOK(t, c.Login(reg, alice.name, alice.password))
			mustOK(t, c.Push(reg, ref, img))
			mustOK(t, back.Login(reg, alice.name, alice.password))
			mustOK(t, back.Pull(reg, ref))
		})
		if !only(delta, Minted) {
			t.Errorf("relay answers: %v, want only minted", delta)
		}
		if got := back.Layers(reg.Ref(ref)); len(got) != 1 || got[0] != diffID(t, img) {
			t.Errorf("pulled layers %v, want the pushed %s", got, diffID(t, img))
		}
	})

	t.Run("builds from a private base", func(t *testing.T) {
		base := seed(t, reg, Crane, "alice/base-"+string(kind)+":v1")
		dir := buildContext(t, "FROM "+reg.Ref("alice/base-"+string(kind)+":v1")+"\nCOPY "+payloadName+" /added.bin\n")
		c := NewContainers(t, kind)
		mustOK(t, c.Login(reg, alice.name, alice.password))
		tag := "localhost/built-" + string(kind) + ":v1"
		mustOK(t, c.Build(dir, tag))
		if layers := c.Layers(tag); len(layers) != 2 || layers[0] != diffID(t, base) {
			t.Errorf("built image layers %v, want the base's %s and one more", layers, diffID(t, base))
		}
		b := NewContainers(t, kind)
		mustOK(t, b.Login(reg, bob.name, bob.password))
		mustBeRefused(t, "bob builds from alice's base", b.Build(dir, tag), deniedWords)
	})

	t.Run("push by a pull-only user is refused", func(t *testing.T) {
		c := NewContainers(t, kind)
		mustOK(t, c.Login(reg, bob.name, bob.password))
		repo := "shared/" + string(kind) + "-by-bob"
		delta := outcomesOf(t, relay, func() {
			mustBeRefused(t, "bob pushes to shared/", c.Push(reg, repo+":v1", NewTestImage(t)), deniedWords)
		})
		if !mintedOnly(delta) {
			t.Errorf("relay answers: %v, want only minted (a token with pull only)", delta)
		}
		if r, tags := NewAdmin(t, reg).Tags(reg, repo); r.OK() && len(tags) > 0 {
			t.Errorf("the refused push left tags %v", tags)
		}
	})

	t.Run("pull of a repository not granted is refused", func(t *testing.T) {
		seed(t, reg, Crane, "alice/private-"+string(kind)+":v1")
		c := NewContainers(t, kind)
		mustOK(t, c.Login(reg, bob.name, bob.password))
		mustBeRefused(t, "bob pulls alice's image", c.Pull(reg, "alice/private-"+string(kind)+":v1"), deniedWords)
	})

	t.Run("login with a wrong password is refused", func(t *testing.T) {
		c := NewContainers(t, kind)
		delta := outcomesOf(t, relay, func() {
			mustBeRefused(t, "login", c.Login(reg, alice.name, "not-"+alice.password), badLoginWords)
		})
		if !only(delta, Unauthorized) {
			t.Errorf("relay answers: %v, want only unauthorized", delta)
		}
	})
}

// testManifestPushAll: podman pushes a manifest list and every image in
// it; bob may not push one into alice's repositories.
func testManifestPushAll(t *testing.T, relay *Relay, reg *Registry) {
	img := NewTestImage(t)
	c := NewContainers(t, Podman)
	mustOK(t, c.Login(reg, alice.name, alice.password))
	id := c.Import(img)
	mustOK(t, c.Run("", "", "manifest", "create", "localhost/list:v1"))
	mustOK(t, c.Run("", "", "manifest", "add", "localhost/list:v1", "containers-storage:"+id))
	ref := reg.Ref("alice/list:v1")
	delta := outcomesOf(t, relay, func() {
		mustOK(t, c.Run("", "", "manifest", "push", "--all", "--tls-verify=false", "localhost/list:v1", "docker://"+ref))
	})
	if !only(delta, Minted) {
		t.Errorf("relay answers: %v, want only minted", delta)
	}
	admin := NewAdmin(t, reg)
	r := admin.Run("", "", "manifest", ref)
	mustOK(t, r)
	var list struct {
		Manifests []struct{ Digest string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil || len(list.Manifests) != 1 {
		t.Fatalf("the pushed list: %v %s", err, r.Stdout)
	}
	// --all pushed the image the list names, not only the list.
	mustOK(t, admin.Run("", "", "manifest", reg.Ref("alice/list@"+list.Manifests[0].Digest)))

	b := NewContainers(t, Podman)
	mustOK(t, b.Login(reg, bob.name, bob.password))
	mustOK(t, b.Run("", "", "manifest", "create", "localhost/list:v1"))
	mustOK(t, b.Run("", "", "manifest", "add", "localhost/list:v1", "containers-storage:"+b.Import(NewTestImage(t))))
	mustBeRefused(t, "bob pushes a list into alice/", b.Run("", "", "manifest", "push", "--all", "--tls-verify=false",
		"localhost/list:v1", "docker://"+reg.Ref("alice/list:by-bob")), deniedWords)
}

// helmChart packages a chart of its own name in a fresh directory and
// returns the .tgz.
func helmChart(t testing.TB, h *Client, name string) string {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, name, "Chart.yaml"), fmt.Appendf(nil, "apiVersion: v2\nname: %s\nversion: 0.1.0\ntype: application\n", name))
	mustWrite(t, filepath.Join(dir, name, "templates", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e\n"))
	mustOK(t, h.Run("", dir, "package", name, "-d", dir))
	return filepath.Join(dir, name+"-0.1.0.tgz")
}

func helmLogin(h *Client, reg *Registry, user, password string) Result {
	return h.Run(password, "", "registry", "login", "--plain-http", "--insecure", "-u", user, "--password-stdin", reg.Host)
}

// testHelm: helm v4 pushes a chart to oci:// and pulls back the same
// bytes; a pull-only user is refused the push, a wrong password the login.
func testHelm(t *testing.T, relay *Relay, reg *Registry) {
	h := NewClient(t, Helm)
	chart := helmChart(t, h, "app-"+strings.ToLower(strings.ReplaceAll(string(reg.Kind), ".", "")))
	delta := outcomesOf(t, relay, func() {
		mustOK(t, helmLogin(h, reg, alice.name, alice.password))
		mustOK(t, h.Run("", "", "push", chart, "oci://"+reg.Ref("alice/charts"), "--plain-http"))
		out := t.TempDir()
		mustOK(t, h.Run("", "", "pull", "oci://"+reg.Ref("alice/charts/"+strings.TrimSuffix(filepath.Base(chart), "-0.1.0.tgz")),
			"--version", "0.1.0", "--plain-http", "-d", out))
		if got, want := readBytes(t, filepath.Join(out, filepath.Base(chart))), readBytes(t, chart); string(got) != string(want) {
			t.Errorf("helm pulled %d bytes that differ from the %d pushed", len(got), len(want))
		}
	})
	if !only(delta, Minted) {
		t.Errorf("relay answers: %v, want only minted", delta)
	}

	b := NewClient(t, Helm)
	mustOK(t, helmLogin(b, reg, bob.name, bob.password))
	mustBeRefused(t, "bob pushes a chart to shared/", b.Run("", "", "push", chart, "oci://"+reg.Ref("shared/charts"), "--plain-http"), deniedWords)
	mustBeRefused(t, "helm login with a wrong password", helmLogin(NewClient(t, Helm), reg, alice.name, "not-"+alice.password), badLoginWords)
}

// manifestDigest is the digest of img's manifest, as pushed.
func manifestDigest(t testing.TB, img *TestImage) string {
	t.Helper()
	var index struct{ Manifests []ociDescriptor }
	if err := json.Unmarshal(readBytes(t, filepath.Join(img.Layout, "index.json")), &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("the layout's index: %v", err)
	}
	return index.Manifests[0].Digest
}

// newCosign returns cosign logged in as u, with a key pair of its own and
// signatures going to sigRepo (COSIGN_REPOSITORY).
func newCosign(t testing.TB, reg *Registry, u user, sigRepo string) *Client {
	t.Helper()
	c := NewClient(t, Cosign)
	c.Env = []string{"COSIGN_PASSWORD=", "COSIGN_REPOSITORY=" + reg.Ref(sigRepo), "TUF_ROOT=" + c.path(".sigstore")}
	mustOK(t, c.Run("", c.Home, "generate-key-pair"))
	mustOK(t, c.Run(u.password, "", "login", reg.Host, "-u", u.name, "--password-stdin"))
	return c
}

var cosignInsecure = []string{"--allow-insecure-registry", "--allow-http-registry"}

func cosignSign(c *Client, key, ref string) Result {
	return c.Run("", "", append([]string{"sign", "--key", key, "--tlog-upload=false", "-y"}, append(cosignInsecure, ref)...)...)
}

func cosignVerify(c *Client, key, ref string) Result {
	return c.Run("", "", append([]string{"verify", "--key", key, "--insecure-ignore-tlog"}, append(cosignInsecure, ref)...)...)
}

// testCosign: bob, who may only pull shared/ and push bob/*, signs a shared
// image with the signature in his own repository (COSIGN_REPOSITORY);
// anyone who may pull there verifies it. Signing into a repository not
// granted is refused; verifying where the signature may not be read is too.
func testCosign(t *testing.T, relay *Relay, reg *Registry) {
	img := seed(t, reg, Crane, "shared/signed:v1")
	ref := reg.Ref("shared/signed@" + manifestDigest(t, img))
	b := newCosign(t, reg, bob, "bob/signatures")
	delta := outcomesOf(t, relay, func() {
		mustOK(t, cosignSign(b, b.path("cosign.key"), ref))
		mustOK(t, cosignVerify(b, b.path("cosign.pub"), ref))
	})
	if !only(delta, Minted) {
		t.Errorf("relay answers: %v, want only minted", delta)
	}
	if r, tags := NewAdmin(t, reg).Tags(reg, "bob/signatures"); !r.OK() || len(tags) == 0 {
		t.Errorf("no signature in bob/signatures: %v", r)
	}
	// admin verifies with bob's public key: the signature is bob's.
	a := newCosign(t, reg, admin, "bob/signatures")
	mustOK(t, cosignVerify(a, b.path("cosign.pub"), ref))
	if r := cosignVerify(a, a.path("cosign.pub"), ref); r.OK() {
		t.Errorf("admin's own key verified bob's signature: %v", r)
	}

	// bob may not write signatures into alice's repositories.
	intoAlice := newCosign(t, reg, bob, "alice/signatures")
	mustBeRefused(t, "bob signs into alice/signatures", cosignSign(intoAlice, intoAlice.path("cosign.key"), ref), deniedWords)
	// alice may not read bob's signatures.
	al := newCosign(t, reg, alice, "bob/signatures")
	mustBeRefused(t, "alice verifies from bob/signatures", cosignVerify(al, b.path("cosign.pub"), ref), deniedWords)
}
