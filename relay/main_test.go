package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
	"github.com/vault-registry/vault-plugin-registry/version"
)

// TestMain lets the test binary stand in for godoauth-relay, so the whole
// command (flags, signals, exit status) runs as a real process.
func TestMain(m *testing.M) {
	if os.Getenv("GODOAUTH_RELAY_TEST_MAIN") == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr, nil))
	}
	os.Exit(m.Run())
}

func runMain(args []string, commands map[string]Subcommand) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := Main(args, &stdout, &stderr, commands)
	return code, stdout.String(), stderr.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMain_version(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"serve", "-version"}} {
		code, out, _ := runMain(args, nil)
		if code != 0 || out != "godoauth-relay "+version.Resolve(Version)+"\n" {
			t.Errorf("%v: %d %q", args, code, out)
		}
	}
}

func TestMain_badConfigurationExits2WithOneLine(t *testing.T) {
	cases := map[string][]string{
		"unknown key":  {"-config", writeFile(t, "c.yaml", minimal+"  tiemout: 5s\n")},
		"bad value":    {"-config", writeFile(t, "c.yaml", minimal+"log:\n  level: chatty\n")},
		"missing file": {"-config", filepath.Join(t.TempDir(), "none.yaml")},
		"bad flag":     {"-conf", "x"},
		"extra arg":    {"-config", "x", "y"},
	}
	for name, args := range cases {
		code, _, errOut := runMain(args, nil)
		if code != 2 {
			t.Errorf("%s: exit %d (%s)", name, code, errOut)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%s: more than one line: %q", name, errOut)
		}
	}
	_, _, errOut := runMain(cases["unknown key"], nil)
	if !strings.Contains(errOut, "http.tiemout: unknown key") {
		t.Errorf("message %q does not name the key", errOut)
	}
}

func TestMain_missingTLSFilesExit1(t *testing.T) {
	dir := t.TempDir()
	cfg := minimal + "  tls:\n    certificate: " + filepath.Join(dir, "server.pem") + "\n    key: " + filepath.Join(dir, "server.key") + "\n"
	code, _, errOut := runMain([]string{"-config", writeFile(t, "c.yaml", cfg)}, nil)
	if code != 1 || !strings.Contains(errOut, "http.tls") || !strings.Contains(errOut, "server.pem") {
		t.Errorf("exit %d: %q", code, errOut)
	}
}

func TestMain_subcommands(t *testing.T) {
	var got []string
	commands := map[string]Subcommand{"migrate": {Summary: "move users", Run: func(args []string, stdout, _ io.Writer) int {
		got = args
		fmt.Fprint(stdout, "migrated")
		return 3
	}}}
	code, out, _ := runMain([]string{"migrate", "-config", "x.yaml"}, commands)
	if code != 3 || out != "migrated" || strings.Join(got, " ") != "-config x.yaml" {
		t.Errorf("migrate: %d %q %v", code, out, got)
	}
	code, _, errOut := runMain([]string{"frobnicate"}, commands)
	if code != 2 || !strings.Contains(errOut, "help, migrate, serve, version") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
}

// testCommands are the binary's commands as cmd/godoauth-relay names them.
var testCommands = map[string]Subcommand{
	"migrate":     {Summary: "move godoauth's users", Run: func([]string, io.Writer, io.Writer) int { return 0 }},
	"healthcheck": {Summary: "ask /healthz", Run: Healthcheck},
}

// TestMain_usageListsCommands: -h, help and serve -h list every command
// with its summary, and serve's flags; exit 0, on standard output.
func TestMain_usageListsCommands(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"serve", "-h"}, {"help", "serve"}} {
		code, out, errOut := runMain(args, testCommands)
		if code != 0 || errOut != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
		for _, want := range []string{"usage: godoauth-relay [command]", "  serve ", "  migrate ", "move godoauth's users",
			"  healthcheck ", "  help ", "  version ", "-config file", "-pprof address"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: the usage lacks %q:\n%s", args, want, out)
			}
		}
	}
}

