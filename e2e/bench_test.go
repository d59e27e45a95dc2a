//go:build e2e && bench

package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The load measurements of `make bench`: wrk against the real relay, Vault
// dev server and plugin on loopback. Numbers are printed, never asserted;
// the table goes to stdout and, when BENCH_REPORT names a file, there too.
//
// Run: go test -tags 'e2e bench' -run '^TestBench_load$' -v -timeout 20m ./e2e/

const (
	benchService  = "registry"
	benchPassword = "bench-password-7c41d2"
	benchScope    = "repository:team/app:pull,push"

	// The throughput quoted for docker_auth, the usual point of comparison.
	dockerAuthTokensPerSec = 30.0

	loadDuration  = 10 * time.Second // each row of the load table
	scaleDuration = 5 * time.Second  // each row of the scale table
	scaleUsers    = 10000
	scaleEntries  = 1000
	userWriters   = 8 // concurrent user writes to Vault
)

var loadConns = []int{1, 8, 64}

// wrkResult is one wrk run, read from the summary the Lua script prints.
type wrkResult struct {
	Conns    int
	Duration time.Duration
	Requests int64
	Non2xx   int64 // responses other than 2xx/3xx
	SockErrs int64 // connect, read, write errors and timeouts
	P50, P99 time.Duration
	CPU      cpuUse // CPU time each process spent during the run
}

// OKPerSec is the rate of successful responses (tokens, or PEM bundles).
func (r wrkResult) OKPerSec() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Requests-r.Non2xx-r.SockErrs) / r.Duration.Seconds()
}

// cpuUse is CPU time (user and system) of the processes on the path, and
// of everything else the machine ran meanwhile.
type cpuUse struct {
	Relay, Vault, Plugin, Wrk time.Duration
	Others                    time.Duration
}

// share is CPU time d as a share of all cores over the run.
func (r wrkResult) share(d time.Duration) string {
	if r.Duration <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(d)/float64(r.Duration)/float64(runtime.NumCPU()))
}

// perRequest is the CPU time of a process per request, in microseconds.
func (r wrkResult) perRequest(d time.Duration) string {
	if r.Requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(d)/float64(r.Requests)/float64(time.Microsecond))
}

// wrkReport is a Lua script for wrk: its done() hook prints one line of
// figures that wrk's human report has only in rounded form.
const wrkReport = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %.0f %.0f\n",
    summary.duration, summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// loadBench is the state of one measuring run.
type loadBench struct {
	t        *testing.T
	stack    *Stack
	wrk      string
	script   string
	auth     string // Authorization header value
	tokenURL string // GET /auth through the relay
	floorURL string // GET /v1/<service>/ca/pem straight to Vault
	hash     string // bcrypt hash of benchPassword at cost 10

	vaultPID, pluginPID, relayPID int
}

// TestBench_load prints the load, scale and memory tables of `make bench`.
func TestBench_load(t *testing.T) {
	b := newLoadBench(t)
	var report strings.Builder
	b.t.Logf("bcrypt: measuring one CompareHashAndPassword at cost %d", bcrypt.DefaultCost)
	perCheck := bcryptCheckTime(b.hash)

	idle := b.memory()
	load := b.loadTable()
	writeLoadTable(&report, load, perCheck, idle)

	scale := b.scaleTable()
	writeScaleTable(&report, scale)

	fmt.Print("\n" + report.String())
	if path := os.Getenv("BENCH_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
}

func newLoadBench(t *testing.T) *loadBench {
	t.Helper()
	b := &loadBench{t: t, wrk: tool(t, "wrk")}
	b.script = filepath.Join(t.TempDir(), "report.lua")
	mustWrite(t, b.script, []byte(wrkReport))
	hash, err := bcrypt.GenerateFromPassword([]byte(benchPassword), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	b.hash = string(hash)

	b.stack = NewStack(t, benchService)
	b.floorURL = b.stack.Vault.Addr + "/v1/" + benchService + "/ca/pem"
	b.tokenURL = b.stack.Relay.URL + "/auth?service=" + benchService + "&scope=" + benchScope
	b.writeUsers([]string{"load"}, accessOf(1))
	b.useUser("load")
	b.vaultPID = b.stack.Vault.Proc.cmd.Process.Pid
	b.relayPID = b.stack.Relay.Proc.cmd.Process.Pid
	b.pluginPID = pluginPID(t, b.vaultPID)
	return b
}

// useUser makes the load requests authenticate as name.
func (b *loadBench) useUser(name string) {
	b.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+benchPassword))
}

