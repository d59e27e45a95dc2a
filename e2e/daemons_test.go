//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The two clients most people use, as Debian ships them: dockerd 20.10
// (docker.io) and containerd 1.6. A test starts each daemon itself, on its
// own sockets, data and state under a scratch directory, so nothing is
// shared with a system daemon or another test run.

// debianDockerCLI is docker.io's CLI. A newer docker CLI may come first on
// PATH, but since Docker 23 it builds only through the buildx plugin
// (`DOCKER_BUILDKIT=1 docker build` fails without it), while the 20.10 CLI
// drives the daemon's BuildKit itself; so the tests name this one.
const debianDockerCLI = "/usr/bin/docker"

// ctrNamespace is the containerd namespace the tests' images live in.
const ctrNamespace = "e2e"

// maxUnixSocketPath: sun_path holds 108 bytes, the last one NUL.
const maxUnixSocketPath = 107

// scratchDir makes a short directory for daemon state and sockets (unix
// socket paths must stay under 108 bytes, and t.TempDir() grows with the
// test's name); it is removed after the daemon has stopped.
func scratchDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("removing %s: %v", dir, err)
		}
	})
	return dir
}

func socketPath(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	// containerd also listens on <grpc address>.ttrpc.
	if len(p)+len(".ttrpc") > maxUnixSocketPath {
		t.Fatalf("socket path %q is too long for a unix socket: set TMPDIR to a shorter directory", p)
	}
	return p
}

// Containerd is a containerd started by a test.
type Containerd struct {
	Address  string // its gRPC unix socket, for ctr --address, dockerd --containerd and crictl
	HostsDir string // with the CRI plugin on: its registry hosts directory
	Proc     *Process
}

// containerdConfig keeps everything under the scratch directory: root,
// state, sockets and the opt plugin's directory (by default /opt/containerd).
// The CRI plugin (the kubelet's way in) is off unless a test asks for it.
const containerdConfig = `version = 2
root = %q
state = %q
%s

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

const criOff = `disabled_plugins = ["io.containerd.grpc.v1.cri"]`

// criConfig turns the CRI plugin on for pulls only: the native snapshotter
// (any file system), CNI and registry hosts (hosts.toml files, as
// /etc/containerd/certs.d on a node) under the scratch directory.
const criConfig = `
[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`

// StartContainerd starts containerd with its own configuration file.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	return startContainerd(t, func(string) string { return criOff })
}

// StartContainerdCRI starts containerd with its CRI plugin on, for crictl;
// HostsDir is its registry configuration directory.
func StartContainerdCRI(t testing.TB) *Containerd {
	t.Helper()
	var hosts string
	c := startContainerd(t, func(dir string) string {
		hosts = filepath.Join(dir, "certs.d")
		return fmt.Sprintf(criConfig, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"), hosts)
	})
	c.HostsDir = hosts
	return c
}

func startContainerd(t testing.TB, plugins func(dir string) string) *Containerd {
	t.Helper()
	dir := scratchDir(t, "vpr-ctrd-")
	c := &Containerd{Address: socketPath(t, dir, "containerd.sock")}
	cfg := filepath.Join(dir, "config.toml")
	mustWrite(t, cfg, fmt.Appendf(nil, containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), plugins(dir),
		c.Address, c.Address+".ttrpc", filepath.Join(dir, "opt")))
	c.Proc = StartProcess(t, "containerd", baseEnv(dir), tool(t, "containerd"), "--config", cfg)
	waitFor(t, "containerd", c.Proc, startTimeout, func() error {
		conn, err := net.Dial("unix", c.Address)
		if err == nil {
			conn.Close()
		}
		return err
	})
	return c
}

// Ctr runs `ctr --address … --namespace e2e args…`.
func (c *Containerd) Ctr(t testing.TB, args ...string) Result {
	t.Helper()
	args = append([]string{"--address", c.Address, "--namespace", ctrNamespace}, args...)
	r := RunCommand(t, baseEnv(t.TempDir()), "", "", tool(t, "ctr"), args...)
	return r
}

// Dockerd is a docker daemon started by a test.
type Dockerd struct {
	Host string // unix:///…/docker.sock, the CLI's DOCKER_HOST
	Proc *Process
}

// StartDockerd starts dockerd on its own data root, exec root, pidfile and
// socket, with the containerd of the test (left to itself, dockerd 20.10
// would use /run/containerd/containerd.sock if a system containerd listens
// there, or start one that writes /opt/containerd). vfs works on any file
// system; no bridge, iptables, forwarding or proxy, since pushing, pulling
// and building from an image run no container. An empty daemon.json keeps
// the host's /etc/docker/daemon.json out.
func StartDockerd(t testing.TB, ctrd *Containerd) *Dockerd {
	t.Helper()
	dir := scratchDir(t, "vpr-dockerd-")
	// dockerd leaves its network namespace mounted after it exits; this runs
	// after the daemon has stopped and before its directory is removed.
	t.Cleanup(func() { _ = syscall.Unmount(filepath.Join(dir, "exec", "netns", "default"), syscall.MNT_DETACH) })
	sock := socketPath(t, dir, "docker.sock")
	daemonJSON := filepath.Join(dir, "daemon.json")
	mustWrite(t, daemonJSON, []byte("{}\n"))
	d := &Dockerd{Host: "unix://" + sock}
	d.Proc = StartProcess(t, "dockerd", baseEnv(dir), tool(t, "dockerd"),
		"--config-file", daemonJSON,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--host", d.Host,
		"--containerd", ctrd.Address,
		"--storage-driver=vfs",
		"--iptables=false", "--ip-forward=false", "--ip-masq=false",
		"--bridge=none", "--userland-proxy=false")
	ping := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	waitFor(t, "dockerd", d.Proc, startTimeout, func() error {
		resp, err := ping.Get("http://docker/_ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/_ping: %d", resp.StatusCode)
		}
		return nil
	})
	return d
}

// Docker is the docker CLI of one user: its own DOCKER_CONFIG, so its
// config.json holds what its `docker login` stored and nothing else.
type Docker struct {
	Config string // the DOCKER_CONFIG directory
	home   string
	daemon *Dockerd
	t      testing.TB
}

func NewDocker(t testing.TB, d *Dockerd) *Docker {
	t.Helper()
	if !isExecutable(debianDockerCLI) {
		t.Fatalf("%s is missing: scripts/install.sh installs Debian's docker.io", debianDockerCLI)
	}
	home := t.TempDir()
	return &Docker{Config: filepath.Join(home, ".docker"), home: home, daemon: d, t: t}
}

// Run runs the docker CLI in dir (if not empty) with extra environment
// variables (e.g. DOCKER_BUILDKIT=1).
func (c *Docker) Run(stdin, dir string, extraEnv []string, args ...string) Result {
	c.t.Helper()
	env := append(baseEnv(c.home), "DOCKER_HOST="+c.daemon.Host, "DOCKER_CONFIG="+c.Config)
	return RunCommand(c.t, append(env, extraEnv...), dir, stdin, debianDockerCLI, args...)
}

// Login runs `docker login` (the daemon does the token exchange).
func (c *Docker) Login(reg *Registry, user, password string) Result {
	c.t.Helper()
	return c.Run(password, "", nil, "login", "-u", user, "--password-stdin", reg.Host)
}

// ImageID returns the image's id (its config digest), or "" when the daemon
// has no such image.
func (c *Docker) ImageID(ref string) string {
	c.t.Helper()
	r := c.Run("", "", nil, "image", "inspect", "--format", "{{.Id}}", ref)
	if !r.OK() {
		return ""
	}
	return strings.TrimSpace(r.Stdout)
}

// Layers returns the image's layer diff ids, base image first.
func (c *Docker) Layers(ref string) []string {
	c.t.Helper()
	r := c.Run("", "", nil, "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref)
	mustOK(c.t, r)
	var layers []string
	if err := json.Unmarshal([]byte(r.Stdout), &layers); err != nil {
		c.t.Fatalf("layers of %s: %v: %s", ref, err, r.Stdout)
	}
	return layers
}

// dockerConfigAuth is one entry of config.json's "auths".
type dockerConfigAuth struct {
	Auth          string `json:"auth"`
	IdentityToken string `json:"identitytoken"`
}

// StoredAuth reads what `docker login` stored for reg in config.json.
func (c *Docker) StoredAuth(reg *Registry) dockerConfigAuth {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Config, "config.json"))
	if err != nil {
		c.t.Fatalf("docker config: %v", err)
	}
	var cfg struct {
		Auths map[string]dockerConfigAuth `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		c.t.Fatalf("docker config.json: %v", err)
	}
	a, ok := cfg.Auths[reg.Host]
	if !ok {
		c.t.Fatalf("docker config.json has no entry for %s", reg.Host)
	}
	return a
}

