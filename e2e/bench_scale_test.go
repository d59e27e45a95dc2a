//go:build e2e && bench

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Scale in `make bench` (issue 27) and the mass expiry of robots (issue
// 23), on a single-node Raft Vault started from a config file
// (scripts/vault-cluster.sh, as the fault tests have it), so that storage
// has a size: the data directory's bytes and a Raft snapshot's (the
// snapshot holds only what is stored now; the data directory's BoltDB
// files do not shrink when entries go, they reuse the room). Set-up writes
// through Vault's HTTP API with scaleWriters concurrent writers and
// precomputed bcrypt hashes (password_hash). Figures are printed, never
// asserted; each test appends its section to the file BENCH_REPORT names.
// The load average is given beside each figure: other work on the machine
// skews absolute figures, the ratios are measured side by side.
//
// Run: go test -tags 'e2e bench' -run '^TestBench_(scale|robotExpiry)' -v -timeout 40m ./e2e/
// (after make build, with VPR_BIN_DIR=bin); one of them alone, e.g.
// -run '^TestBench_scaleUsers$'.
const (
	scaleBigUsers = 100000
	scaleMounts   = 100
	scaleWriters  = 32  // concurrent writers while setting up
	coldSamples   = 300 // first requests of distinct users
	scaleRounds   = 3   // interleaved rounds of side-by-side series
	scaleRun      = 5 * time.Second
)

// raftBench is a loadBench on a single-node Raft Vault.
type raftBench struct {
	*loadBench
	c *Cluster
}

// vaultEnv, as NAME=value, go to the Vault server: it is started, then
// restarted with them.
func newRaftBench(t *testing.T, vaultEnv ...string) *raftBench {
	t.Helper()
	c := StartCluster(t, 1)
	if len(vaultEnv) > 0 {
		c.env = append(c.env, vaultEnv...)
		c.Stop(t, 0)
		c.Start(t, 0)
	}
	b := newBenchOn(t, c.Nodes[0])
	pid, err := strconv.Atoi(strings.TrimSpace(readFileString(t, filepath.Join(c.nodeDir(0), "pid"))))
	if err != nil {
		t.Fatalf("node pid: %v", err)
	}
	b.vaultPID = pid
	return &raftBench{loadBench: b, c: c}
}

// newBenchOn is a loadBench on v with a cost-10 hash of benchPassword;
// the caller sets the PIDs, the relay and the user.
func newBenchOn(t *testing.T, v *Vault) *loadBench {
	t.Helper()
	b := &loadBench{t: t, wrk: tool(t, "wrk"), vault: v}
	b.script = filepath.Join(t.TempDir(), "report.lua")
	mustWrite(t, b.script, []byte(wrkReport))
	b.hash = benchHash(t)
	return b
}

// benchHash is a bcrypt hash (cost 10) of benchPassword.
func benchHash(t testing.TB) string {
	hash, err := bcrypt.GenerateFromPassword([]byte(benchPassword), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(hash)
}

// storageSize is Vault's storage: the Raft data directory's bytes and a
// Raft snapshot's.
type storageSize struct {
	Dir, Snapshot int64
}

func (s storageSize) String() string {
	return fmt.Sprintf("%s B data dir, %s B snapshot", thousands(s.Dir), thousands(s.Snapshot))
}

func (r *raftBench) storage() storageSize {
	t := r.t
	t.Helper()
	snap := filepath.Join(t.TempDir(), "snapshot")
	r.vault.CLI(t, "operator", "raft", "snapshot", "save", snap)
	fi, err := os.Stat(snap)
	if err != nil {
		t.Fatal(err)
	}
	var dir int64
	err = filepath.WalkDir(filepath.Join(r.c.nodeDir(0), "data"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			dir += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return storageSize{Dir: dir, Snapshot: fi.Size()}
}

// inParallel calls do(i) for i in [0, n) from workers goroutines and
// returns the time it took; the first error fails the test.
func inParallel(t testing.TB, n, workers int, do func(i int) error) time.Duration {
	t.Helper()
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
	return time.Since(start)
}

var setupClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: scaleWriters}}

// vaultCall sends method path with a JSON body as root and wants a 2xx;
// it returns the answer's body.
func vaultCall(v *Vault, method, path string, body any) ([]byte, error) {
	var raw io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		raw = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, raw)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", rootToken)
	resp, err := setupClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, truncate(out, 300))
	}
	return out, nil
}

