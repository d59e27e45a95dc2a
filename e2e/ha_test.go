//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// High availability on a real three-node Raft cluster: the relay in front
// of every node, constant token traffic through it, and the events of a
// cluster's life — a standby serving, the leader killed, a node sealed and
// one stopped, a rolling plugin upgrade, the whole cluster restarted. One
// cluster serves the subtests in order; each leaves it with three voters.

// haUsers share the load; each may pull its own repositories.
var haUsers = []user{
	{"hana", "hana-pw-4c1e77", "repository:hana/**:pull"},
	{"hugo", "hugo-pw-90b2d1", "repository:hugo/**:pull"},
	{"hedy", "hedy-pw-1f8a3c", "repository:hedy/**:pull"},
	{"hank", "hank-pw-7d02e9", "repository:hank/**:pull"},
}

// lockedUser is locked out before each event and must stay locked after it.
var lockedUser = user{"lars", "lars-pw-e5a6b0", "repository:lars/**:pull"}

// haRelayOptions: storage.vault.addresses lists every node of c; each
// attempt may take storage.vault.timeout, and http.timeout bounds the
// retries.
func haRelayOptions(t testing.TB, c *Cluster, services ...string) RelayOptions {
	return RelayOptions{Vault: c.Leader(t), Services: services, Nodes: c.Addrs(), VaultTimeout: 3 * time.Second, HTTPTimeout: 15 * time.Second}
}

// load is constant token traffic through the relay: rate requests a
// second, spread over haUsers, each with a pull scope, until stopped.
type load struct {
	relay   *Relay
	service string
	rate    int

	sent, failed atomic.Int64
	mu           sync.Mutex
	longest      time.Duration
	failures     map[string]int // "status body" → count
	durations    []time.Duration

	stop chan struct{}
	done sync.WaitGroup
}

// loadMaxDuration bounds any load run; loadMaxRequests bounds its count.
const (
	loadMaxDuration = 3 * time.Minute
	loadMaxRequests = 40000
	// loadWorkers: at 150/s, requests held 3 s each by an election.
	loadWorkers = 512
)

var loadClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers, Proxy: nil},
}

func startLoad(t testing.TB, relay *Relay, service string, rate int) *load {
	t.Helper()
	l := &load{relay: relay, service: service, rate: rate, failures: map[string]int{}, stop: make(chan struct{})}
	type job struct {
		i   int
		due time.Time
	}
	// Open loop: enough workers that requests stay due at rate while an
	// election holds each one for seconds (the ticker drops ticks nobody
	// takes, and the load would shrink just when it matters).
	jobs := make(chan job, 10*rate)
	for range loadWorkers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for j := range jobs {
				l.one(haUsers[j.i%len(haUsers)], j.due)
			}
		}()
	}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		defer close(jobs)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		end := time.After(loadMaxDuration)
		for i := 0; i < loadMaxRequests; i++ {
			select {
			case <-l.stop:
				return
			case <-end:
				return
			case due := <-tick.C:
				jobs <- job{i, due}
			}
		}
	}()
	return l
}

