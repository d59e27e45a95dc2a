//go:build e2e

package e2e

import (
	"bufio"
	"debug/elf"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
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

// TestDeploy_release: `make release` builds static, -trimpath binaries of
// the plugin, the relay, the credential helper and the kubelet credential
// provider for linux/amd64 and linux/arm64, a SHA256SUMS
// that sha256sum -c accepts, and a register line per architecture; the
// line for this machine's architecture registers the plugin in a real
// Vault, which then mints a token with it.
func TestDeploy_release(t *testing.T) {
	dist := t.TempDir()
	r := RunCommandWithin(t, 30*time.Minute, append(baseEnv(t.TempDir()), "GOCACHE="+goEnv(t, "GOCACHE"), "GOMODCACHE="+goEnv(t, "GOMODCACHE"),
		"GOTOOLCHAIN=local", "PATH="+filepath.Dir(goBinary())+":"+os.Getenv("PATH")),
		"..", "", "make", "--no-print-directory", "release", "DIST="+dist, "VERSION=v9.9.9")
	if !r.OK() {
		t.Fatalf("make release: %v", r)
	}
	if c := RunCommand(t, baseEnv(dist), dist, "", "sha256sum", "-c", "SHA256SUMS"); !c.OK() || strings.Count(c.Stdout, ": OK") != 8 {
		t.Fatalf("sha256sum -c SHA256SUMS: %v", c)
	}
	wd, _ := filepath.Abs("..")
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for arch, machine := range machines {
		for _, name := range []string{"vault-plugin-registry", "godoauth-relay", "docker-credential-vault-registry", "vault-registry-credential-provider"} {
			p := filepath.Join(dist, fmt.Sprintf("%s_v9.9.9_linux_%s", name, arch))
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
	command := "vault-plugin-registry_v9.9.9_linux_" + runtime.GOARCH
	m, ok := lines[command]
	if !ok {
		t.Fatalf("no register line for %s", command)
	}
	if m[1] != sha256Hex(readBytes(t, filepath.Join(dist, command))) || m[2] != "v9.9.9" {
		t.Errorf("the register line's sum or version is wrong: %s", m[0])
	}

	// The line as printed, on a real Vault with the binary in its plugin directory.
	v := StartVault(t)
	copyFile(t, filepath.Join(dist, command), filepath.Join(v.pluginDir, command))
	args := strings.Fields(m[0])[1:]
	v.CLI(t, args...)
	v.CLI(t, "secrets", "enable", "-path=released", "-plugin-version=v9.9.9", pluginName)
	v.CLI(t, "write", "released/users/alice", "password=alice-pw-3f9", "access=repository:a/b:pull")
	out := v.CLI(t, "write", "-field=token", "released/token", "username=alice", "password=alice-pw-3f9",
		"scope=repository:a/b:pull")
	if strings.Count(strings.TrimSpace(out), ".") != 2 {
		t.Errorf("the released plugin minted no JWT: %q", truncate([]byte(out), 200))
	}
	if info := v.CLI(t, "plugin", "info", "-version=v9.9.9", "secret", pluginName); !strings.Contains(info, m[1]) {
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

// TestDeploy_containerImage builds deploy/docker/Dockerfile with a dockerd
// this test starts (its own data root and socket, vfs storage, no
// network: FROM scratch pulls nothing), from a relay built as `make
// release` builds it, and runs it as an operator would: read-only root
// file system, the configuration mounted read-only. Docker's own
// HEALTHCHECK (the relay's healthcheck subcommand) turns healthy, the
// relay mints a token, and it runs as the image's non-root user.
// Not tested here: the arm64 image (BuildKit's --platform), publishing
// ports through a bridge (no network on the test machine: host network).
func TestDeploy_containerImage(t *testing.T) {
	cli := buildRelayImage(t)
	d := cli.daemon.Proc
	docker := cli.classic

	// The relay's configuration, as the operator mounts it.
	st := NewStack(t, "registry")
	st.Services["registry"].WriteUser(t, "alice", "alice-pw-c0de", "repository:linux/app:pull")
	port := freePort(t)
	confDir := t.TempDir()
	conf := fmt.Sprintf(relayConfig, portOf(t, st.Vault.Addr), st.Vault.RelayToken(t, "registry"), port, tokenIssuer)
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
	// The context: the relay binary as `make release` names it.
	ctxDir := t.TempDir()
	binary := filepath.Join(ctxDir, "godoauth-relay_v0.1.0_linux_"+runtime.GOARCH)
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
