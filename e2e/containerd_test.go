//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// passwordGrant is the relay's log for an OAuth2 password grant, what ctr
// sends with --user (POST grant_type=password, without access_type=offline).
const passwordGrant = "grant=password"

// oauthClientID is the client_id (or its start) each client sends with a
// refresh grant.
var oauthClientID = map[ClientKind]string{
	Crane:  craneClientID,
	Oras:   "oras-go",
	Regctl: "regclient/regctl", // then its version
	Skopeo: "containers/image",
}

// insufficientScope is the registry's reason for refusing a token that
// lacks the repository; containerd shows the registry's message.
const insufficientScope = "insufficient_scope"

func testContainerd(t *testing.T, relay *Relay, ctrd *Containerd, reg *Registry) {
	login := []string{"--user", alice.name + ":" + alice.password}

	t.Run("ctr pulls and pushes with --user", func(t *testing.T) {
		log := ctrPullSame(t, relay, ctrd, reg, login, "alice/ctr-pull:v1") +
			ctrPush(t, relay, ctrd, reg, login, "alice/ctr-push:v1")
		if n, others := grants(log, passwordGrant); n == 0 || others != 0 {
			t.Errorf("relay log: %d password grants and %d other token requests, want only password grants", n, others)
		}
	})

	t.Run("pull of a repository not granted is refused", func(t *testing.T) {
		seed(t, reg, Crane, "alice/private-ctr:v1")
		delta := outcomesOf(t, relay, func() {
			r := ctrd.Ctr(t, "images", "pull", "--plain-http", "--user", bob.name+":"+bob.password, reg.Ref("alice/private-ctr:v1"))
			mustFailWith(t, "bob pulls alice's image with ctr", r, insufficientScope)
		})
		if !only(delta, Minted) {
			t.Errorf("relay answers: %v, want only minted (a token without that repository)", delta)
		}
	})

	t.Run("push by a pull-only user is refused", func(t *testing.T) {
		ref := ctrImport(t, ctrd, reg, "shared/ctr-by-bob:v1")
		delta := outcomesOf(t, relay, func() {
			r := ctrd.Ctr(t, "images", "push", "--plain-http", "--user", bob.name+":"+bob.password, ref)
			mustFailWith(t, "bob pushes to shared/ with ctr", r, insufficientScope)
		})
		if !only(delta, Minted) {
			t.Errorf("relay answers: %v, want only minted (a token with pull only)", delta)
		}
		if r, tags := NewAdmin(t, reg).Tags(reg, "shared/ctr-by-bob"); r.OK() && len(tags) > 0 {
			t.Errorf("the refused push left tags %v", tags)
		}
	})

	t.Run("wrong password is refused", func(t *testing.T) {
		seed(t, reg, Crane, "alice/ctr-wrong:v1")
		delta := outcomesOf(t, relay, func() {
			r := ctrd.Ctr(t, "images", "pull", "--plain-http", "--user", alice.name+":not-"+alice.password, reg.Ref("alice/ctr-wrong:v1"))
			mustFailWith(t, "ctr pull with a wrong password", r, "401 Unauthorized")
		})
		if !only(delta, Unauthorized) {
			t.Errorf("relay answers: %v, want only unauthorized", delta)
		}
	})
}

