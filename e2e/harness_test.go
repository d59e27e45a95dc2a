//go:build e2e

// Package e2e runs the product end to end on loopback, set up the way an
// operator does it: a Vault dev server with the plugin registered and
// enabled per registry service, the relay holding a token that may only mint
// registry tokens, registry 2.8 and v3 with token auth, and real clients.
//
// Run with `make test`, or `go test -tags e2e -count=1 -v ./e2e/...` once
// scripts/install.sh has installed the tools. The helpers here (StartVault,
// StartRelay, StartRegistry, NewClient…) are meant to be reused by new tests.
package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

const (
	pluginName    = "vault-plugin-registry"
	pluginVersion = "v0.1.0"
	rootToken     = "e2e-root-token"
	tokenIssuer   = "Token"

	startTimeout   = 60 * time.Second
	commandTimeout = 3 * time.Minute
)

// bins holds the product's binaries under test.
var bins struct {
	plugin       string
	relay        string
	credHelper   string // docker-credential-vault-registry
	credProvider string // vault-registry-credential-provider
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests uses the binaries in $VPR_BIN_DIR (what `make build` made), or
// builds them into a temporary directory so a plain `go test` never runs
// stale ones.
func runTests(m *testing.M) int {
	dir := os.Getenv("VPR_BIN_DIR")
	if dir == "" {
		tmp, err := os.MkdirTemp("", "vpr-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if err := buildProduct(tmp); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building the product:", err)
			return 1
		}
		dir = tmp
	}
	bins.plugin = filepath.Join(dir, pluginName)
	bins.relay = filepath.Join(dir, "godoauth-relay")
	bins.credHelper = filepath.Join(dir, "docker-credential-vault-registry")
	bins.credProvider = filepath.Join(dir, "vault-registry-credential-provider")
	for _, p := range []string{bins.plugin, bins.relay, bins.credHelper, bins.credProvider} {
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v (run `make build` or unset VPR_BIN_DIR)\n", err)
			return 1
		}
	}
	defer func() {
		for _, f := range processCleanups {
			f()
		}
		if lastReleaseBuild.dir != "" {
			os.RemoveAll(lastReleaseBuild.dir)
		}
	}()
	return m.Run()
}

// processCleanups run when the test process ends, for what several tests
// share (the release built once, releaseDist).
var processCleanups []func()

func buildProduct(dir string) error {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	builds := [][]string{
		{"build", "-ldflags", "-X github.com/vault-registry/vault-plugin-registry/plugin.Version=" + pluginVersion,
			"-o", filepath.Join(dir, pluginName), "./cmd/vault-plugin-registry"},
		{"build", "-o", filepath.Join(dir, "godoauth-relay"), "./cmd/godoauth-relay"},
		{"build", "-o", filepath.Join(dir, "docker-credential-vault-registry"), "./cmd/docker-credential-vault-registry"},
		{"build", "-o", filepath.Join(dir, "vault-registry-credential-provider"), "./cmd/vault-registry-credential-provider"},
	}
	for _, args := range builds {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = ".." // the module root; go test runs in the package directory
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// tool finds an installed tool: $VPR_TOOLS/bin first (scripts/install.sh),
// then PATH.
func tool(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("VPR_TOOLS")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".cache", "vpr-tools")
		}
	}
	if p := filepath.Join(dir, "bin", name); isExecutable(p) {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run scripts/install.sh (%v)", name, err)
	}
	return p
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

var portMu sync.Mutex
var portsTaken = map[int]bool{}

// freePort returns a TCP port free on 127.0.0.1 (and on ::1 when the host
// has IPv6, since clients dial "localhost"), together with the port after it
// (Vault's cluster port), never handing out the same port twice.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if portsTaken[port] || portsTaken[port+1] || !portFree(port) || !portFree(port+1) {
			continue
		}
		portsTaken[port], portsTaken[port+1] = true, true
		return port
	}
	t.Fatal("no free port pair on loopback")
	return 0
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	if l6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port))); err == nil {
		l6.Close()
	} else if !isNoIPv6(err) {
		return false
	}
	return true
}

