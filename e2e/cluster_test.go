//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a Vault cluster with integrated storage (Raft) on loopback,
// built by scripts/vault-cluster.sh (the script `make demo-ha` uses), so
// the tests and the demo set it up one way: each node from its own config
// file, Shamir keys, `vault operator raft join`, the plugin registered once
// by sha256 and version. Every node is a *Vault whose CLI runs as root.
type Cluster struct {
	Dir   string
	Nodes []*Vault

	script string
	env    []string
}

// clusterUpTimeout bounds `vault-cluster.sh up`: init, unseal, joins and
// autopilot's promotion of every node to voter.
const clusterUpTimeout = 3 * time.Minute

// StartCluster starts n Vault servers with Raft storage (n=1: a single
// Raft node) and the plugin registered; they are stopped, by PID, when the
// test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartClusterWith(t, n, bins.plugin)
}

// StartClusterWith is StartCluster with another plugin binary registered
// as pluginVersion (an older release, for an upgrade).
func StartClusterWith(t testing.TB, n int, pluginBin string) *Cluster {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "scripts", "vault-cluster.sh"))
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: t.TempDir(), script: script}
	env := baseEnv(t.TempDir())
	env[0] = "PATH=" + filepath.Dir(tool(t, "vault")) + string(os.PathListSeparator) + os.Getenv("PATH")
	c.env = append(env, "PLUGIN_BIN="+pluginBin, "PLUGIN_VERSION="+pluginVersion)
	t.Cleanup(func() {
		c.run(t, "down")
		if t.Failed() {
			for i := range c.Nodes {
				b, _ := os.ReadFile(filepath.Join(c.nodeDir(i), "vault.log"))
				t.Logf("--- node%d log, last lines:\n%s", i+1, tail(string(b), 30))
			}
		}
	})
	start := time.Now()
	c.run(t, "up", strconv.Itoa(n))
	t.Logf("MEASURE cluster_up nodes=%d seconds=%.1f", n, time.Since(start).Seconds())

	var init struct {
		RootToken string `json:"root_token"`
	}
	if err := json.Unmarshal([]byte(readFileString(t, filepath.Join(c.Dir, "init.json"))), &init); err != nil {
		t.Fatalf("init.json: %v", err)
	}
	for i, line := range strings.Split(strings.TrimSpace(readFileString(t, filepath.Join(c.Dir, "ports"))), "\n") {
		port, err := strconv.Atoi(strings.Fields(line)[0])
		if err != nil {
			t.Fatalf("ports line %q", line)
		}
		c.Nodes = append(c.Nodes, &Vault{
			Addr:      fmt.Sprintf("http://127.0.0.1:%d", port),
			home:      filepath.Join(c.nodeDir(i), "home"),
			pluginDir: filepath.Join(c.nodeDir(i), "plugins"),
			t:         t,
		})
	}
	// The harness's Vault CLI runs with rootToken: give the cluster a
	// root token of that id, as the dev server has.
	leader := c.Leader(t)
	out, errOut, err := leader.tryCLIWith(init.RootToken, "token", "create", "-id="+rootToken, "-policy=root")
	if err != nil {
		t.Fatalf("vault token create -id: %v\n%s%s", err, out, errOut)
	}
	return c
}

func (c *Cluster) nodeDir(i int) string { return filepath.Join(c.Dir, "node"+strconv.Itoa(i+1)) }

// run calls the script on this cluster and fails the test when it fails.
func (c *Cluster) run(t testing.TB, cmd string, args ...string) string {
	t.Helper()
	r := RunCommand(t, c.env, "", "", c.script, append([]string{cmd, c.Dir}, args...)...)
	if !r.OK() {
		t.Fatalf("%s", r)
	}
	return r.Stdout
}

// Kill sends SIGKILL to node i (from 0) and its plugin processes.
func (c *Cluster) Kill(t testing.TB, i int) { c.run(t, "kill", strconv.Itoa(i+1)) }

// Stop stops node i with SIGTERM (SIGKILL after 15 s).
func (c *Cluster) Stop(t testing.TB, i int) { c.run(t, "stop", strconv.Itoa(i+1)) }

// Start starts node i again and unseals it with the cluster's key shares.
func (c *Cluster) Start(t testing.TB, i int) { c.run(t, "start", strconv.Itoa(i+1)) }

// Launch starts node i again and leaves it sealed.
func (c *Cluster) Launch(t testing.TB, i int) { c.run(t, "launch", strconv.Itoa(i+1)) }

// Unseal unseals node i.
func (c *Cluster) Unseal(t testing.TB, i int) { c.run(t, "unseal", strconv.Itoa(i+1)) }

// Addrs are the nodes' API addresses.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, n := range c.Nodes {
		a = append(a, n.Addr)
	}
	return a
}

// LeaderIndex waits up to a minute for an active node and returns its
// index; skip names a node that must not be the answer (the one just
// killed, whose stale answer could still be read).
func (c *Cluster) LeaderIndex(t testing.TB, skip int) int {
	t.Helper()
	leader := -1
	waitFor(t, "an active Vault node", nil, time.Minute, func() error {
		for i, n := range c.Nodes {
			if i == skip {
				continue
			}
			if code, err := statusOf(n.Addr + "/v1/sys/health"); err == nil && code == http.StatusOK {
				leader = i
				return nil
			}
		}
		return fmt.Errorf("no node answers sys/health with 200")
	})
	return leader
}

// Leader is the active node.
func (c *Cluster) Leader(t testing.TB) *Vault { return c.Nodes[c.LeaderIndex(t, -1)] }

// Standby is a node that is not the active one.
func (c *Cluster) Standby(t testing.TB) *Vault {
	l := c.LeaderIndex(t, -1)
	return c.Nodes[(l+1)%len(c.Nodes)]
}

// tryCLIWith runs the vault CLI against this node with the given token.
func (v *Vault) tryCLIWith(token string, args ...string) (string, string, error) {
	r := RunCommand(v.t, append(baseEnv(v.home), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+token), "", "",
		tool(v.t, "vault"), args...)
	if !r.OK() {
		return r.Stdout, r.Stderr, fmt.Errorf("exit %d", r.ExitCode)
	}
	return r.Stdout, r.Stderr, nil
}