// accessOf is an access string of n entries. Only the last one grants
// benchScope, so a grant walks all the others first.
func accessOf(n int) string {
	entries := make([]string, 0, n)
	for i := range n - 1 {
		entries = append(entries, fmt.Sprintf("repository:team%d/app-%d/*:pull,push", i, i))
	}
	return strings.Join(append(entries, benchScope), ";")
}

// writeUsers stores users with access through Vault's HTTP API, several at
// a time, with a precomputed password_hash so no write runs bcrypt.
func (b *loadBench) writeUsers(names []string, access string) {
	b.t.Helper()
	body, err := json.Marshal(map[string]string{"password_hash": b.hash, "access": access})
	if err != nil {
		b.t.Fatal(err)
	}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: userWriters}}
	names = slices.Clone(names)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range userWriters {
		wg.Go(func() {
			for {
				mu.Lock()
				if len(names) == 0 || firstErr != nil {
					mu.Unlock()
					return
				}
				name := names[len(names)-1]
				names = names[:len(names)-1]
				mu.Unlock()
				if err := b.writeUser(client, name, body); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.t.Fatal(firstErr)
	}
}

func (b *loadBench) writeUser(client *http.Client, name string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, b.stack.Vault.Addr+"/v1/"+benchService+"/users/"+name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", rootToken)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("writing user %s: %w", name, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("writing user %s: %d %s", name, resp.StatusCode, truncate(out, 300))
	}
	return nil
}

// warm makes one token request, so the credential cache holds the user's
// password (when it is on) and every lazy load has happened.
func (b *loadBench) warm() {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.tokenURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", b.auth)
	code, _, body := doHTTP(b.t, req)
	if code != http.StatusOK {
		b.t.Fatalf("warm-up token request: %d %s", code, truncate(body, 300))
	}
}

// run runs wrk against url; auth, when not empty, is sent as the
// Authorization header.
func (b *loadBench) run(url, auth string, conns int, d time.Duration) wrkResult {
	b.t.Helper()
	args := []string{"-t", strconv.Itoa(min(conns, 2)), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--timeout", "30s", "--latency", "-s", b.script}
	if auth != "" {
		args = append(args, "-H", "Authorization: "+auth)
	}
	args = append(args, url)
	before, machineBefore := b.cpu(), machineBusy()
	cmd := exec.Command(b.wrk, args...)
	out, err := cmd.CombinedOutput()
	after, machineAfter := b.cpu(), machineBusy()
	if err != nil {
		b.t.Fatalf("wrk -c %d %s: %v\n%s", conns, url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		b.t.Fatalf("wrk -c %d %s: %v\n%s", conns, url, err, out)
	}
	r.Conns = conns
	r.CPU = cpuUse{
		Relay:  after.Relay - before.Relay,
		Vault:  after.Vault - before.Vault,
		Plugin: after.Plugin - before.Plugin,
		Wrk:    cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(),
	}
	r.CPU.Others = max(0, machineAfter-machineBefore-r.CPU.Relay-r.CPU.Vault-r.CPU.Plugin-r.CPU.Wrk)
	return r
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	i := strings.Index(out, "WRK_RESULT ")
	if i < 0 {
		return r, errors.New("no WRK_RESULT line in wrk's output")
	}
	var durUS, p50, p99 float64
	if _, err := fmt.Sscanf(out[i:], "WRK_RESULT %f %d %d %d %f %f",
		&durUS, &r.Requests, &r.Non2xx, &r.SockErrs, &p50, &p99); err != nil {
		return r, fmt.Errorf("reading WRK_RESULT: %w", err)
	}
	us := func(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }
	r.Duration, r.P50, r.P99 = us(durUS), us(p50), us(p99)
	return r, nil
}

// loadRow is one line of the load table.
type loadRow struct {
	Mode string
	wrkResult
}

type loadResults struct {
	Rows []loadRow
	Peak memSample // highest RSS during the 64-connection warm run
}

func (l loadResults) find(mode string, conns int) wrkResult {
	for _, r := range l.Rows {
		if r.Mode == mode && r.Conns == conns {
			return r.wrkResult
		}
	}
	return wrkResult{}
}

const (
	modeFloor = "floor: GET ca/pem via Vault"
	modeWarm  = "token, warm cache"
	modeCold  = "token, cache off"
)

// loadTable measures the floor, warm tokens and tokens with the credential
// cache off at each connection count.
func (b *loadBench) loadTable() loadResults {
	var res loadResults
	svc := b.stack.Services[benchService]
	for _, c := range loadConns {
		b.t.Logf("load: floor, %d connections", c)
		res.Rows = append(res.Rows, loadRow{modeFloor, b.run(b.floorURL, "", c, loadDuration)})
	}
	for _, c := range loadConns {
		b.t.Logf("load: warm tokens, %d connections", c)
		b.warm()
		var r wrkResult
		if c == 64 {
			res.Peak = b.peakMemory(func() { r = b.run(b.tokenURL, b.auth, c, loadDuration) })
		} else {
			r = b.run(b.tokenURL, b.auth, c, loadDuration)
		}
		res.Rows = append(res.Rows, loadRow{modeWarm, r})
	}
	svc.WriteConfig(b.t, "credential_cache_ttl=0")
	for _, c := range loadConns {
		b.t.Logf("load: tokens with the cache off, %d connections", c)
		b.warm()
		res.Rows = append(res.Rows, loadRow{modeCold, b.run(b.tokenURL, b.auth, c, loadDuration)})
	}
	svc.WriteConfig(b.t, "credential_cache_ttl=5m")
	return res
}

// scaleRow is one line of the scale table: one user's token latency with
// that user's number of entries and the mount's number of users.
type scaleRow struct {
	Users, Entries int
	wrkResult
}

type scaleResults struct {
	Rows       []scaleRow
	WriteTime  time.Duration // storing the users added for the large mount
	Added      int
	IdleLarge  memSample // at rest with scaleUsers users
	PeakLarge  memSample // 64 connections, the scaleEntries user, scaleUsers users
	LoadLarge  wrkResult // that run
	AccessSize int       // bytes of an access string of scaleEntries entries
}

var scaleEntryCounts = []int{10, 100, scaleEntries}

// scaleTable measures one user's token latency (one connection, warm
// cache) with 10 and with scaleUsers users in the mount, for users of 10,
// 100 and scaleEntries entries.
func (b *loadBench) scaleTable() scaleResults {
	res := scaleResults{AccessSize: len(accessOf(scaleEntries))}
	// The load user plus one user per entry count, and fillers of
	// scaleEntries entries up to 10 users.
	for _, n := range scaleEntryCounts {
		b.writeUsers([]string{fmt.Sprintf("entries-%d", n)}, accessOf(n))
	}
	users := 1 + len(scaleEntryCounts)
	fillers := func(from, to int) []string {
		var names []string
		for i := from; i < to; i++ {
			names = append(names, fmt.Sprintf("filler-%05d", i))
		}
		return names
	}
	b.writeUsers(fillers(0, 10-users), accessOf(scaleEntries))
	b.measureScale(&res, 10)

	b.t.Logf("scale: writing %d users of %d entries (%d KB each)", scaleUsers-10, scaleEntries, res.AccessSize/1024)
	start := time.Now()
	res.Added = scaleUsers - 10
	b.writeUsers(fillers(10-users, scaleUsers-users), accessOf(scaleEntries))
	res.WriteTime = time.Since(start)
	res.IdleLarge = b.memory()
	b.measureScale(&res, scaleUsers)

	b.useUser(fmt.Sprintf("entries-%d", scaleEntries))
	b.warm()
	b.t.Logf("scale: 64 connections, %d-entry user, %d users", scaleEntries, scaleUsers)
	res.PeakLarge = b.peakMemory(func() { res.LoadLarge = b.run(b.tokenURL, b.auth, 64, loadDuration) })
	return res
}

func (b *loadBench) measureScale(res *scaleResults, users int) {
	for _, n := range scaleEntryCounts {
		b.useUser(fmt.Sprintf("entries-%d", n))
		b.warm()
		b.t.Logf("scale: %d users, user of %d entries", users, n)
		res.Rows = append(res.Rows, scaleRow{users, n, b.run(b.tokenURL, b.auth, 1, scaleDuration)})
	}
}

// bcryptCheckTime is the time of one bcrypt.CompareHashAndPassword of a
// cost-10 hash on this machine: what a token costs with the cache off.
func bcryptCheckTime(hash string) time.Duration {
	r := testing.Benchmark(func(tb *testing.B) {
		for tb.Loop() {
			_ = bcrypt.CompareHashAndPassword([]byte(hash), []byte(benchPassword))
		}
	})
	return time.Duration(r.NsPerOp())
}

// memSample is the resident memory (VmRSS) of the plugin, the relay and
// Vault, in KiB.
type memSample struct {
	Plugin, Relay, Vault int64
}

func (b *loadBench) memory() memSample {
	return memSample{Plugin: rssKiB(b.pluginPID), Relay: rssKiB(b.relayPID), Vault: rssKiB(b.vaultPID)}
}

// peakMemory runs load and returns the highest RSS of each process seen
// while it ran, sampled every 100ms.
func (b *loadBench) peakMemory(load func()) memSample {
	pids := [3]int{b.pluginPID, b.relayPID, b.vaultPID}
	var peak [3]int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, pid := range pids {
				peak[i] = max(peak[i], rssKiB(pid))
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	load()
	close(stop)
	<-done
	return memSample{Plugin: peak[0], Relay: peak[1], Vault: peak[2]}
}

// cpu reads the CPU time the relay, Vault and the plugin have used so far.
func (b *loadBench) cpu() cpuUse {
	return cpuUse{Relay: cpuTime(b.relayPID), Vault: cpuTime(b.vaultPID), Plugin: cpuTime(b.pluginPID)}
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime reads utime + stime of a process; 0 when it cannot.
func cpuTime(pid int) time.Duration {
	fields := statFields(pid)
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * clockTick
}

// machineBusy reads the CPU time all cores have spent on anything but
// idling, from the first line of /proc/stat.
func machineBusy() time.Duration {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	var busy int64
	for i, f := range fields[1:min(len(fields), 9)] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(f, 10, 64)
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (which may hold blanks): state, ppid, …
func statFields(pid int) []string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
}

// pluginPID finds the plugin process: the child of Vault whose executable
// is the plugin binary.
func pluginPID(t testing.TB, vaultPID int) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fields := statFields(pid)
		if len(fields) < 2 || fields[1] != strconv.Itoa(vaultPID) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		if err == nil && filepath.Base(exe) == pluginName {
			return pid
		}
	}
	t.Fatalf("no %s child process of Vault (pid %d)", pluginName, vaultPID)
	return 0
}

// rssKiB reads VmRSS from /proc/<pid>/status; 0 when it cannot.
func rssKiB(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func millis(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func writeLoadTable(w io.Writer, l loadResults, perCheck time.Duration, idle memSample) {
	fmt.Fprintf(w, "### Load: wrk → relay → Vault → plugin, loopback, %s per row\n\n", loadDuration)
	fmt.Fprintf(w, "One user, one scope (`%s`), ES256 tokens; wrk -t min(c,2) -c c.\n\n", benchScope)
	fmt.Fprintln(w, "relay, Vault, plugin, wrk: CPU time per request of each process, in µs. busy: the four together,")
	fmt.Fprintln(w, "as a share of all cores; others: what the rest of the machine used meanwhile (should be near 0%).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| what | conns | ok/s | p50 | p99 | non-2xx | socket errors | relay | Vault | plugin | wrk | busy | others |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range l.Rows {
		c := r.CPU
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |\n",
			r.Mode, r.Conns, r.OKPerSec(), millis(r.P50), millis(r.P99), r.Non2xx, r.SockErrs,
			r.perRequest(c.Relay), r.perRequest(c.Vault), r.perRequest(c.Plugin), r.perRequest(c.Wrk),
			r.share(c.Relay+c.Vault+c.Plugin+c.Wrk), r.share(c.Others))
	}

	best := func(mode string) (wrkResult, float64) {
		var top wrkResult
		for _, c := range loadConns {
			if r := l.find(mode, c); r.OKPerSec() > top.OKPerSec() {
				top = r
			}
		}
		return top, top.OKPerSec()
	}
	warm, warmRate := best(modeWarm)
	_, coldRate := best(modeCold)
	cores := runtime.NumCPU()
	bound := float64(cores) / perCheck.Seconds()

	fmt.Fprintln(w, "\nRatios:")
	fmt.Fprintf(w, "- warm tokens/s (best, %d conns: %.0f/s) vs docker_auth's %.0f/s: **%.0f×**\n",
		warm.Conns, warmRate, dockerAuthTokensPerSec, warmRate/dockerAuthTokensPerSec)
	for _, c := range loadConns {
		wr, fl := l.find(modeWarm, c), l.find(modeFloor, c)
		fmt.Fprintf(w, "- warm vs floor at %d conns: %.0f / %.0f = %s of the floor's rate; p50 %s vs %s\n",
			c, wr.OKPerSec(), fl.OKPerSec(), ratio(wr.OKPerSec(), fl.OKPerSec()), millis(wr.P50), millis(fl.P50))
	}
	fmt.Fprintf(w, "- cache off vs the bcrypt bound: one bcrypt check (cost %d) takes %s here, so %d cores allow %.1f checks/s; best cache-off rate %.1f/s = %s of the bound\n",
		bcrypt.DefaultCost, millis(perCheck), cores, bound, coldRate, ratio(coldRate, bound))
	fmt.Fprintf(w, "- p99 at 64 conns: floor %s, warm %s, cache off %s\n",
		millis(l.find(modeFloor, 64).P99), millis(l.find(modeWarm, 64).P99), millis(l.find(modeCold, 64).P99))

	fmt.Fprintln(w, "\nMemory (VmRSS):")
	fmt.Fprintln(w, "\n| when | plugin | relay | Vault |")
	fmt.Fprintln(w, "|---|--:|--:|--:|")
	fmt.Fprintf(w, "| idle, 1 user | %s | %s | %s |\n", mib(idle.Plugin), mib(idle.Relay), mib(idle.Vault))
	fmt.Fprintf(w, "| peak under 64 conns, warm, 1 user | %s | %s | %s |\n", mib(l.Peak.Plugin), mib(l.Peak.Relay), mib(l.Peak.Vault))
}

func writeScaleTable(w io.Writer, s scaleResults) {
	fmt.Fprintf(w, "\n### Scale: one user's token latency, 1 connection, warm cache, %s per row\n\n", scaleDuration)
	fmt.Fprintf(w, "Fillers have %d entries (%d bytes of access string each); %d users written in %s (%.0f users/s, password_hash, %d writers).\n\n",
		scaleEntries, s.AccessSize, s.Added, s.WriteTime.Round(time.Second), float64(s.Added)/s.WriteTime.Seconds(), userWriters)
	fmt.Fprintln(w, "relay, Vault, plugin: CPU time per request, in µs; others: CPU the rest of the machine used meanwhile.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| users in mount | entries of the user | p50 | p99 | ok/s | relay | Vault | plugin | others |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range s.Rows {
		fmt.Fprintf(w, "| %d | %d | %s | %s | %.0f | %s | %s | %s | %s |\n", r.Users, r.Entries, millis(r.P50), millis(r.P99), r.OKPerSec(),
			r.perRequest(r.CPU.Relay), r.perRequest(r.CPU.Vault), r.perRequest(r.CPU.Plugin), r.share(r.CPU.Others))
	}
	l := s.LoadLarge
	fmt.Fprintf(w, "\nWith 64 connections, %d users, the %d-entry user: %.0f ok/s, p50 %s, p99 %s, %d non-2xx; per request relay %s µs, Vault %s µs, plugin %s µs.\n",
		scaleUsers, scaleEntries, l.OKPerSec(), millis(l.P50), millis(l.P99), l.Non2xx,
		l.perRequest(l.CPU.Relay), l.perRequest(l.CPU.Vault), l.perRequest(l.CPU.Plugin))
	fmt.Fprintln(w, "\n| when | plugin | relay | Vault |")
	fmt.Fprintln(w, "|---|--:|--:|--:|")
	fmt.Fprintf(w, "| idle, %d users | %s | %s | %s |\n", scaleUsers, mib(s.IdleLarge.Plugin), mib(s.IdleLarge.Relay), mib(s.IdleLarge.Vault))
	fmt.Fprintf(w, "| peak under 64 conns, %d-entry user, %d users | %s | %s | %s |\n",
		scaleEntries, scaleUsers, mib(s.PeakLarge.Plugin), mib(s.PeakLarge.Relay), mib(s.PeakLarge.Vault))
}
