//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocker_andContainerd: docker 20.10 and containerd 1.6 from Debian, each
// daemon started once by the test and shared by its subtests, on registry
// 2.8 and v3: docker login, push, pull, the classic builder and BuildKit
// building from a private base image, ctr pulling and pushing with a password
// and with docker's identity token, crane, skopeo, regctl and oras pulling
// with docker's identity token, and the refusals of each.
func TestDocker_andContainerd(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, alice, bob, admin)
	ctrd := StartContainerd(t)
	dockerd := StartDockerd(t, ctrd)

	for _, rk := range registryKinds {
		reg := StartRegistry(t, rk, st.Relay, svc)
		t.Run(string(rk), func(t *testing.T) {
			t.Run("docker", func(t *testing.T) { testDocker(t, st.Relay, dockerd, reg) })
			t.Run("containerd", func(t *testing.T) { testContainerd(t, st.Relay, ctrd, reg) })
			t.Run("docker's identity token", func(t *testing.T) { testIdentityTokenShared(t, st.Relay, dockerd, ctrd, reg) })
		})
	}
	assertLogsFree(t, []string{alice.password, bob.password, admin.password}, st.Relay.Proc, st.Vault.Proc, dockerd.Proc, ctrd.Proc)
}

// dockerDenied is how docker shows a registry's refusal of a push or pull
// (distribution turns a 401 with error="insufficient_scope" into DENIED).
const dockerDenied = "denied: requested access to the resource is denied"

func testDocker(t *testing.T, relay *Relay, dockerd *Dockerd, reg *Registry) {
	t.Run("login, push, pull back the same image", func(t *testing.T) {
		d := NewDocker(t, dockerd)
		ref := reg.Ref("alice/docker:v1")
		mustOK(t, d.Run("", buildContext(t, "FROM scratch\nCOPY "+payloadName+" /\n"), classicBuilder, "build", "-t", ref, "."))
		id := d.ImageID(ref)
		log := relayLog(relay, func() {
			delta := outcomesOf(t, relay, func() {
				mustOK(t, d.Login(reg, alice.name, alice.password))
				mustOK(t, d.Run("", "", nil, "push", ref))
				mustOK(t, d.Run("", "", nil, "image", "rm", ref))
				if d.ImageID(ref) != "" {
					t.Fatalf("%s still there after docker image rm", ref)
				}
				mustOK(t, d.Run("", "", nil, "pull", ref))
			})
			if !only(delta, Minted) {
				t.Errorf("relay answers: %v, want only minted", delta)
			}
		})
		if got := d.ImageID(ref); got != id {
			t.Errorf("pulled image id %s, want the pushed %s", got, id)
		}
		d.IdentityToken(reg, alice.name)
		// After login, docker asks with its identity token only.
		if n, others := grants(log, refreshGrant); n == 0 || others != 1 {
			t.Errorf("relay log: %d refresh grants and %d other token requests, want refresh grants and the login's one", n, others)
		}
	})

	t.Run("pull of a repository not granted is refused", func(t *testing.T) {
		seed(t, reg, Crane, "alice/private-docker:v1")
		d := NewDocker(t, dockerd)
		mustOK(t, d.Login(reg, bob.name, bob.password))
		delta := outcomesOf(t, relay, func() {
			mustFailWith(t, "bob pulls alice's image", d.Run("", "", nil, "pull", reg.Ref("alice/private-docker:v1")), dockerDenied)
		})
		if !mintedOnly(delta) {
			t.Errorf("relay answers: %v, want only minted (a token without that repository)", delta)
		}
	})

	t.Run("push by a pull-only user is refused", func(t *testing.T) {
		d := NewDocker(t, dockerd)
		ref := reg.Ref("shared/docker-by-bob:v1")
		mustOK(t, d.Run("", buildContext(t, "FROM scratch\nCOPY "+payloadName+" /\n"), classicBuilder, "build", "-t", ref, "."))
		mustOK(t, d.Login(reg, bob.name, bob.password))
		delta := outcomesOf(t, relay, func() {
			mustFailWith(t, "bob pushes to shared/", d.Run("", "", nil, "push", ref), dockerDenied)
		})
		if !mintedOnly(delta) {
			t.Errorf("relay answers: %v, want only minted (a token with pull only)", delta)
		}
		if r, tags := NewAdmin(t, reg).Tags(reg, "shared/docker-by-bob"); r.OK() && len(tags) > 0 {
			t.Errorf("the refused push left tags %v", tags)
		}
	})

	t.Run("login with a wrong password is refused", func(t *testing.T) {
		d := NewDocker(t, dockerd)
		delta := outcomesOf(t, relay, func() {
			mustFailWith(t, "docker login", d.Login(reg, alice.name, "not-"+alice.password), "unauthorized")
		})
		if !only(delta, Unauthorized) {
			t.Errorf("relay answers: %v, want only unauthorized", delta)
		}
	})

	t.Run("classic builder builds from a private base", func(t *testing.T) {
		testBuildFromPrivateBase(t, relay, dockerd, reg, classicBuilder, "classic", "docker")
	})
	t.Run("BuildKit builds from a private base", func(t *testing.T) {
		testBuildFromPrivateBase(t, relay, dockerd, reg, buildKit, "buildkit", "buildkit-client")
	})
}