func isNoIPv6(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// Process is a server started by a test. It is stopped by its PID when the
// test ends, and its log is shown when the test failed.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess runs bin with args in the background, output to a log file in
// the test's temporary directory.
func StartProcess(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group, so children (Vault's plugin processes) go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		start := time.Now()
		p.Stop()
		if d := time.Since(start); d > 2*time.Second {
			t.Logf("%s (pid %d) took %s to stop", name, cmd.Process.Pid, d.Round(time.Millisecond))
		}
		if t.Failed() {
			t.Logf("--- %s (pid %d) log, last lines:\n%s", name, cmd.Process.Pid, tail(p.Log(), 60))
		}
		keepLog(t, p)
	})
	return p
}

// keepLog copies the process log into $E2E_LOG_DIR, when set, so the whole
// of it survives the test's temporary directory (for CI artifacts).
func keepLog(t testing.TB, p *Process) {
	dir := os.Getenv("E2E_LOG_DIR")
	if dir == "" {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "-" + p.Name + ".log"
	b, err := os.ReadFile(p.LogPath)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	if err != nil {
		t.Logf("keeping the %s log: %v", p.Name, err)
	}
}

// Stop sends SIGTERM to the process, then SIGKILL to its process group if it
// has not exited after 10 seconds. Safe to call more than once.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	// Leftover children in the group (plugin processes) go too.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log returns what the process has written so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// tail returns the last n lines of s, each cut at 500 bytes.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 500 {
			lines[i] = l[:500] + "…"
		}
	}
	return strings.Join(lines, "\n")
}

// waitFor polls check until it succeeds, the process dies, or the timeout.
func waitFor(t testing.TB, what string, p *Process, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if p != nil && p.Exited() {
			t.Fatalf("%s: %s exited (%v) while waiting; log:\n%s", what, p.Name, p.err, tail(p.Log(), 60))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// baseEnv is the environment for every child process: enough to run, and no
// proxy, Vault or Docker settings leaking in from the caller.
func baseEnv(home string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"TMPDIR=" + os.TempDir(),
		"NO_PROXY=localhost,127.0.0.1",
		"no_proxy=localhost,127.0.0.1",
	}
}

// Result is what a command did.
type Result struct {
	Args     []string
	ExitCode int
	Stdout   string
	Stderr   string
}

func (r Result) OK() bool { return r.ExitCode == 0 }

func (r Result) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.Args, " "), r.ExitCode,
		tail(r.Stdout, 20), tail(r.Stderr, 20))
}

// RunCommand runs bin with args, env and stdin in dir (if not empty), for
// commandTimeout at most. A failing command is a Result with its exit code;
// only a command that cannot run at all fails the test.
func RunCommand(t testing.TB, env []string, dir, stdin, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return runCommand(t, ctx, env, dir, stdin, bin, args...)
}

// RunBuild is RunCommand for a build (go build, make): no deadline of its
// own, since a cold build cache on a busy machine takes minutes (issue 21);
// only go test's -timeout bounds it.
func RunBuild(t testing.TB, env []string, dir, bin string, args ...string) Result {
	t.Helper()
	return runCommand(t, context.Background(), env, dir, "", bin, args...)
}

func runCommand(t testing.TB, ctx context.Context, env []string, dir, stdin, bin string, args ...string) Result {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Args: append([]string{filepath.Base(bin)}, args...), Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.ExitCode = exitErr.ExitCode()
	default:
		t.Fatalf("running %s: %v", strings.Join(r.Args, " "), err)
	}
	return r
}

// httpGet does a GET with optional Basic credentials and returns status,
// headers and body.
func httpGet(t testing.TB, url string, user, password string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" || password != "" {
		req.SetBasicAuth(user, password)
	}
	return doHTTP(t, req)
}

func doHTTP(t testing.TB, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, resp.Header, body
}