// one sends one request; its time counts from when it was due, so a
// request that waited for a free worker is not made to look fast.
func (l *load) one(u user, due time.Time) {
	q := url.Values{"service": {l.service}, "scope": {"repository:" + u.name + "/app:pull"}}
	req, _ := http.NewRequest(http.MethodGet, l.relay.URL+"/auth?"+q.Encode(), nil)
	req.SetBasicAuth(u.name, u.password)
	resp, err := loadClient.Do(req)
	var why string
	if err != nil {
		why = "error " + err.Error()
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"token"`)) {
			why = fmt.Sprintf("%d %s", resp.StatusCode, truncate(body, 120))
		}
	}
	d := time.Since(due)
	l.sent.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.longest = max(l.longest, d)
	l.durations = append(l.durations, d)
	if why != "" {
		// Fast refusals and ones at the deadline have different causes.
		why = fmt.Sprintf("%s (after %ds)", why, int(d.Seconds()))
		l.failed.Add(1)
		l.failures[why]++
	}
}

// loadResult is what one load run saw.
type loadResult struct {
	sent, failed      int64
	rate              float64 // requests a second
	longest, p50, p99 time.Duration
	failures          map[string]int // "status body (after Ns)" → count
}

func (r loadResult) String() string {
	return fmt.Sprintf("requests=%d rate=%.0f/s failed=%d longest=%s p50=%s p99=%s",
		r.sent, r.rate, r.failed, ms(r.longest), ms(r.p50), ms(r.p99))
}

// end stops the load, waits for the requests in flight and sums up.
func (l *load) end(elapsed time.Duration) loadResult {
	close(l.stop)
	l.done.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.durations, func(i, j int) bool { return l.durations[i] < l.durations[j] })
	return loadResult{
		sent: l.sent.Load(), failed: l.failed.Load(), rate: float64(l.sent.Load()) / elapsed.Seconds(),
		longest: l.longest, p50: quantile(l.durations, 0.5), p99: quantile(l.durations, 0.99),
		failures: maps.Clone(l.failures),
	}
}

// finish stops the load, waits for the requests in flight and reports.
func (l *load) finish(t testing.TB, event string, elapsed time.Duration) {
	t.Helper()
	r := l.end(elapsed)
	rate := r.rate
	t.Logf("MEASURE ha event=%s %s", event, r)
	if r.failed > 0 {
		t.Errorf("%s: %d of %d token requests failed: %v", event, r.failed, r.sent, r.failures)
		logRelayTrouble(t, l.relay)
	}
	if rate < 100 {
		t.Errorf("%s: the load ran at %.0f requests/s, want at least 100 (machine too busy?)", event, rate)
	}
}

// logRelayTrouble logs the relay's reasons for its 503s (which never say
// why to the client): its ERROR and WARN lines.
func logRelayTrouble(t testing.TB, relay *Relay) {
	t.Helper()
	var reasons []string
	for _, line := range strings.Split(relay.Proc.Log(), "\n") {
		if strings.Contains(line, "[ERROR]") || strings.Contains(line, "[WARN]") {
			reasons = append(reasons, truncate([]byte(line), 400))
		}
	}
	t.Logf("relay ERROR/WARN lines so far (%d), last 20:\n%s", len(reasons), strings.Join(reasons[max(0, len(reasons)-20):], "\n"))
}

// underLoad runs event while the load runs: a few seconds of load before
// it, and after it until settle says the cluster is whole again.
func underLoad(t *testing.T, relay *Relay, service, event string, action func(), settle func()) {
	t.Helper()
	start := time.Now()
	l := startLoad(t, relay, service, 150)
	time.Sleep(3 * time.Second)
	action()
	settle()
	time.Sleep(2 * time.Second)
	l.finish(t, event, time.Since(start))
}

// clusterState is what must survive every event: keys, CA, a lockout
// and a refresh token.
type clusterState struct {
	keys         keyState
	ca           []byte
	refreshToken string
}

func snapshot(t testing.TB, c *Cluster, relay *Relay, svc *Service) clusterState {
	t.Helper()
	leader := c.Leader(t)
	s := clusterState{keys: readKeys(t, leader, svc.Name), ca: (&Service{Name: svc.Name, Vault: leader}).CAPEM(t)}
	code, body := postForm(t, relay, url.Values{
		"grant_type": {"password"}, "username": {haUsers[0].name}, "password": {haUsers[0].password},
		"access_type": {"offline"}, "client_id": {"ha-test"}, "service": {svc.Name},
	})
	if code != http.StatusOK {
		t.Fatalf("password grant with access_type=offline: %d %s", code, truncate(body, 200))
	}
	s.refreshToken = refreshTokenOf(t, body)
	return s
}

// checkIntact compares the state after an event with before, on every
// serving node, and checks that both registries accept a new token.
func checkIntact(t *testing.T, c *Cluster, relay *Relay, svc *Service, before clusterState, regs []*Registry) {
	t.Helper()
	after := readKeys(t, c.Leader(t), svc.Name)
	if after.Current != before.keys.Current || fmt.Sprint(after.States) != fmt.Sprint(before.keys.States) {
		t.Errorf("keys changed: before %v, after %v", before.keys, after)
	}
	for i, n := range c.Nodes {
		if code, err := statusOf(n.Addr + "/v1/sys/health"); err != nil || code == http.StatusServiceUnavailable {
			continue // down or sealed
		}
		code, _, body := httpGet(t, n.Addr+"/v1/"+svc.Name+"/ca/pem", "", "")
		if code != http.StatusOK || !bytes.Equal(body, before.ca) {
			t.Errorf("node%d: ca/pem %d, differs from before: %v", i+1, code, !bytes.Equal(body, before.ca))
		}
	}
	for _, u := range haUsers {
		if code, _, body := relay.Token(t, svc.Name, u.name, u.password, "repository:"+u.name+"/app:pull"); code != http.StatusOK {
			t.Errorf("%s: %d %s", u.name, code, truncate(body, 200))
		}
	}
	if code, _, body := relay.Token(t, svc.Name, lockedUser.name, lockedUser.password); code != http.StatusTooManyRequests {
		t.Errorf("%s was locked out; now with the right password: %d %s, want 429", lockedUser.name, code, truncate(body, 200))
	}
	code, body := postRefreshGrant(t, relay, svc.Name, before.refreshToken, "ha-test")
	if code != http.StatusOK {
		t.Errorf("refresh token issued before: %d %s", code, truncate(body, 200))
	}
	// Registries started from the bundle before the event accept a token
	// minted after it, with no restart.
	u := haUsers[1]
	code, _, body = relay.Token(t, svc.Name, u.name, u.password, "repository:"+u.name+"/app:pull")
	if code != http.StatusOK {
		t.Fatalf("token for %s: %d %s", u.name, code, truncate(body, 200))
	}
	token := tokenOf(t, body)
	if kid, _ := tokenHeader(t, token); kid != before.keys.Current {
		t.Errorf("token signed by %s, want the same current key %s", kid, before.keys.Current)
	}
	for _, reg := range regs {
		// Authorized for an empty repository: 404 NAME_UNKNOWN, not 401.
		code, body := bearerGet(t, reg.URL+"/v2/"+u.name+"/app/tags/list", token)
		if code != http.StatusNotFound || !bytes.Contains(body, []byte("NAME_UNKNOWN")) {
			t.Errorf("%s with a token minted after the event: %d %s, want 404 NAME_UNKNOWN", reg.Kind, code, truncate(body, 200))
		}
	}
}

// waitVoters waits for n voters and a leader.
func (c *Cluster) waitVoters(t testing.TB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d raft voters", n), nil, 2*time.Minute, func() error {
		out := strings.TrimSpace(c.run(t, "voters"))
		if out != fmt.Sprint(n) {
			return fmt.Errorf("%s voters", out)
		}
		return nil
	})
}

func TestHA_threeNodeCluster(t *testing.T) {
	c := StartCluster(t, 3)
	leader := c.Leader(t)
	svc := leader.EnableService(t, "registry")
	svc.WriteConfig(t, "lockout_threshold=3")
	// Users written through a standby: it forwards writes to the active node.
	standby := &Service{Name: svc.Name, Vault: c.Standby(t), BundlePath: svc.BundlePath}
	standby.AddUsers(t, append(haUsers, lockedUser)...)
	relay := StartRelay(t, haRelayOptions(t, c, svc.Name))
	var regs []*Registry
	for _, rk := range registryKinds {
		regs = append(regs, StartRegistry(t, rk, relay, svc))
	}
	for i := range 3 {
		if code, _, _ := relay.Token(t, svc.Name, lockedUser.name, fmt.Sprintf("wrong-%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i, code)
		}
	}

	t.Run("every_node_serves_the_same_state", func(t *testing.T) {
		ca := svc.CAPEM(t)
		keys := readKeys(t, leader, svc.Name)
		for i, n := range c.Nodes {
			code, _, body := httpGet(t, n.Addr+"/v1/"+svc.Name+"/ca/pem", "", "")
			if code != http.StatusOK || !bytes.Equal(body, ca) {
				t.Errorf("node%d ca/pem: %d, same as the leader's: %v", i+1, code, bytes.Equal(body, ca))
			}
			if k := readKeys(t, n, svc.Name); k.Current != keys.Current {
				t.Errorf("node%d current key %s, leader's %s", i+1, k.Current, keys.Current)
			}
			for _, u := range haUsers {
				if code, _ := tokenCall(t, n, svc.Name, u.name, u.password); code != http.StatusOK {
					t.Errorf("node%d: token for %s: %d", i+1, u.name, code)
				}
			}
			if code, _ := tokenCall(t, n, svc.Name, lockedUser.name, lockedUser.password); code != http.StatusTooManyRequests {
				t.Errorf("node%d: %s locked out on the leader, here %d, want 429", i+1, lockedUser.name, code)
			}
		}
		// Two nodes, one CA: the first reads of a new mount's ca/pem, at
		// once through every node, all see the one trust anchor made.
		leader.CLI(t, "secrets", "enable", "-path=second", "-plugin-version="+pluginVersion, pluginName)
		pems := make([][]byte, 2*len(c.Nodes))
		var wg sync.WaitGroup
		for i := range pems {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _, body := httpGet(t, c.Nodes[i%len(c.Nodes)].Addr+"/v1/second/ca/pem", "", "")
				if code == http.StatusOK {
					pems[i] = body
				}
			}()
		}
		wg.Wait()
		for i, p := range pems {
			if p == nil || !bytes.Equal(p, pems[0]) {
				t.Errorf("first reads of second/ca/pem: read %d through node%d differs or failed", i, i%len(c.Nodes)+1)
			}
		}

		// A password changed through one standby holds on every node at once.
		other := c.Nodes[(c.LeaderIndex(t, -1)+2)%3]
		u := user{"hera", "hera-pw-0", "repository:hera/**:pull"}
		standby.AddUsers(t, u)
		standby.WriteUser(t, u.name, "hera-pw-1", u.access)
		if code, _ := tokenCall(t, other, svc.Name, u.name, "hera-pw-0"); code != http.StatusUnauthorized {
			t.Errorf("old password of %s after a change through another node: %d, want 401", u.name, code)
		}
		if code, _ := tokenCall(t, other, svc.Name, u.name, "hera-pw-1"); code != http.StatusOK {
			t.Errorf("new password of %s: %d, want 200", u.name, code)
		}
	})

	t.Run("leader_killed_under_load", func(t *testing.T) {
		before := snapshot(t, c, relay, svc)
		failoversBefore := relay.Metric(t, "godoauth_relay_vault_failovers_total")
		var killed int
		var election time.Duration
		underLoad(t, relay, svc.Name, "leader_sigkill", func() {
			killed = c.LeaderIndex(t, -1)
			start := time.Now()
			c.Kill(t, killed)
			c.LeaderIndex(t, killed)
			election = time.Since(start)
		}, func() {})
		defer func() {
			c.Start(t, killed)
			c.waitVoters(t, 3)
		}()
		t.Logf("MEASURE ha leader_sigkill new_leader_after=%s relay_failovers=%.0f", ms(election), relay.Metric(t, "godoauth_relay_vault_failovers_total")-failoversBefore)
		checkIntact(t, c, relay, svc, before, regs)
	})

	t.Run("sealed_node_and_stopped_node", func(t *testing.T) {
		before := snapshot(t, c, relay, svc)
		// healthzNames waits until the relay's /healthz reports node i in state.
		healthzNames := func(i int, state string) {
			waitFor(t, "relay /healthz naming node"+fmt.Sprint(i+1)+" "+state, nil, 30*time.Second, func() error {
				code, _, body := httpGet(t, relay.URL+"/healthz", "", "")
				var h struct{ Nodes map[string]string }
				if err := json.Unmarshal(body, &h); err != nil || code != http.StatusOK || h.Nodes[c.Nodes[i].Addr] != state {
					return fmt.Errorf("%d %s", code, body)
				}
				t.Logf("MEASURE ha healthz node%d=%s: %s", i+1, state, bytes.TrimSpace(body))
				return nil
			})
		}
		// One at a time: a sealed node is out of Raft, so a sealed and a
		// stopped node together leave one voter of three: no quorum.
		underLoad(t, relay, svc.Name, "seal_active_node", func() {
			// Only the active node can be sealed ("cannot seal when in
			// standby mode"); sealing it hands leadership on.
			sealed := c.LeaderIndex(t, -1)
			c.Nodes[sealed].Seal(t)
			c.LeaderIndex(t, sealed)
			healthzNames(sealed, "sealed")
			time.Sleep(2 * time.Second)
			c.Unseal(t, sealed)
		}, func() { c.waitVoters(t, 3) })
		underLoad(t, relay, svc.Name, "stop_standby_node", func() {
			stopped := (c.LeaderIndex(t, -1) + 1) % len(c.Nodes)
			c.Stop(t, stopped)
			healthzNames(stopped, "unreachable")
			time.Sleep(2 * time.Second)
			c.Start(t, stopped)
		}, func() { c.waitVoters(t, 3) })
		checkIntact(t, c, relay, svc, before, regs)
	})

	t.Run("rolling_plugin_upgrade", func(t *testing.T) {
		const newVersion = "v0.2.0"
		bin := buildPluginVersion(t, newVersion)
		before := snapshot(t, c, relay, svc)
		underLoad(t, relay, svc.Name, "rolling_plugin_upgrade", func() {
			upgradePlugin(t, c, svc.Name, bin, newVersion)
		}, func() {})
		out := c.Leader(t).CLI(t, "secrets", "list", "-detailed", "-format=json")
		var mounts map[string]struct {
			RunningVersion string `json:"running_plugin_version"`
			Version        string `json:"plugin_version"`
		}
		if err := json.Unmarshal([]byte(out), &mounts); err != nil {
			t.Fatalf("vault secrets list: %v", err)
		}
		for _, line := range strings.Split(c.Leader(t).CLI(t, "secrets", "list", "-detailed"), "\n") {
			if strings.HasPrefix(line, "Path") || strings.HasPrefix(line, svc.Name+"/") {
				t.Logf("vault secrets list -detailed: %s", strings.Join(strings.Fields(line), " "))
			}
		}
		m := mounts[svc.Name+"/"]
		t.Logf("MEASURE ha upgrade plugin_version=%s running_plugin_version=%s", m.Version, m.RunningVersion)
		if m.RunningVersion != newVersion || m.Version != newVersion {
			t.Errorf("after the upgrade %s/ runs %q (pinned %q), want %s", svc.Name, m.RunningVersion, m.Version, newVersion)
		}
		checkIntact(t, c, relay, svc, before, regs)
	})

	t.Run("whole_cluster_restart", func(t *testing.T) {
		before := snapshot(t, c, relay, svc)
		c.run(t, "down")
		start := time.Now()
		// Each node starts and is unsealed; the last unseal gives the
		// cluster its quorum back.
		var wg sync.WaitGroup
		results := make([]Result, len(c.Nodes))
		for i := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = RunCommand(t, c.env, "", "", c.script, "start", c.Dir, fmt.Sprint(i+1))
			}()
		}
		wg.Wait()
		for _, r := range results {
			if !r.OK() {
				t.Fatalf("%s", r)
			}
		}
		c.LeaderIndex(t, -1)
		leaderAfter := time.Since(start)
		// The relay's first call after the restart: a token that both
		// registries accept. No retry here: a client would see this answer.
		u := haUsers[2]
		code, _, body := relay.Token(t, svc.Name, u.name, u.password, "repository:"+u.name+"/app:pull")
		firstAfter := time.Since(start)
		t.Logf("MEASURE ha whole_cluster_restart leader_after=%s first_token_after=%s status=%d",
			ms(leaderAfter), ms(firstAfter), code)
		if code != http.StatusOK {
			httpCode, _, health := httpGet(t, relay.URL+"/healthz", "", "")
			t.Fatalf("first token after the restart: %d %s; relay /healthz %d %s", code, truncate(body, 200), httpCode, bytes.TrimSpace(health))
		}
		token := tokenOf(t, body)
		for _, reg := range regs {
			code, body := bearerGet(t, reg.URL+"/v2/"+u.name+"/app/tags/list", token)
			if code != http.StatusNotFound || !bytes.Contains(body, []byte("NAME_UNKNOWN")) {
				t.Errorf("%s with the first token after the restart: %d %s, want 404 NAME_UNKNOWN", reg.Kind, code, truncate(body, 200))
			}
		}
		checkIntact(t, c, relay, svc, before, regs)
	})
}

// buildPluginVersion builds the plugin from the same source with another
// version stamped in, as a release would.
func buildPluginVersion(t testing.TB, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), pluginName+"-"+version)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath",
		"-ldflags", "-X github.com/vault-registry/vault-plugin-registry/plugin.Version="+version, "-o", out, "./cmd/vault-plugin-registry")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, b)
	}
	return out
}

// upgradePlugin is the tested upgrade procedure: the new binary in every
// node's plugin directory, registered once under its version, the mount
// pinned to it, and a reload on every node.
func upgradePlugin(t testing.TB, c *Cluster, mount, bin, version string) {
	t.Helper()
	command := filepath.Base(bin)
	var sum string
	for _, n := range c.Nodes {
		sum = copyFile(t, bin, filepath.Join(n.pluginDir, command))
	}
	v := c.Leader(t)
	v.CLI(t, "plugin", "register", "-sha256="+sum, "-version="+version, "-command="+command, "secret", pluginName)
	v.CLI(t, "secrets", "tune", "-plugin-version="+version, mount)
	// By plugin name: Vault 1.21's CLI sends any -mounts reload to
	// sys/plugins/reload/unknown (404 unsupported path, exit 2).
	out := v.CLI(t, "plugin", "reload", "-type=secret", "-plugin="+pluginName, "-scope=global")
	t.Logf("vault plugin reload: %s", strings.TrimSpace(out))
}