var (
	classicBuilder = []string{"DOCKER_BUILDKIT=0"}
	buildKit       = []string{"DOCKER_BUILDKIT=1"}
)

// testBuildFromPrivateBase: `docker build --pull` FROM an image only the
// logged-in user may pull. BuildKit asks for tokens itself, with the
// identity token docker login stored and client_id=buildkit-client; the
// classic builder lets the daemon ask, as docker. client is the client_id
// the operator's list must show as the token's last user.
func testBuildFromPrivateBase(t *testing.T, relay *Relay, dockerd *Dockerd, reg *Registry, builder []string, name, client string) {
	base := seed(t, reg, Crane, "alice/base-"+name+":v1")
	d := NewDocker(t, dockerd)
	mustOK(t, d.Login(reg, alice.name, alice.password))
	tag := "built/" + name + ":" + strings.ToLower(string(reg.Kind))
	dir := buildContext(t, "FROM "+reg.Ref("alice/base-"+name+":v1")+"\nCOPY "+payloadName+" /added.bin\n")
	log := relayLog(relay, func() {
		mustOK(t, d.Run("", dir, builder, "build", "--pull", "-t", tag, "."))
	})
	layers := d.Layers(tag)
	if len(layers) != 2 || layers[0] != diffID(t, base) {
		t.Errorf("built image layers %v, want the base's %s and one more", layers, diffID(t, base))
	}
	// BuildKit may ask once more, without credentials, besides its refresh
	// grants; what counts is that the identity token served and none was
	// refused.
	n, others := grants(log, refreshGrant)
	if refused := countLines(log, "token request", refreshGrant, refused401); n == 0 || refused != 0 {
		t.Errorf("relay log during the build: %d refresh grants minted, %d refused, want some and none:\n%s", n, refused, log)
	}
	t.Logf("MEASURE %s %s build: %d refresh grants, %d other token requests", reg.Kind, name, n, others)
	if others != 0 {
		t.Logf("the other token requests:\n%s", otherLines(log, refreshGrant))
	}
	if issued, last := reg.Service.RefreshTokenClients(t, alice.name, d.IdentityToken(reg, alice.name)); issued != "docker" || last != client {
		t.Errorf("alice's identity token: issued to %q, last used by %q; want docker and %s", issued, last, client)
	}

	// bob may not pull alice's base: the build stops there.
	b := NewDocker(t, dockerd)
	mustOK(t, b.Login(reg, bob.name, bob.password))
	r := b.Run("", dir, builder, "build", "--pull", "-t", tag+"-bob", ".")
	mustFail(t, "bob builds from alice's base", r)
	if !strings.Contains(r.Stderr+r.Stdout, "denied") && !strings.Contains(r.Stderr+r.Stdout, "insufficient_scope") {
		t.Errorf("bob's build failed for another reason than the registry's refusal: %v", r)
	}
}

// buildContext writes a Dockerfile and a random payload file into a fresh
// directory.
func buildContext(t testing.TB, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	payload := make([]byte, 4096)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "Dockerfile"), []byte(dockerfile))
	mustWrite(t, filepath.Join(dir, payloadName), payload)
	return dir
}

// diffID is the digest of the image's uncompressed layer, as docker lists it.
func diffID(t testing.TB, img *TestImage) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(img.Layer))
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return "sha256:" + sha256Hex(tarball)
}

// mustFailWith checks that a command failed and shows the reason.
func mustFailWith(t testing.TB, what string, r Result, reason string) {
	t.Helper()
	if r.OK() {
		t.Errorf("%s: want a failure, got %v", what, r)
		return
	}
	if !strings.Contains(r.Stderr+r.Stdout, reason) {
		t.Errorf("%s failed, but not with %q: %v", what, reason, r)
	}
}

// relayLog returns what the relay logged while f ran.
func relayLog(relay *Relay, f func()) string {
	before := len(relay.Proc.Log())
	f()
	return relay.Proc.Log()[before:]
}

// grants counts the relay's minted token requests of a grant type in log,
// and all its other token requests.
func grants(log, grant string) (n, others int) {
	n = countLines(log, "token request", grant, minted200)
	return n, countLines(log, "token request") - n
}

// otherLines returns the relay's token request lines without grant.
func otherLines(log, grant string) string {
	var out []string
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, "token request") && !strings.Contains(line, grant) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