// statusOf returns the status of a GET, or an error when nothing answers.
func statusOf(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// wantStatus checks that a GET of url answers want.
func wantStatus(url string, want int) error {
	code, err := statusOf(url)
	if err == nil && code != want {
		err = fmt.Errorf("%s: %d, want %d", url, code, want)
	}
	return err
}

// Vault is a `vault server -dev` on loopback with the plugin registered.
type Vault struct {
	Addr      string // http://127.0.0.1:PORT
	UnsealKey string
	Proc      *Process

	home      string
	pluginDir string
	t         testing.TB
}

var unsealKeyLine = regexp.MustCompile(`(?m)^Unseal Key: (\S+)$`)

// StartVault starts a dev server (in memory, unsealed, root token rootToken)
// with the plugin binary in its plugin directory, and registers the plugin
// the way an operator does: by sha256 and version. extraArgs go to
// `vault server` after the dev flags (a -config with another listener).
func StartVault(t testing.TB, extraArgs ...string) *Vault {
	t.Helper()
	port := freePort(t)
	v := &Vault{
		Addr:      fmt.Sprintf("http://127.0.0.1:%d", port),
		home:      t.TempDir(),
		pluginDir: t.TempDir(),
		t:         t,
	}
	sum := copyFile(t, bins.plugin, filepath.Join(v.pluginDir, pluginName))
	args := []string{"server", "-dev",
		"-dev-root-token-id=" + rootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
		"-dev-plugin-dir=" + v.pluginDir,
		"-log-level=info"}
	v.Proc = StartProcess(t, "vault", baseEnv(v.home), tool(t, "vault"), append(args, extraArgs...)...)
	waitFor(t, "vault", v.Proc, startTimeout, func() error {
		return wantStatus(v.Addr+"/v1/sys/health", http.StatusOK)
	})
	waitFor(t, "vault unseal key", v.Proc, startTimeout, func() error {
		m := unsealKeyLine.FindStringSubmatch(v.Proc.Log())
		if m == nil {
			return errors.New("no \"Unseal Key:\" line yet")
		}
		v.UnsealKey = m[1]
		return nil
	})
	v.CLI(t, "plugin", "register", "-sha256="+sum, "-version="+pluginVersion, "secret", pluginName)
	return v
}

// CLI runs the vault CLI as root against this server and fails the test on
// error. It returns stdout.
func (v *Vault) CLI(t testing.TB, args ...string) string {
	t.Helper()
	return v.CLIInput(t, "", args...)
}

// CLIInput is CLI with stdin.
func (v *Vault) CLIInput(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := v.TryCLI(stdin, args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// TryCLI runs the vault CLI as root and returns stdout, stderr and the error.
func (v *Vault) TryCLI(stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(v.t, "vault"), args...)
	cmd.Env = append(baseEnv(v.home), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+rootToken)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// Service is one registry service: a mount of the plugin at its name.
type Service struct {
	Name       string
	Vault      *Vault
	BundlePath string // the registry's rootcertbundle, fetched from <name>/ca/pem
}

// EnableService mounts the plugin at name, makes sure it has a trust anchor,
// and saves its CA bundle the way an operator would: fetched from
// <name>/ca/pem without a Vault token.
func (v *Vault) EnableService(t testing.TB, name string) *Service {
	t.Helper()
	v.CLI(t, "secrets", "enable", "-path="+name, "-plugin-version="+pluginVersion, pluginName)
	if code, _, _ := httpGet(t, v.Addr+"/v1/"+name+"/ca/pem", "", ""); code != http.StatusOK {
		v.CLI(t, "write", "-f", name+"/ca/generate")
	}
	s := &Service{Name: name, Vault: v, BundlePath: filepath.Join(t.TempDir(), name+"-bundle.pem")}
	if err := os.WriteFile(s.BundlePath, s.CAPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// CAPEM reads <service>/ca/pem without a Vault token.
func (s *Service) CAPEM(t testing.TB) []byte {
	t.Helper()
	code, _, body := httpGet(t, s.Vault.Addr+"/v1/"+s.Name+"/ca/pem", "", "")
	if code != http.StatusOK || !bytes.Contains(body, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Fatalf("GET %s/ca/pem: %d %q", s.Name, code, truncate(body, 300))
	}
	return body
}

// WriteUser creates or updates a user of the service.
func (s *Service) WriteUser(t testing.TB, name, password, access string) {
	t.Helper()
	s.Vault.CLI(t, "write", s.Name+"/users/"+name, "password="+password, "access="+access)
}

// WriteConfig writes fields of <service>/config, e.g. "anonymous_access=…".
func (s *Service) WriteConfig(t testing.TB, fields ...string) {
	t.Helper()
	s.Vault.CLI(t, append([]string{"write", s.Name + "/config"}, fields...)...)
}

// Seal seals Vault; Unseal unseals it with the dev server's key.
func (v *Vault) Seal(t testing.TB) {
	t.Helper()
	v.CLI(t, "operator", "seal")
}

func (v *Vault) Unseal(t testing.TB) {
	t.Helper()
	v.CLI(t, "operator", "unseal", v.UnsealKey)
}

// RelayToken writes a policy that only lets its holder mint registry tokens
// for the given services, and returns a token with that policy: what the
// relay runs with, never the root token.
func (v *Vault) RelayToken(t testing.TB, services ...string) string {
	t.Helper()
	var policy strings.Builder
	for _, s := range services {
		fmt.Fprintf(&policy, "path %q {\n  capabilities = [\"update\"]\n}\n", s+"/token")
		fmt.Fprintf(&policy, "path %q {\n  capabilities = [\"update\"]\n}\n", s+"/token/refresh")
		fmt.Fprintf(&policy, "path %q {\n  capabilities = [\"update\"]\n}\n", s+"/token/batch")
	}
	// As deploy/policies/relay.hcl: the relay renews its own token.
	policy.WriteString("path \"auth/token/renew-self\" {\n  capabilities = [\"update\"]\n}\n")
	policy.WriteString("path \"auth/token/lookup-self\" {\n  capabilities = [\"read\"]\n}\n")
	name := "registry-relay-" + strings.Join(services, "-")
	v.CLIInput(t, policy.String(), "policy", "write", name, "-")
	token := strings.TrimSpace(v.CLI(t, "token", "create", "-policy="+name, "-no-default-policy", "-field=token"))
	if token == "" {
		t.Fatal("vault token create returned no token")
	}
	return token
}

// Relay is a running godoauth-relay.
type Relay struct {
	URL        string // http://127.0.0.1:PORT, for direct requests
	Realm      string // http://localhost:PORT/auth, for registries
	ConfigPath string
	Proc       *Process
}

// RelayOptions says how StartRelay starts a relay. With only Vault and
// Services set it is the usual one: godoauth's YAML (relayYAML) at log
// level info, with a token whose policy lets it mint tokens for Services
// only.
type RelayOptions struct {
	Vault    *Vault
	Services []string // the mounts the relay's token may mint for (Vault.RelayToken)
	// Token is the relay's Vault token instead of a new one for Services;
	// TokenFile is storage.vault.auth_token_file instead; Auth replaces
	// the auth_token line whole (approle, kubernetes; indented as
	// storage.vault's keys).
	Token, TokenFile, Auth string
	// VaultAddr is the address the relay calls instead of Vault's (its TLS
	// listener); Nodes lists every node of a cluster instead
	// (storage.vault.addresses).
	VaultAddr string
	Nodes     []string
	// VaultTimeout and HTTPTimeout are storage.vault.timeout (default 5s)
	// and http.timeout (default 10s); NoBatch sets storage.vault.batch false.
	VaultTimeout, HTTPTimeout time.Duration
	NoBatch                   bool
	LogLevel, LogFile         string // default info, the process's stderr
	// TrustedProxies is http.trusted_proxies; Cert and Key are http.tls
	// (the relay then serves https, and Client, trusting its CA, checks
	// it is up).
	TrustedProxies []string
	Cert, Key      string
	Client         *http.Client
	Extra          string // YAML sections appended (identity:, godoauth's token keys)

	// ConfigFile is a configuration to run as it is (godoauth's own file)
	// instead of relayYAML's; Port is then the port of its http.addr.
	ConfigFile string
	Port       int

	Binary string   // another build of the relay (the last release's); default bins.relay
	Args   []string // extra command-line arguments (-pprof)
	Env    []string // extra environment (VAULT_CACERT)
	// Ready is the path that must answer 200 before StartRelay returns:
	// default /healthz; /livez for a relay whose token Vault refuses,
	// /server-ping for one that cannot reach Vault.
	Ready string
}

// relayYAML is godoauth's configuration format, which the relay reads
// unchanged: the one template of every relay the tests start.
var relayYAML = template.Must(template.New("relay").Parse(`---
version: 0.1
log:
  level: {{.LogLevel}}
{{- with .LogFile}}
  file: {{.}}
{{- end}}
storage:
  vault:
{{- if .Nodes}}
    addresses: [{{.Nodes}}]
{{- else}}
    proto: {{.Proto}}
    host: {{.Host}}
    port: {{.VaultPort}}
{{- end}}
{{.Auth}}
    timeout: {{.VaultTimeout}}
{{- if .NoBatch}}
    batch: false
{{- end}}
http:
  addr: 127.0.0.1:{{.Port}}
  timeout: {{.HTTPTimeout}}
{{- with .TrustedProxies}}
  trusted_proxies: [{{.}}]
{{- end}}
{{- if .Cert}}
  tls:
    certificate: {{.Cert}}
    key: {{.Key}}
{{- end}}
token:
  issuer: {{.Issuer}}
  expiration: 300
{{.Extra}}`))

// RelayYAML is the relay's configuration for o, listening on port; a
// token for o.Services is made unless o names one.
func RelayYAML(t testing.TB, o RelayOptions, port int) string {
	t.Helper()
	d := struct {
		RelayOptions
		Proto, Host, VaultPort, Port, Issuer string
		Nodes, TrustedProxies                string
		VaultTimeout, HTTPTimeout            time.Duration
	}{RelayOptions: o, Port: strconv.Itoa(port), Issuer: tokenIssuer,
		VaultTimeout: cmp.Or(o.VaultTimeout, 5*time.Second), HTTPTimeout: cmp.Or(o.HTTPTimeout, 10*time.Second)}
	d.LogLevel = cmp.Or(o.LogLevel, "info")
	if len(o.Nodes) > 0 {
		var quoted []string
		for _, a := range o.Nodes {
			quoted = append(quoted, strconv.Quote(a))
		}
		d.Nodes = strings.Join(quoted, ", ")
	} else {
		u, err := url.Parse(cmp.Or(o.VaultAddr, o.Vault.Addr))
		if err != nil {
			t.Fatal(err)
		}
		d.Proto, d.Host, d.VaultPort = u.Scheme, u.Hostname(), u.Port()
	}
	d.TrustedProxies = strings.Join(o.TrustedProxies, ", ")
	switch {
	case o.Auth != "":
	case o.TokenFile != "":
		d.Auth = "    auth_token_file: " + o.TokenFile
	default:
		token := o.Token
		if token == "" {
			token = o.Vault.RelayToken(t, o.Services...)
		}
		d.Auth = "    auth_token: " + token
	}
	var b strings.Builder
	if err := relayYAML.Execute(&b, d); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// StartRelay starts a relay as o says and waits until it is up.
func StartRelay(t testing.TB, o RelayOptions) *Relay {
	t.Helper()
	port := o.Port
	if port == 0 {
		port = freePort(t)
	}
	scheme := "http"
	if o.Cert != "" {
		scheme = "https"
	}
	r := &Relay{
		URL:        fmt.Sprintf("%s://127.0.0.1:%d", scheme, port),
		Realm:      fmt.Sprintf("%s://localhost:%d/auth", scheme, port),
		ConfigPath: o.ConfigFile,
	}
	if r.ConfigPath == "" {
		r.ConfigPath = filepath.Join(t.TempDir(), "godoauth.yaml")
		if err := os.WriteFile(r.ConfigPath, []byte(RelayYAML(t, o, port)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.Proc = StartProcess(t, "relay", append(baseEnv(t.TempDir()), o.Env...), cmp.Or(o.Binary, bins.relay),
		append([]string{"-config", r.ConfigPath}, o.Args...)...)
	ready := r.URL + cmp.Or(o.Ready, "/healthz")
	waitFor(t, "relay", r.Proc, startTimeout, func() error {
		if o.Client == nil {
			return wantStatus(ready, http.StatusOK)
		}
		resp, err := o.Client.Get(ready)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d", ready, resp.StatusCode)
		}
		return nil
	})
	return r
}

func portOf(t testing.TB, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("no port in %q", rawURL)
	}
	return port
}

// Token asks the relay for a token the way a registry client does
// (GET /auth with Basic credentials) and returns the status and the JSON
// body. Empty user and password mean anonymous.
func (r *Relay) Token(t testing.TB, service, user, password string, scopes ...string) (int, http.Header, []byte) {
	t.Helper()
	q := url.Values{"service": {service}, "scope": scopes}
	return httpGet(t, r.URL+"/auth?"+q.Encode(), user, password)
}

// Metrics returns the relay's /metrics text.
func (r *Relay) Metrics(t testing.TB) string {
	t.Helper()
	code, _, body := httpGet(t, r.URL+"/metrics", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	return string(body)
}

// Metric reads one sample of the relay's /metrics: a name without labels,
// or with all of them as the relay writes them (name{kind="renew"}).
func (r *Relay) Metric(t testing.TB, name string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(r.Metrics(t), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, line)
			}
			return n
		}
	}
	t.Fatalf("metric %s not in the relay's /metrics", name)
	return 0
}

// metricLine is one sample of the Prometheus text format.
var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)`)

var outcomeLabel = regexp.MustCompile(`outcome="([^"]*)"`)

// Outcomes of token requests as the relay counts them in
// godoauth_relay_requests_total{service,outcome}.
const (
	Minted       = "minted"       // 200
	Unauthorized = "unauthorized" // 401
	BadRequest   = "bad_request"  // 400
	LockedOut    = "locked_out"   // 429
	Unavailable  = "unavailable"  // 503
	Canceled     = "canceled"     // 499: the client went away

	// VaultErrors is not an outcome: the sum of
	// godoauth_relay_vault_errors_total, Vault calls that failed.
	VaultErrors = "vault_errors"
)

// Outcomes returns the relay's count of token requests by outcome, summed
// over services, and of failed Vault calls (VaultErrors).
func (r *Relay) Outcomes(t testing.TB) map[string]float64 {
	t.Helper()
	counts := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(r.Metrics(t)))
	for sc.Scan() {
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("unexpected metric line %q", sc.Text())
		}
		switch m[1] {
		case "godoauth_relay_requests_total":
			o := outcomeLabel.FindStringSubmatch(m[2])
			if o == nil {
				t.Fatalf("no outcome in %q", sc.Text())
			}
			counts[o[1]] += n
		case "godoauth_relay_vault_errors_total":
			counts[VaultErrors] += n
		}
	}
	return counts
}