// IdentityToken returns the identity token `docker login` stored for reg,
// after checking that docker kept the refresh token and not the password.
func (c *Docker) IdentityToken(reg *Registry, user string) string {
	c.t.Helper()
	a := c.StoredAuth(reg)
	if a.IdentityToken == "" {
		c.t.Fatalf("docker login stored no identity token for %s", reg.Host)
	}
	if got, _ := base64.StdEncoding.DecodeString(a.Auth); string(got) != user+":" {
		c.t.Errorf("docker login stored auth %q for %s, want the user name and no password", got, reg.Host)
	}
	return a.IdentityToken
}

// ShareDockerConfig points a registry client at the config.json a docker
// CLI wrote: its DOCKER_CONFIG (crane, oras, regctl) and skopeo's auth file.
func ShareDockerConfig(t testing.TB, c *Client, d *Docker) {
	t.Helper()
	for link, target := range map[string]string{
		c.path(".docker"):   d.Config,
		c.path("auth.json"): filepath.Join(d.Config, "config.json"),
	} {
		_ = os.Remove(link) // podman's and buildah's empty auth file
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
}

// RefreshTokenClients returns the client_id a refresh token was issued to
// and the last one that refreshed with it, as the operator's list
// (`vault list <service>/users/<name>/refresh-tokens`) shows them under the
// token's id: the first 16 hex digits of its SHA-256.
func (s *Service) RefreshTokenClients(t testing.TB, userName, rt string) (issued, last string) {
	t.Helper()
	path := s.Name + "/users/" + userName + "/refresh-tokens"
	code, answer := s.Vault.RootCall(t, "LIST", path, nil)
	if code != http.StatusOK {
		t.Fatalf("LIST %s: %d %v", path, code, answer)
	}
	data, _ := answer["data"].(map[string]any)
	info, _ := data["key_info"].(map[string]any)
	id := sha256Hex([]byte(rt))[:16]
	one, _ := info[id].(map[string]any)
	if one == nil {
		t.Fatalf("LIST %s: no refresh token %s", path, id)
	}
	issued, _ = one["client_id"].(string)
	last, _ = one["last_client_id"].(string)
	return issued, last
}
