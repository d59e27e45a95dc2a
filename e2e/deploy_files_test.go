//go:build e2e

package e2e

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeploy_systemdUnitsVerify: `systemd-analyze verify` accepts both
// units without a warning, with their ExecStart binaries present.
func TestDeploy_systemdUnitsVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze") // Debian's systemd (scripts/install.sh)
	dir := t.TempDir()
	for unit, binaries := range map[string]map[string]string{
		"godoauth-relay.service":                 {"/usr/local/bin/godoauth-relay": bins.relay},
		"vault-plugin-registry-register.service": {}, // runs /bin/sh, which runs vault
	} {
		text := string(readBytes(t, filepath.Join("../deploy/systemd", unit)))
		for path, real := range binaries {
			if !strings.Contains(text, path) {
				t.Fatalf("%s does not run %s", unit, path)
			}
			text = strings.ReplaceAll(text, path, real) // the binary where this test has it
		}
		p := filepath.Join(dir, unit)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		r := RunCommand(t, baseEnv(dir), dir, "", analyze, "verify", p)
		if !r.OK() || strings.TrimSpace(r.Stdout+r.Stderr) != "" {
			t.Errorf("systemd-analyze verify %s: %v", unit, r)
		}
	}
	// The register unit calls vault where HashiCorp's packages install it.
	if reg := string(readBytes(t, "../deploy/systemd/vault-plugin-registry-register.service")); !strings.Contains(reg, "exec /usr/bin/vault plugin register") {
		t.Errorf("vault-plugin-registry-register.service does not run /usr/bin/vault (HashiCorp's packages' path)")
	}
	// The relay's unit keeps it unprivileged, with its token as a credential.
	relayUnit := string(readBytes(t, "../deploy/systemd/godoauth-relay.service"))
	for _, want := range []string{"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"LoadCredential=vault-token:", "CapabilityBoundingSet=\n", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(relayUnit, want) {
			t.Errorf("godoauth-relay.service lacks %q", want)
		}
	}
}

var registerLine = regexp.MustCompile(`^vault plugin register -sha256=([0-9a-f]{64}) -version=(\S+) -command=(\S+) secret vault-plugin-registry$`)

// releaseVersion is the VERSION the tests give `make release`.
const releaseVersion = "v9.9.9"

// release is `make release` of this tree, made once per test process for
// every test that needs it (TestDeploy_release, TestDeploy_containerImage),
// with no deadline of its own: cross-compiling every command for two
// architectures with a cold build cache took over three minutes on two busy
// cores (issue 21); only go test's -timeout bounds it.
var release struct {
	once sync.Once
	root string // a directory laid out as the repository: dist/, .dockerignore
	out  Result
	err  error
}

// releaseDist runs `make release` (once) and returns the directory that
// holds its dist/, and what make printed.
func releaseDist(t *testing.T) (string, Result) {
	t.Helper()
	release.once.Do(func() {
		root, err := os.MkdirTemp("", "vpr-e2e-release-")
		if err != nil {
			release.err = err
			return
		}
		processCleanups = append(processCleanups, func() { os.RemoveAll(root) })
		release.root = root
		release.err = errors.New("make release could not run") // until it ran
		release.out = RunBuild(t, append(baseEnv(filepath.Join(root, "home")), "GOCACHE="+goEnv(t, "GOCACHE"),
			"GOMODCACHE="+goEnv(t, "GOMODCACHE"), "GOTOOLCHAIN=local", "PATH="+filepath.Dir(goBinary())+":"+os.Getenv("PATH")),
			"..", "make", "--no-print-directory", "release", "DIST="+filepath.Join(root, "dist"), "VERSION="+releaseVersion)
		release.err = nil
		if !release.out.OK() {
			release.err = fmt.Errorf("make release: %v", release.out)
		}
	})
	if release.err != nil {
		t.Fatal(release.err)
	}
	return release.root, release.out
}

// releasedCommands are the commands under cmd/, each of which `make release`
// builds for every architecture.
func releasedCommands(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("../cmd")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) < 2 {
		t.Fatalf("cmd/ holds %v; want the plugin and the relay at least", names)
	}
	return names
}