// RegistryKind names a registry implementation.
type RegistryKind string

const (
	Registry28 RegistryKind = "registry-2.8" // Debian's docker-registry
	RegistryV3 RegistryKind = "registry-v3"  // distribution v3
)

var registryKinds = []RegistryKind{Registry28, RegistryV3}

// Registry is a running registry with token auth through the relay.
type Registry struct {
	Kind    RegistryKind
	Host    string // localhost:PORT, as clients name it
	URL     string // http://127.0.0.1:PORT
	Service *Service
	Proc    *Process
}

// registryConfig: warnings are enough to see why a request was refused.
const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
  secret: e2e-not-secret
auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`

// StartRegistry starts a registry of the given kind for svc, trusting svc's
// CA bundle and sending clients to the relay for tokens.
func StartRegistry(t testing.TB, kind RegistryKind, relay *Relay, svc *Service) *Registry {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	config := fmt.Sprintf(registryConfig, filepath.Join(dir, "storage"), port, relay.Realm, svc.Name, tokenIssuer, svc.BundlePath)
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(dir)
	var bin string
	switch kind {
	case Registry28:
		bin = tool(t, "docker-registry")
	case RegistryV3:
		bin = tool(t, "registry")
		env = append(env, "OTEL_TRACES_EXPORTER=none")
	default:
		t.Fatalf("unknown registry kind %q", kind)
	}
	r := &Registry{
		Kind:    kind,
		Host:    fmt.Sprintf("localhost:%d", port),
		URL:     fmt.Sprintf("http://127.0.0.1:%d", port),
		Service: svc,
	}
	r.Proc = StartProcess(t, string(kind)+"-"+svc.Name, env, bin, "serve", cfg)
	// Without a token, /v2/ answers 401 once the registry is up.
	waitFor(t, string(kind), r.Proc, startTimeout, func() error {
		return wantStatus(r.URL+"/v2/", http.StatusUnauthorized)
	})
	return r
}

// Ref names an image in this registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Stack is the usual setup: one Vault, the plugin enabled at each service,
// and one relay allowed to mint tokens for all of them.
type Stack struct {
	Vault    *Vault
	Relay    *Relay
	Services map[string]*Service
}

func NewStack(t testing.TB, services ...string) *Stack {
	t.Helper()
	s := &Stack{Vault: StartVault(t), Services: map[string]*Service{}}
	for _, name := range services {
		s.Services[name] = s.Vault.EnableService(t, name)
	}
	s.Relay = StartRelay(t, RelayOptions{Vault: s.Vault, Services: services})
	return s
}

func copyFile(t testing.TB, from, to string) (sha256hex string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