// TestMain_versionAndHelpAreCommands: `version` prints what -version
// prints; `help <command>` shows that command's help; misuse is one line,
// exit 2.
func TestMain_versionAndHelpAreCommands(t *testing.T) {
	_, flagOut, _ := runMain([]string{"-version"}, testCommands)
	code, out, _ := runMain([]string{"version"}, testCommands)
	if code != 0 || out != flagOut || !strings.HasPrefix(out, "godoauth-relay v") {
		t.Errorf("version: %d %q, -version said %q", code, out, flagOut)
	}
	code, out, _ = runMain([]string{"help", "healthcheck"}, testCommands)
	if code != 0 || !strings.Contains(out, "usage: godoauth-relay healthcheck") || !strings.Contains(out, "-url URL") {
		t.Errorf("help healthcheck: %d %q", code, out)
	}
	for _, args := range [][]string{{"version", "x"}, {"help", "frobnicate"}, {"help", "migrate", "x"}} {
		code, out, errOut := runMain(args, testCommands)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want exit 2 and one line", args, code, out, errOut)
		}
	}
}

// TestMain_badFlagsAreOneLine: a bad flag of serve or healthcheck is one
// line naming it, exit 2, like a bad configuration.
func TestMain_badFlagsAreOneLine(t *testing.T) {
	for _, args := range [][]string{{"-conf", "x"}, {"serve", "-nope"}, {"healthcheck", "-nope"}, {"healthcheck", "-timeout", "soon"}, {"healthcheck", "x"}} {
		code, out, errOut := runMain(args, testCommands)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "godoauth-relay") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want exit 2 and one line", args, code, out, errOut)
		}
	}
}

// TestMain_servesRotatesLogsAndStopsOnSIGTERM runs the command as a process.
func TestMain_servesRotatesLogsAndStopsOnSIGTERM(t *testing.T) {
	fv := newPluginVault(t, "registry")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "relay.log")
	addr := freeAddr(t)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: info\n  file: %s\nhttp:\n  addr: %q\ntoken:\n  issuer: Token\n  expiration: 800\n  certificate: certs/server.pem\n  key: certs/server.key\n", logPath, addr)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-config", cfgPath)
	cmd.Env = append(os.Environ(), "GODOAUTH_RELAY_TEST_MAIN=1", "VAULT_ADDR="+fv.URL, "VAULT_TOKEN="+relayToken)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
	})

	base := "http://" + addr
	waitFor(t, func() bool {
		resp, err := http.Get(base + "/server-ping")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	waitFor(t, func() bool { data, _ := os.ReadFile(logPath); return bytes.Contains(data, []byte("vault answers")) })
	req, _ := http.NewRequest(http.MethodGet, base+"/auth?service=registry&scope=repository:a:pull", nil)
	req.SetBasicAuth("alice", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("token request: %v %v", resp, err)
	}
	resp.Body.Close()

	// logrotate: move the file away, SIGHUP, the relay writes a new one.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { data, _ := os.ReadFile(logPath); return bytes.Contains(data, []byte("SIGHUP")) })

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	old, _ := os.ReadFile(logPath + ".1")
	for _, want := range []string{"godoauth-relay starting", "vault write <service>/ca/import certificate=@certs/server.pem private_key=@certs/server.key", "token request"} {
		if !bytes.Contains(old, []byte(want)) {
			t.Errorf("first log lacks %q:\n%s", want, old)
		}
	}
	if data, _ := os.ReadFile(logPath); !bytes.Contains(data, []byte("stopped")) {
		t.Errorf("new log lacks the stop:\n%s", data)
	}
}

func TestServe_TLS(t *testing.T) {
	fv := newPluginVault(t, "registry")
	certFile, keyFile, pool := selfSigned(t)
	s, _ := newTestRelay(t, fv.URL, func(c *Config) { c.HTTP.TLS = TLSConfig{Certificate: certFile, Key: keyFile} })
	addr := serveLoopback(t, s)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + addr + "/server-ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
}

// serveLoopback runs s on a loopback port until the test ends.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key; pool
// trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := testcert.New(t, testcert.Options{Subject: pkix.Name{CommonName: "relay test CA"}})
	certFile, keyFile, _ = ca.Issue(t, t.TempDir(), "server")
	return certFile, keyFile, ca.Pool
}