func scaleUser(i int) string { return fmt.Sprintf("user%06d", i) }

// scaleAccess is a user's access: a namespace of its own and benchScope.
func scaleAccess(name string) string { return "repository:" + name + "/**:pull,push;" + benchScope }

// writeScaleUsers writes users [from, to) of the mount with password_hash.
func (b *loadBench) writeScaleUsers(mount string, from, to int) time.Duration {
	return inParallel(b.t, to-from, scaleWriters, func(i int) error {
		name := scaleUser(from + i)
		_, err := vaultCall(b.vault, http.MethodPost, mount+"/users/"+name,
			map[string]string{"password_hash": b.hash, "access": scaleAccess(name)})
		return err
	})
}

// tokenTarget is a warm token request of the current user for service.
func (b *loadBench) tokenTarget(service string) target {
	return target{url: b.relay.URL + "/auth?service=" + service + "&scope=" + benchScope, auth: b.auth, front: b.relay.Proc.cmd.Process.Pid}
}

// sideBySide runs a and b interleaved, scaleRounds times each.
func (b *loadBench) sideBySide(x, y target, conns int) (xs, ys []wrkResult) {
	for range scaleRounds {
		xs = append(xs, b.run(x, conns, scaleRun))
		ys = append(ys, b.run(y, conns, scaleRun))
	}
	return xs, ys
}

func medianRate(runs []wrkResult) float64 {
	rs := make([]float64, len(runs))
	for i, r := range runs {
		rs[i] = r.OKPerSec()
	}
	slices.Sort(rs)
	return rs[len(rs)/2]
}

func failedOf(runs ...[]wrkResult) int64 {
	var n int64
	for _, rs := range runs {
		for _, r := range rs {
			n += r.Failed()
		}
	}
	return n
}