// TestDeploy_release: `make release` builds static, -trimpath binaries of
// every command under cmd/ for linux/amd64 and linux/arm64, a SHA256SUMS
// that sha256sum -c accepts, and a register line per architecture; the
// line for this machine's architecture registers the plugin in a real
// Vault, which then mints a token with it.
func TestDeploy_release(t *testing.T) {
	root, r := releaseDist(t)
	dist := filepath.Join(root, "dist")
	commands := releasedCommands(t)
	if c := RunCommand(t, baseEnv(dist), dist, "", "sha256sum", "-c", "SHA256SUMS"); !c.OK() || strings.Count(c.Stdout, ": OK") != 2*len(commands) {
		t.Fatalf("sha256sum -c SHA256SUMS: want %d sums: %v", 2*len(commands), c)
	}
	wd, _ := filepath.Abs("..")
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for arch, machine := range machines {
		for _, name := range commands {
			p := filepath.Join(dist, fmt.Sprintf("%s_%s_linux_%s", name, releaseVersion, arch))
			f, err := elf.Open(p)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked", filepath.Base(p))
				}
			}
			if f.Machine != machine {
				t.Errorf("%s is for %v, want %v", filepath.Base(p), f.Machine, machine)
			}
			f.Close()
			if strings.Contains(string(readBytes(t, p)), wd) {
				t.Errorf("%s holds the build directory %s: not built with -trimpath", filepath.Base(p), wd)
			}
		}
	}
	// The relay says the version it was released as.
	relay := filepath.Join(dist, fmt.Sprintf("godoauth-relay_%s_linux_%s", releaseVersion, runtime.GOARCH))
	if v := RunCommand(t, baseEnv(dist), dist, "", relay, "version"); strings.TrimSpace(v.Stdout) != "godoauth-relay "+releaseVersion {
		t.Errorf("the released relay's version: %v", v)
	}
	// The register lines: one per architecture, naming that binary and its sum.
	lines := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(string(readBytes(t, filepath.Join(dist, "REGISTER")))))
	for sc.Scan() {
		if m := registerLine.FindStringSubmatch(sc.Text()); m != nil {
			lines[m[3]] = m
		}
	}
	if !strings.Contains(r.Stdout, "vault plugin register -sha256=") || len(lines) != 2 {
		t.Fatalf("want 2 register lines, printed and in REGISTER; got %d:\n%s", len(lines), r.Stdout)
	}
	command := "vault-plugin-registry_" + releaseVersion + "_linux_" + runtime.GOARCH
	m, ok := lines[command]
	if !ok {
		t.Fatalf("no register line for %s", command)
	}
	if m[1] != sha256Hex(readBytes(t, filepath.Join(dist, command))) || m[2] != releaseVersion {
		t.Errorf("the register line's sum or version is wrong: %s", m[0])
	}

	// The line as printed, on a real Vault with the binary in its plugin directory.
	v := StartVault(t)
	copyFile(t, filepath.Join(dist, command), filepath.Join(v.pluginDir, command))
	args := strings.Fields(m[0])[1:]
	v.CLI(t, args...)
	v.CLI(t, "secrets", "enable", "-path=released", "-plugin-version="+releaseVersion, pluginName)
	v.CLI(t, "write", "released/users/alice", "password=alice-pw-3f9", "access=repository:a/b:pull")
	out := v.CLI(t, "write", "-field=token", "released/token", "username=alice", "password=alice-pw-3f9",
		"scope=repository:a/b:pull")
	if strings.Count(strings.TrimSpace(out), ".") != 2 {
		t.Errorf("the released plugin minted no JWT: %q", truncate([]byte(out), 200))
	}
	if info := v.CLI(t, "plugin", "info", "-version="+releaseVersion, "secret", pluginName); !strings.Contains(info, m[1]) {
		t.Errorf("vault plugin info does not show the sha256 of the line:\n%s", info)
	}
}

