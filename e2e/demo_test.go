//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo_frontDoor: `make demo`'s script as a new user runs it. It comes
// up, the crane commands it prints push, pull and list, the push to another
// user's repository is refused, and Ctrl-C (SIGINT to its process group,
// as a terminal sends it) stops everything it started.
func TestDemo_frontDoor(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(bins.relay) != filepath.Join(root, "bin") {
		t.Skipf("scripts/demo.sh runs what `make build` put in bin/; these tests use %s", filepath.Dir(bins.relay))
	}
	vaultPort := freePortPair(t)
	relayPort, registryPort := freePort(t), freePort(t)
	tmp := t.TempDir() // the demo's work directory goes here, to read the relay's log
	env := append(baseEnv(t.TempDir()), "TMPDIR="+tmp, "VPR_TOOLS="+filepath.Dir(filepath.Dir(tool(t, "vault"))),
		fmt.Sprintf("VAULT_PORT=%d", vaultPort), fmt.Sprintf("RELAY_PORT=%d", relayPort),
		fmt.Sprintf("REGISTRY_PORT=%d", registryPort))
	demo := StartProcess(t, "demo", env, "bash", filepath.Join(root, "scripts", "demo.sh"))
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(demo.Log(), "Press Ctrl-C to stop.") {
		if demo.Exited() || time.Now().After(deadline) {
			t.Fatalf("the demo did not come up:\n%s", tail(demo.Log(), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The commands the demo prints, run as printed.
	out := demo.Log()
	dockerConfig := regexp.MustCompile(`DOCKER_CONFIG=(\S+)`).FindStringSubmatch(out)
	commands := regexp.MustCompile(`(?m)^  (crane .*)$`).FindAllStringSubmatch(out, -1)
	if dockerConfig == nil || len(commands) != 5 {
		t.Fatalf("want DOCKER_CONFIG and five crane commands in the demo's instructions:\n%s", out)
	}
	shell := func(command string) (string, error) {
		cmd := exec.Command("bash", "-c", command)
		cmd.Env = append(baseEnv(t.TempDir()), "DOCKER_CONFIG="+dockerConfig[1],
			"PATH="+filepath.Dir(tool(t, "crane"))+":"+os.Getenv("PATH"))
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	for i, c := range commands {
		command := c[1]
		got, err := shell(command)
		switch {
		case strings.HasSuffix(command, "# refused"):
			if err == nil || !regexp.MustCompile(`(?i)unauthorized|denied`).MatchString(got) {
				t.Errorf("%s: want a refusal, got %v:\n%s", command, err, got)
			}
		case err != nil:
			t.Fatalf("step %d, %s: %v\n%s", i+1, command, err, got)
		case strings.Contains(command, "crane export") && !strings.Contains(got, "Hello from vault-plugin-registry"):
			t.Errorf("%s: the pulled image does not hold the pushed file:\n%s", command, got)
		case strings.HasPrefix(command, "crane catalog") && !strings.Contains(got, "demo/hello"):
			t.Errorf("%s: want demo/hello listed:\n%s", command, got)
		}
	}

	// The relay's token has deploy/policies/relay.hcl: its log starts clean
	// (no "policy lacks renew-self" ERROR, no lookup WARN).
	relayLogs, _ := filepath.Glob(filepath.Join(tmp, "vpr-demo.*", "relay.log"))
	if len(relayLogs) != 1 {
		t.Fatalf("want the demo's relay.log under %s, found %v", tmp, relayLogs)
	}
	relayLog := string(readBytes(t, relayLogs[0]))
	if strings.Contains(relayLog, "[ERROR]") || strings.Contains(relayLog, "[WARN]") || !strings.Contains(relayLog, "renewing the relay's Vault token itself") {
		t.Errorf("the demo's relay log does not start clean (or does not renew its token):\n%s", tail(relayLog, 20))
	}

	if err := syscall.Kill(-demo.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-demo.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the demo did not stop within 30s of Ctrl-C:\n%s", tail(demo.Log(), 20))
	}
	if !strings.Contains(demo.Log(), "demo: stopped") {
		t.Errorf("the demo did not say it stopped:\n%s", tail(demo.Log(), 20))
	}
	for _, port := range []int{vaultPort, relayPort, registryPort} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still answers after the demo stopped", port)
		}
	}
}

// freePortPair returns a free port whose next one is free too (Vault's
// dev server takes the port after its own for the cluster).
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 20 {
		p := freePort(t)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row")
	return 0
}