// appendReport prints section and appends it to BENCH_REPORT, if set.
func appendReport(t *testing.T, section string) {
	fmt.Print(section)
	path := os.Getenv("BENCH_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err == nil {
		_, err = f.WriteString(section)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Errorf("writing %s: %v", path, err)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestBench_scaleUsers: 100,000 users in one mount against 10 in another
// of the same Vault: one user's warm token p50 in each, interleaved; the
// first token of 300 users spread over the large mount; `vault list`;
// storage before and after the import.
func TestBench_scaleUsers(t *testing.T) {
	r := newRaftBench(t)
	b, v := r.loadBench, r.vault
	v.EnableService(t, "small")
	v.EnableService(t, "large")
	b.pluginPID = pluginPID(t, b.vaultPID)
	b.relay = StartRelay(t, RelayOptions{Vault: v, Services: []string{"small", "large"}})
	b.writeScaleUsers("small", 0, 10)
	b.writeScaleUsers("large", 0, 10)
	before := r.storage()
	loadImport := loadAverage()
	took := b.writeScaleUsers("large", 10, scaleBigUsers)
	after := r.storage()
	t.Logf("scale: %d users written in %s; storage %s → %s", scaleBigUsers-10, took, before, after)
	idle := b.memory()

	loadList := loadAverage()
	listSmall, nSmall := r.listTime("small/users")
	listLarge, nLarge := r.listTime("large/users")
	start := time.Now()
	out := v.CLI(t, "list", "large/users")
	cliList := time.Since(start)
	if lines := strings.Count(out, "\n"); lines < scaleBigUsers {
		t.Errorf("vault list large/users printed %d lines, want %d users", lines, scaleBigUsers)
	}

	b.useUser(scaleUser(0))
	small, large := b.tokenTarget("small"), b.tokenTarget("large")
	b.warm(small)
	b.warm(large)
	loadWarm := loadAverage()
	smallRuns, largeRuns := b.sideBySide(small, large, 1)
	loadWarmAfter := loadAverage()

	loadCold := loadAverage()
	cold := r.coldTokens("large", coldSamples)
	perCheck := bcryptCheckTime(b.hash)

	var w strings.Builder
	fmt.Fprintf(&w, "\n### Scale: %s users in one mount (issue 27)\n\n", thousands(scaleBigUsers))
	fmt.Fprintf(&w, "Single-node Raft Vault. Two mounts of the plugin: `small` with 10 users, `large` with %s, each user with\n", thousands(scaleBigUsers))
	fmt.Fprintf(&w, "a precomputed `password_hash` (bcrypt cost 10) and two access entries. %s users written through the HTTP API by %d\n", thousands(scaleBigUsers-10), scaleWriters)
	fmt.Fprintf(&w, "concurrent writers in %s: **%.0f users/s** (load average before: %s).\n\n", took.Round(time.Second), float64(scaleBigUsers-10)/took.Seconds(), loadImport)
	fmt.Fprintln(&w, "| storage | data directory | Raft snapshot |")
	fmt.Fprintln(&w, "|---|--:|--:|")
	fmt.Fprintf(&w, "| 10 + 10 users | %s B | %s B |\n", thousands(before.Dir), thousands(before.Snapshot))
	fmt.Fprintf(&w, "| 10 + %s users | %s B | %s B |\n", thousands(scaleBigUsers), thousands(after.Dir), thousands(after.Snapshot))
	fmt.Fprintf(&w, "| per user added | %s B | %s B |\n\n", thousands((after.Dir-before.Dir)/int64(scaleBigUsers-10)), thousands((after.Snapshot-before.Snapshot)/int64(scaleBigUsers-10)))
	fmt.Fprintf(&w, "RSS at rest with %s users: plugin %s, Vault %s, relay %s.\n\n", thousands(scaleBigUsers), mib(idle.Plugin), mib(idle.Vault), mib(idle.Relay))
	fmt.Fprintf(&w, "Listing (load average %s): `LIST small/users` (%d keys) %s, `LIST large/users` (%d keys) %s (HTTP API, median of 3);\n",
		loadList, nSmall, millis(listSmall), nLarge, millis(listLarge))
	fmt.Fprintf(&w, "`vault list large/users` (the CLI, table output) %s.\n\n", millis(cliList))
	fmt.Fprintf(&w, "Warm tokens of one user at 1 connection, %s per run, the two mounts interleaved (load average %s before, %s after):\n\n", scaleRun, loadWarm, loadWarmAfter)
	fmt.Fprintln(&w, "| run | 10 users: p50 | p99 | tokens/s | 100,000 users: p50 | p99 | tokens/s |")
	fmt.Fprintln(&w, "|---|--:|--:|--:|--:|--:|--:|")
	for i := range smallRuns {
		s, l := smallRuns[i], largeRuns[i]
		fmt.Fprintf(&w, "| %d | %s | %s | %.0f | %s | %s | %.0f |\n", i+1, millis(s.P50), millis(s.P99), s.OKPerSec(), millis(l.P50), millis(l.P99), l.OKPerSec())
	}
	sp, lp := medianP50(smallRuns), medianP50(largeRuns)
	fmt.Fprintf(&w, "\nMedian p50: 10 users %s, %s users %s: **×%.2f** (target: within 10%%); failed requests: %d.\n\n",
		millis(sp), thousands(scaleBigUsers), millis(lp), float64(lp)/float64(max(sp, 1)), failedOf(smallRuns, largeRuns))
	fmt.Fprintf(&w, "Cold tokens (load average %s): the first token of %d users spread over the large mount, one at a time: p50 %s, **p99 %s**, longest %s;\n",
		loadCold, len(cold), millis(percentile(cold, 0.5)), millis(percentile(cold, 0.99)), millis(slices.Max(cold)))
	fmt.Fprintf(&w, "one bcrypt check (cost 10) takes %s here, which a first token pays.\n", millis(perCheck))
	appendReport(t, w.String())
}

// listTime is the median time of three LISTs of path, and its key count.
func (r *raftBench) listTime(path string) (time.Duration, int) {
	t := r.t
	t.Helper()
	var ds []time.Duration
	keys := 0
	for range 3 {
		start := time.Now()
		out, err := vaultCall(r.vault, "LIST", path, nil)
		ds = append(ds, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			Data struct {
				Keys []string `json:"keys"`
			} `json:"data"`
		}
		if err := json.Unmarshal(out, &ans); err != nil {
			t.Fatal(err)
		}
		keys = len(ans.Data.Keys)
	}
	return percentile(ds, 0.5), keys
}

// coldTokens asks for the first token of n users spread over the mount
// (none asked before), one at a time, and returns each one's latency.
func (r *raftBench) coldTokens(mount string, n int) []time.Duration {
	t := r.t
	t.Helper()
	client := &http.Client{Timeout: time.Minute}
	var ds []time.Duration
	for i := range n {
		name := scaleUser(10 + i*((scaleBigUsers-10)/n))
		req, err := http.NewRequest(http.MethodGet, r.relay.URL+"/auth?service="+mount+"&scope="+benchScope, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(name, benchPassword)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ds = append(ds, time.Since(start))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first token of %s: %d %s", name, resp.StatusCode, truncate(body, 200))
		}
	}
	return ds
}

// manyMounts is a wrk script that spreads the token requests over the
// services, one after the other, and reports as wrkReport does.
func manyMounts(services []string) string {
	var s strings.Builder
	s.WriteString("local services = {")
	for i, name := range services {
		if i > 0 {
			s.WriteString(", ")
		}
		fmt.Fprintf(&s, "%q", name)
	}
	s.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i + 1\n")
	fmt.Fprintf(&s, "  return wrk.format(\"GET\", \"/auth?service=\" .. services[(i %% #services) + 1] .. \"&scope=%s\")\nend\n", benchScope)
	return s.String() + wrkReport
}

// TestBench_scaleMounts: one relay in front of scaleMounts mounts, warm
// tokens spread over all of them against tokens of one mount, interleaved.
func TestBench_scaleMounts(t *testing.T) {
	v := StartVault(t)
	b := newBenchOn(t, v)
	b.vaultPID = v.Proc.cmd.Process.Pid
	services := make([]string, scaleMounts)
	for i := range services {
		services[i] = fmt.Sprintf("svc%03d", i)
	}
	loadSetup := loadAverage()
	took := inParallel(t, scaleMounts, 4, func(i int) error {
		s := services[i]
		if _, err := vaultCall(v, http.MethodPost, "sys/mounts/"+s, map[string]any{"type": pluginName, "plugin_version": pluginVersion}); err != nil {
			return err
		}
		if _, err := vaultCall(v, http.MethodGet, s+"/ca/pem", nil); err != nil {
			if _, err := vaultCall(v, http.MethodPost, s+"/ca/generate", map[string]any{}); err != nil {
				return err
			}
		}
		_, err := vaultCall(v, http.MethodPost, s+"/users/"+benchUser, map[string]string{"password_hash": b.hash, "access": benchScope})
		return err
	})
	b.pluginPID = pluginPID(t, b.vaultPID)
	token := v.RelayToken(t, services...)
	b.relay = StartRelay(t, RelayOptions{Vault: v, Token: token})
	b.useUser(benchUser)
	// The same relay with storage.vault.batch false: one Vault call a token.
	alone := *b
	alone.relay = StartRelay(t, RelayOptions{Vault: v, Token: token, NoBatch: true})
	// The first token of each mount: the mount probe, a bcrypt check.
	inParallel(t, scaleMounts, 2, func(i int) error {
		b.warm(b.tokenTarget(services[i]))
		alone.warm(alone.tokenTarget(services[i]))
		return nil
	})
	lua := filepath.Join(t.TempDir(), "mounts.lua")
	mustWrite(t, lua, []byte(manyMounts(services)))
	type series struct {
		bench *loadBench
		tg    target
		runs  []wrkResult
	}
	spread := func(lb *loadBench) series {
		c := *lb
		c.script = lua
		return series{&c, target{url: c.relay.URL + "/", auth: c.auth, front: c.relay.Proc.cmd.Process.Pid}, nil}
	}

	var w strings.Builder
	fmt.Fprintf(&w, "\n### Scale: %d registry services (mounts) behind one relay (issue 27)\n\n", scaleMounts)
	fmt.Fprintf(&w, "Vault dev server; %d mounts of the plugin (one plugin process, multiplexed), each with the same user, made in %s\n", scaleMounts, took.Round(time.Second))
	fmt.Fprintf(&w, "(load average %s). One relay with a token for all of them. Warm tokens: every request to `%s`, against\n", loadSetup, services[0])
	fmt.Fprintf(&w, "requests spread over the %d mounts in turn (a wrk script); %s per run, the series interleaved, %d rounds; medians.\n", scaleMounts, scaleRun, scaleRounds)
	fmt.Fprintln(&w, "Batched: the relay as configured by default; alone: the same relay with `storage.vault.batch: false`, one Vault call a token.")
	fmt.Fprintln(&w, "\n| conns | load average before | one mount, batched: tokens/s (p99) | 100 mounts, batched | 100 / one | one mount, alone | 100 mounts, alone | 100 / one |")
	fmt.Fprintln(&w, "|--:|---|--:|--:|--:|--:|--:|--:|")
	for _, conns := range []int{8, 64} {
		load := loadAverage()
		all := []series{{bench: b, tg: b.tokenTarget(services[0])}, spread(b), {bench: &alone, tg: alone.tokenTarget(services[0])}, spread(&alone)}
		for range scaleRounds {
			for i := range all {
				all[i].runs = append(all[i].runs, all[i].bench.run(all[i].tg, conns, scaleRun))
			}
		}
		cell := func(s series) string {
			if n := failedOf(s.runs); n > 0 {
				t.Errorf("%d token requests failed at %d connections", n, conns)
			}
			return fmt.Sprintf("%.0f (%s)", medianRate(s.runs), millis(medianP99(s.runs)))
		}
		fmt.Fprintf(&w, "| %d | %s | %s | %s | **%s** | %s | %s | **%s** |\n", conns, load,
			cell(all[0]), cell(all[1]), ratio(medianRate(all[1].runs), medianRate(all[0].runs)),
			cell(all[2]), cell(all[3]), ratio(medianRate(all[3].runs), medianRate(all[2].runs)))
	}
	fmt.Fprintln(&w, "\nTarget: 100 mounts within 10% of one mount (a ratio ≥ 0.90). The relay batches one mount's token requests")
	fmt.Fprintln(&w, "(one Vault call for many); requests spread over 100 mounts seldom meet one of their mount in the queue, so they go")
	fmt.Fprintln(&w, "about one a call, as with batching off. The \"alone\" columns compare the mounts without that difference.")
	appendReport(t, w.String())
}

func medianP99(runs []wrkResult) time.Duration {
	return medianOf(runs, func(r wrkResult) time.Duration { return r.P99 })
}

// medianOf is the median of one figure of the runs.
func medianOf(runs []wrkResult, figure func(wrkResult) time.Duration) time.Duration {
	ds := make([]time.Duration, len(runs))
	for i, r := range runs {
		ds[i] = figure(r)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// TestBench_scaleMigrate: `godoauth-relay migrate` of scaleBigUsers
// godoauth users (plain passwords in a generic mount, as godoauth keeps
// them) into a mount with bcrypt_cost 4, standard error to a pipe: the
// time, the rate, the progress lines as they come, the migration's RSS.
func TestBench_scaleMigrate(t *testing.T) {
	r := newRaftBench(t)
	v := r.vault
	v.CLI(t, "secrets", "enable", "-path=godoauth", "generic")
	loadSetup := loadAverage()
	took := inParallel(t, scaleBigUsers, scaleWriters, func(i int) error {
		name := scaleUser(i)
		_, err := vaultCall(v, http.MethodPost, "godoauth/"+name,
			map[string]string{"password": "pw-" + name + "-7f3a", "access": "repository:" + name + "/app:*;" + benchScope})
		return err
	})
	svc := v.EnableService(t, "registry-new")
	// Migrating hashes every plain password at the mount's cost: 4 keeps a
	// bench row to minutes (cost 10 would be ~100,000 × the check below).
	svc.WriteConfig(t, "bcrypt_cost=4")
	r.pluginPID = pluginPID(t, r.vaultPID)

	dir := t.TempDir()
	godoauthCerts(t, dir)
	config := RelayYAML(t, RelayOptions{Vault: v, Token: rootToken, Extra: godoauthKeyPair}, freePort(t))
	mustWrite(t, filepath.Join(dir, "config.yml"), []byte(config))

	m := runMigrate(t, dir, "migrate", "-config", "config.yml", "-from", "godoauth", "-to", "registry-new")
	if m.exit != 0 {
		t.Fatalf("migrate: exit %d\n%s", m.exit, tail(m.stdout, 20))
	}
	list, n := r.listTime("registry-new/users")
	if n != scaleBigUsers {
		t.Errorf("%d users in registry-new after the migration, want %d\n%s", n, scaleBigUsers, tail(m.stdout, 8))
	}

	var w strings.Builder
	fmt.Fprintf(&w, "\n### Scale: `godoauth-relay migrate` of %s godoauth users (issue 27)\n\n", thousands(scaleBigUsers))
	fmt.Fprintf(&w, "Single-node Raft Vault; godoauth's users in a `generic` mount (plain passwords), written in %s by %d writers (load average %s).\n",
		took.Round(time.Second), scaleWriters, loadSetup)
	fmt.Fprintf(&w, "The plugin's mount has `bcrypt_cost=4`: migrate hashes every password at the mount's cost, so at the default, 10, the run is\n")
	fmt.Fprintf(&w, "bcrypt-bound (about 100,000 × one check at cost 10 / the cores). The default `-parallel 8`; standard output to a file, standard error to a pipe.\n\n")
	fmt.Fprintf(&w, "Load average before: %s, after: %s. **%s users in %s, %.0f users/s**; peak RSS of the migrate process **%s**;\n",
		m.loadBefore, m.loadAfter, thousands(int64(n)), m.took.Round(time.Second), float64(n)/m.took.Seconds(), mib(m.peakKiB))
	fmt.Fprintf(&w, "`LIST registry-new/users` afterwards: %d keys in %s. It printed %d progress lines on the pipe as it went; some of them, with the RSS then:\n\n",
		n, millis(list), len(m.progress))
	fmt.Fprintln(&w, "| after | line on standard error | RSS |")
	fmt.Fprintln(&w, "|--:|---|--:|")
	for i, p := range m.progress {
		if step := max(1, len(m.progress)/6); i%step == 0 || i == len(m.progress)-1 {
			fmt.Fprintf(&w, "| %s | `%s` | %s |\n", p.at.Round(time.Second), p.line, mib(p.rssKiB))
		}
	}
	if len(m.progress) == 0 {
		fmt.Fprintln(&w, "| - | (none) | - |")
	}
	appendReport(t, w.String())
}

type progressLine struct {
	at     time.Duration
	line   string
	rssKiB int64
}

type migrateRun struct {
	exit                  int
	stdout                string
	took                  time.Duration
	peakKiB               int64
	progress              []progressLine
	loadBefore, loadAfter string
}

// runMigrate runs the relay binary with args in dir, standard output to a
// file and standard error to a pipe read line by line.
func runMigrate(t *testing.T, dir string, args ...string) migrateRun {
	t.Helper()
	out, err := os.Create(filepath.Join(dir, "migrate.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bins.relay, args...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(dir), "VAULT_TOKEN="+rootToken)
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	m := migrateRun{loadBefore: loadAverage()}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		m.progress = append(m.progress, progressLine{time.Since(start), sc.Text(), rssKiB(cmd.Process.Pid)})
	}
	err = cmd.Wait()
	m.took = time.Since(start)
	m.loadAfter = loadAverage()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		m.exit = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.peakKiB = ru.Maxrss // KiB on Linux
	}
	m.stdout = readFileString(t, out.Name())
	return m
}

// TestBench_robotExpiry: robotsLive robots that expire at once (issue 23).
// They are issued with a long ttl, then each lease is renewed with the
// increment that makes it end at one instant, so that Vault's expiration
// manager revokes them all together. A user's warm tokens at 8
// connections with the robots live and quiet, then while Vault revokes
// them; storage before the robots, with them live, and after.
//
// BENCH_REVOCATION_WORKERS sets Vault's VAULT_LEASE_REVOCATION_WORKERS
// (default 200: how many leases its expiration manager revokes at once).
func TestBench_robotExpiry(t *testing.T) {
	var vaultEnv []string
	workers := "200 (Vault's default)"
	if n := os.Getenv("BENCH_REVOCATION_WORKERS"); n != "" {
		vaultEnv = append(vaultEnv, "VAULT_LEASE_REVOCATION_WORKERS="+n)
		workers = n + " (VAULT_LEASE_REVOCATION_WORKERS)"
	}
	r := newRaftBench(t, vaultEnv...)
	b, v := r.loadBench, r.vault
	v.EnableService(t, benchService)
	b.pluginPID = pluginPID(t, b.vaultPID)
	b.relay = StartRelay(t, RelayOptions{Vault: v, Services: []string{benchService}})
	b.writeUsers([]string{benchUser}, benchScope)
	b.useUser(benchUser)
	user := b.relayTarget(b.relay)
	b.warm(user)
	v.CLI(t, "write", benchService+"/roles/expiring", "access="+benchScope, "ttl=1h", "max_ttl=2h")
	sizeBefore := r.storage()

	loadIssue := loadAverage()
	leases := make([]string, robotsLive)
	issueTook := inParallel(t, robotsLive, robotIssuers, func(i int) error {
		out, err := vaultCall(v, http.MethodGet, benchService+"/creds/expiring", nil)
		if err != nil {
			return err
		}
		var ans struct {
			LeaseID string `json:"lease_id"`
		}
		if err := json.Unmarshal(out, &ans); err != nil || ans.LeaseID == "" {
			return fmt.Errorf("creds/expiring: no lease in %s", truncate(out, 200))
		}
		leases[i] = ans.LeaseID
		return nil
	})
	sizeLive := r.storage()
	leasesLive := b.leaseCount("expiring")

	loadBefore := loadAverage()
	before := b.run(user, 8, 15*time.Second)

	// One instant for all: after the renewals, which take about as long
	// as the issuing did.
	renewStart := time.Now()
	at := renewStart.Add(issueTook*3/2 + 10*time.Second)
	renewTook := inParallel(t, robotsLive, robotIssuers, func(i int) error {
		increment := time.Until(at).Round(time.Second)
		if increment < time.Second {
			return errors.New("the renewals took longer than planned; the robots would not expire together")
		}
		_, err := vaultCall(v, http.MethodPut, "sys/leases/renew", map[string]any{"lease_id": leases[i], "increment": int(increment.Seconds())})
		return err
	})
	time.Sleep(time.Until(at))
	loadDuring := loadAverage()
	// Meanwhile, when the last lease is gone.
	var done time.Duration
	left := robotsLive
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for deadline := at.Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			if left = b.leaseCount("expiring"); left == 0 {
				break
			}
		}
		done = time.Since(at)
	}()
	during := b.run(user, 8, 30*time.Second)
	<-polled
	records := len(v.liveRobots(t, benchService, "expiring"))
	sizeAfter := r.storage()
	if left != 0 || records > 0 {
		t.Errorf("%s after the expiry: %d leases, %d live robots left", done.Round(time.Second), left, records)
	}
	if n := before.Failed() + during.Failed(); n > 0 {
		t.Errorf("%d token requests failed", n)
	}

	var w strings.Builder
	fmt.Fprintf(&w, "\n### Robot accounts: %s robots expiring at once (issue 23)\n\n", thousands(robotsLive))
	fmt.Fprintf(&w, "Single-node Raft Vault. %s robots issued by %d callers in %s (%.0f/s, load average %s before), ttl 1h; each lease then\n",
		thousands(robotsLive), robotIssuers, issueTook.Round(time.Second), float64(robotsLive)/issueTook.Seconds(), loadIssue)
	fmt.Fprintf(&w, "renewed (%s) with the increment that ends it at one instant, so Vault's expiration manager revokes all %s together.\n", renewTook.Round(time.Second), thousands(int64(leasesLive)))
	fmt.Fprintf(&w, "Revocation workers: %s. The leases were all gone %s after that instant (polled each second; %d left), no robot listed (%d left).\n\n",
		workers, done.Round(time.Second), left, records)
	fmt.Fprintln(&w, "Vault, plugin, others: their CPU as a share of both cores during the run.")
	fmt.Fprintln(&w, "\n| a user's warm tokens, 8 connections | load average before | p50 | p99 | longest | tokens/s | failed | Vault | plugin | others |")
	fmt.Fprintln(&w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, row := range []struct {
		what, load string
		r          wrkResult
	}{{"robots live, quiet (15 s)", loadBefore, before}, {"while Vault revokes them (30 s from the instant)", loadDuring, during}} {
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %.0f | %d | %s | %s | %s |\n", row.what, row.load, millis(row.r.P50), millis(row.r.P99), millis(row.r.Max),
			row.r.OKPerSec(), row.r.Failed(), row.r.share(row.r.CPU.Vault), row.r.share(row.r.CPU.Plugin), row.r.share(row.r.CPU.Others))
	}
	fmt.Fprintf(&w, "\np99 while revoking / before: **×%.2f** (target: under 2×).\n\n", float64(during.P99)/float64(max(before.P99, 1)))
	fmt.Fprintln(&w, "| storage | data directory | Raft snapshot |")
	fmt.Fprintln(&w, "|---|--:|--:|")
	fmt.Fprintf(&w, "| before the robots | %s B | %s B |\n", thousands(sizeBefore.Dir), thousands(sizeBefore.Snapshot))
	fmt.Fprintf(&w, "| %s robots live | %s B | %s B |\n", thousands(robotsLive), thousands(sizeLive.Dir), thousands(sizeLive.Snapshot))
	fmt.Fprintf(&w, "| after their expiry | %s B | %s B |\n", thousands(sizeAfter.Dir), thousands(sizeAfter.Snapshot))
	fmt.Fprintln(&w, "\nThe snapshot holds what is stored; the data directory's BoltDB files keep their size and reuse freed pages.")
	appendReport(t, w.String())
}

// leaseCount counts the leases under <service>/creds/<role>/; -1 when
// Vault gave no list. It does not fail the test, so that a goroutine may
// call it.
func (b *loadBench) leaseCount(role string) int {
	out, err := vaultCall(b.vault, "LIST", "sys/leases/lookup/"+benchService+"/creds/"+role+"/", nil)
	if err != nil {
		if strings.Contains(err.Error(), ": 404 ") {
			return 0
		}
		b.t.Log(err)
		return -1
	}
	var ans struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		b.t.Log(err)
		return -1
	}
	return len(ans.Data.Keys)
}