func goBinary() string { return filepath.Join(runtime.GOROOT(), "bin", "go") }

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command(goBinary(), "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// TestDeploy_containerImage builds deploy/docker/Dockerfile as its
// comment says, from the repository root after `make release` (the
// release's dist/ and the repository's .dockerignore), with a dockerd this
// test starts (its own data root and socket, vfs storage, no network: FROM
// scratch pulls nothing), and runs it as an operator would: read-only root
// file system, the configuration mounted read-only. The image carries its
// OCI labels; Docker's own HEALTHCHECK (the relay's healthcheck subcommand)
// turns healthy, the relay mints a token, and it runs as the image's
// non-root user.
// Not tested here: the arm64 image (BuildKit's --platform), the multi-stage
// Dockerfile.source (it needs a golang image, which cannot be pulled here),
// publishing ports through a bridge (no network on the test machine: host
// network).
func TestDeploy_containerImage(t *testing.T) {
	root, _ := releaseDist(t)
	if err := os.MkdirAll(filepath.Join(root, "deploy", "docker"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "../.dockerignore", filepath.Join(root, ".dockerignore"))
	copyFile(t, "../deploy/docker/Dockerfile", filepath.Join(root, "deploy", "docker", "Dockerfile"))
	cli := NewDocker(t, StartDockerd(t, StartContainerd(t)))
	d := cli.daemon.Proc
	docker := func(args ...string) Result {
		t.Helper()
		return cli.Run("", "..", []string{"DOCKER_BUILDKIT=0"}, args...)
	}
	// The command of the Dockerfile's comment, run where `make release` left dist/.
	build := cli.Run("", root, []string{"DOCKER_BUILDKIT=0"}, "build", "-q", "-f", "deploy/docker/Dockerfile",
		"--build-arg", "VERSION="+releaseVersion, "--build-arg", "TARGETARCH="+runtime.GOARCH, "-t", "godoauth-relay:e2e", ".")
	if !build.OK() {
		t.Fatalf("docker build: %v", build)
	}
	if r := docker("image", "inspect", "-f", "{{.Config.User}}", "godoauth-relay:e2e"); strings.TrimSpace(r.Stdout) != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532 (non-root)", r.Stdout)
	}
	labels := docker("image", "inspect", "-f", "{{json .Config.Labels}}", "godoauth-relay:e2e").Stdout
	for _, want := range []string{`"org.opencontainers.image.version":"` + releaseVersion + `"`,
		`"org.opencontainers.image.licenses":"MPL-2.0"`, `"org.opencontainers.image.source":"https://github.com/vault-registry/vault-plugin-registry"`,
		`"org.opencontainers.image.title":"godoauth-relay"`} {
		if !strings.Contains(labels, want) {
			t.Errorf("image labels lack %s: %s", want, labels)
		}
	}

	// The relay's configuration, as the operator mounts it.
	st := NewStack(t, "registry")
	st.Services["registry"].WriteUser(t, "alice", "alice-pw-c0de", "repository:linux/app:pull")
	port := freePort(t)
	confDir := t.TempDir()
	conf := RelayYAML(t, RelayOptions{Vault: st.Vault, Services: []string{"registry"}}, port)
	if err := os.WriteFile(filepath.Join(confDir, "config.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(confDir, 0o755); err != nil { // the image's user 65532 reads it
		t.Fatal(err)
	}
	r := docker("run", "-d", "--name", "relay", "--read-only", "--network", "host", "--health-interval=1s",
		"-v", confDir+":/etc/godoauth-relay:ro", relayImageTag)
	if !r.OK() {
		t.Fatalf("docker run: %v", r)
	}
	t.Cleanup(func() { docker("rm", "-f", "relay") })
	health := func() string {
		return strings.TrimSpace(docker("inspect", "-f", "{{.State.Health.Status}}", "relay").Stdout)
	}
	waitFor(t, "container healthy", d, startTimeout, func() error {
		if h := health(); h != "healthy" {
			return fmt.Errorf("health %q; logs: %s", h, docker("logs", "relay").Stderr)
		}
		return nil
	})
	code, _, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/auth?service=registry&scope=repository:linux/app:pull", port),
		"alice", "alice-pw-c0de")
	if code != http.StatusOK {
		t.Fatalf("token from the container: %d %s", code, truncate(body, 300))
	}
	if top := docker("top", "relay", "-o", "pid,uid,args"); !strings.Contains(top.Stdout, "65532") {
		t.Errorf("the relay does not run as uid 65532: %v", top)
	}
	// Vault sealed: Docker's health check sees it.
	st.Vault.Seal(t)
	waitFor(t, "container unhealthy", d, 30*time.Second, func() error {
		if h := health(); h != "unhealthy" {
			return fmt.Errorf("health %q", h)
		}
		return nil
	})
}

// relayImageTag is what buildRelayImage tags the relay's image.
const relayImageTag = "godoauth-relay:e2e"

// buildRelayImage builds deploy/docker/Dockerfile with a dockerd this test
// starts (its own data root and socket, vfs storage, no network: FROM
// scratch pulls nothing), from a relay built as `make release` builds it,
// and returns the docker CLI of that daemon.
func buildRelayImage(t *testing.T) *Docker {
	t.Helper()
	// The context: the relay binary where and as `make release` leaves it.
	ctxDir := t.TempDir()
	binary := filepath.Join(ctxDir, "dist", "godoauth-relay_v0.1.0_linux_"+runtime.GOARCH)
	build := exec.Command(goBinary(), "build", "-trimpath", "-ldflags", "-X github.com/vault-registry/vault-plugin-registry/relay.Version=v0.1.0",
		"-o", binary, "./cmd/godoauth-relay")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the relay: %v\n%s", err, out)
	}
	cli := NewDocker(t, StartDockerd(t, StartContainerd(t)))
	if r := cli.classic("build", "-q", "-f", "deploy/docker/Dockerfile", "--build-arg", "VERSION=v0.1.0",
		"--build-arg", "TARGETARCH="+runtime.GOARCH, "-t", relayImageTag, ctxDir); !r.OK() {
		t.Fatalf("docker build: %v", r)
	}
	return cli
}

// classic runs the docker CLI in the module root without BuildKit.
func (c *Docker) classic(args ...string) Result {
	c.t.Helper()
	return c.Run("", "..", []string{"DOCKER_BUILDKIT=0"}, args...)
}