// testIdentityTokenShared: the identity token `docker login` stored serves
// every other client reading docker's config: BuildKit (in testDocker),
// `ctr --refresh` (what nerdctl does), crane, skopeo, regctl and oras.
func testIdentityTokenShared(t *testing.T, relay *Relay, dockerd *Dockerd, ctrd *Containerd, reg *Registry) {
	d := NewDocker(t, dockerd)
	mustOK(t, d.Login(reg, alice.name, alice.password))
	rt := d.IdentityToken(reg, alice.name)
	refresh := []string{"--refresh", rt}
	// Each client shows in the operator's list as the token's last user.
	lastClientIs := func(t *testing.T, want string) {
		t.Helper()
		if issued, last := reg.Service.RefreshTokenClients(t, alice.name, rt); issued != "docker" || !strings.HasPrefix(last, want) {
			t.Errorf("alice's identity token: issued to %q, last used by %q; want docker and %s", issued, last, want)
		}
	}

	t.Run("ctr pulls and pushes with --refresh", func(t *testing.T) {
		log := ctrPullSame(t, relay, ctrd, reg, refresh, "alice/ctr-refresh-pull:v1") +
			ctrPush(t, relay, ctrd, reg, refresh, "alice/ctr-refresh-push:v1")
		if n, others := grants(log, refreshGrant); n == 0 || others != 0 {
			t.Errorf("relay log: %d refresh grants and %d other token requests, want only refresh grants", n, others)
		}
		lastClientIs(t, "containerd-client")
	})

	for _, ck := range clientKinds {
		t.Run(string(ck)+" pulls with docker's config", func(t *testing.T) {
			repoTag := "alice/docker-config-" + string(ck) + ":v1"
			img := seed(t, reg, ck, repoTag)
			c := NewClient(t, ck)
			ShareDockerConfig(t, c, d)
			log := relayLog(relay, func() { pullSame(t, c, reg, repoTag, img) })
			if n, others := grants(log, refreshGrant); n == 0 || others != 0 {
				t.Errorf("relay log: %d refresh grants and %d other token requests, want only refresh grants", n, others)
			}
			lastClientIs(t, oauthClientID[ck])
		})
	}

	t.Run("podman pulls and pushes with docker's identity token", func(t *testing.T) {
		repoTag := "alice/docker-config-podman:v1"
		img := seed(t, reg, Crane, repoTag)
		p := NewContainers(t, Podman)
		ShareDockerConfig(t, p.Client, d)
		pushed := NewTestImage(t)
		log := relayLog(relay, func() {
			mustOK(t, p.Pull(reg, repoTag))
			mustOK(t, p.Push(reg, "alice/podman-with-docker-token:v1", pushed))
		})
		if got := p.Layers(reg.Ref(repoTag)); len(got) != 1 || got[0] != diffID(t, img) {
			t.Errorf("podman pulled layers %v, want %s", got, diffID(t, img))
		}
		// podman recompresses the layer it pushes: compare diff ids.
		back := NewContainers(t, Podman)
		mustOK(t, back.Login(reg, admin.name, admin.password))
		mustOK(t, back.Pull(reg, "alice/podman-with-docker-token:v1"))
		if got := back.Layers(reg.Ref("alice/podman-with-docker-token:v1")); len(got) != 1 || got[0] != diffID(t, pushed) {
			t.Errorf("podman pushed layers %v, want %s", got, diffID(t, pushed))
		}
		if n, others := grants(log, refreshGrant); n == 0 || others != 0 {
			t.Errorf("relay log: %d refresh grants and %d other token requests, want only refresh grants", n, others)
		}
		lastClientIs(t, "containers/image")
	})
}

// ctrPullSame pulls a fresh image, seeded by admin, with ctr and the given
// credentials flags, checks containerd holds the pushed layer, and returns
// what the relay logged during the pull.
func ctrPullSame(t testing.TB, relay *Relay, ctrd *Containerd, reg *Registry, auth []string, repoTag string) string {
	t.Helper()
	img := seed(t, reg, Crane, repoTag)
	args := append([]string{"images", "pull", "--plain-http"}, auth...)
	log := relayLog(relay, func() { mustOK(t, ctrd.Ctr(t, append(args, reg.Ref(repoTag))...)) })
	r := ctrd.Ctr(t, "content", "get", img.LayerDigest)
	mustOK(t, r)
	if r.Stdout != string(img.Layer) {
		t.Errorf("ctr pulled %s: the layer in containerd differs from the one pushed", repoTag)
	}
	return log
}

// ctrPush imports a fresh image into containerd, pushes it with ctr and the
// given credentials flags, has admin pull it back to compare, and returns
// what the relay logged during the push.
func ctrPush(t testing.TB, relay *Relay, ctrd *Containerd, reg *Registry, auth []string, repoTag string) string {
	t.Helper()
	img := NewTestImage(t)
	ref := ctrImportImage(t, ctrd, reg, repoTag, img)
	args := append([]string{"images", "push", "--plain-http"}, auth...)
	log := relayLog(relay, func() { mustOK(t, ctrd.Ctr(t, append(args, ref)...)) })
	pullSame(t, NewAdmin(t, reg), reg, repoTag, img)
	return log
}

// ctrImport imports a fresh image into containerd as reg's repoTag.
func ctrImport(t testing.TB, ctrd *Containerd, reg *Registry, repoTag string) string {
	t.Helper()
	return ctrImportImage(t, ctrd, reg, repoTag, NewTestImage(t))
}

// ctrImportImage imports img's OCI layout into containerd (`ctr images
// import` of a tar) named reg's repoTag, which must end in ":"+layoutTag.
func ctrImportImage(t testing.TB, ctrd *Containerd, reg *Registry, repoTag string, img *TestImage) string {
	t.Helper()
	repo, ok := strings.CutSuffix(repoTag, ":"+layoutTag)
	if !ok {
		t.Fatalf("ctr import names images by the layout's tag %q: %q", layoutTag, repoTag)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(img.Layout)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	mustWrite(t, archive, buf.Bytes())
	mustOK(t, ctrd.Ctr(t, "images", "import", "--base-name", reg.Ref(repo), archive))
	return reg.Ref(repoTag)
}
