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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The load measurements of `make bench`: wrk against the real relay, Vault
// dev server and plugin on loopback, the same request against docker_auth
// when DOCKER_AUTH_BIN names its auth_server, and CPU profiles of the
// three processes under load. Numbers are printed, never asserted; the
// report goes to stdout and, when BENCH_REPORT names a file, there too.
// BENCH_PLOT_DATA names a file for the picture's data (scripts/bench.sh
// draws it with gnuplot); BENCH_PROFILE_DIR keeps the raw profiles.
//
// Run: go test -tags 'e2e bench' -run '^TestBench_load$' -v -timeout 20m ./e2e/

const (
	benchService  = "registry"
	benchUser     = "load"
	benchPassword = "bench-password-7c41d2"
	benchScope    = "repository:team/app:pull,push"

	loadDuration    = 10 * time.Second // each row of the load table
	scaleDuration   = 5 * time.Second  // each row of the scale table
	profileDuration = 15 * time.Second // the CPU profiles under load
	scaleUsers      = 10000
	scaleEntries    = 1000
	userWriters     = 8 // concurrent user writes to Vault
)

var loadConns = []int{1, 8, 64}

// The series of the load table, in the order they run.
const (
	seriesFloor  = "floor: GET ca/pem on Vault"
	seriesWarm   = "relay, warm cache"
	seriesAlone  = "relay, warm, one call per token"
	seriesBatch  = "relay, warm, batch token"
	seriesCold   = "relay, cache off"
	seriesDocker = "docker_auth"
)

// target is what wrk loads: a URL, the Authorization header (empty for
// none) and the process in front of Vault (the relay or docker_auth; 0
// for the floor, which goes to Vault directly).
type target struct {
	url   string
	auth  string
	front int
}

// wrkResult is one wrk run, read from the summary the Lua script prints.
type wrkResult struct {
	Conns         int
	Duration      time.Duration
	Requests      int64
	Non2xx        int64 // responses other than 2xx/3xx
	SockErrs      int64 // connect, read, write errors and timeouts
	P50, P99, Max time.Duration
	CPU           cpuUse // CPU time each process spent during the run
}

// OKPerSec is the rate of successful responses (tokens, or PEM bundles).
func (r wrkResult) OKPerSec() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Requests-r.Non2xx-r.SockErrs) / r.Duration.Seconds()
}

// Failed is the number of requests that got no 2xx answer.
func (r wrkResult) Failed() int64 { return r.Non2xx + r.SockErrs }

// cpuUse is CPU time (user and system) of the processes on the path, and
// of everything else the machine ran meanwhile.
type cpuUse struct {
	Front, Vault, Plugin, Wrk time.Duration
	Others                    time.Duration
}

// wrkReport is a Lua script for wrk: its done() hook prints one line of
// figures that wrk's human report has only in rounded form.
const wrkReport = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %.0f %.0f %.0f\n",
    summary.duration, summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

// loadBench is the state of one measuring run.
type loadBench struct {
	t      *testing.T
	vault  *Vault
	svc    *Service
	wrk    string
	script string
	hash   string // bcrypt hash of benchPassword at cost 10

	relay      *Relay // with the usual service token, profile listener on
	relayPprof string // its profile listener, http://…/debug/pprof/
	batchRelay *Relay // the same with a batch token
	aloneRelay *Relay // the same with storage.vault.batch: false
	docker     *dockerAuth

	auth     string // Authorization header value of the current user
	floorURL string // GET /v1/<service>/ca/pem straight to Vault

	vaultPID, pluginPID int
}

// TestBench_load prints the load, profile, scale and memory tables of
// `make bench`.
func TestBench_load(t *testing.T) {
	b := newLoadBench(t)
	var report strings.Builder
	b.t.Logf("bcrypt: measuring one CompareHashAndPassword at cost %d", bcrypt.DefaultCost)
	perCheck := bcryptCheckTime(b.hash)

	idle := b.memory()
	loadBefore := loadAverage()
	load := b.loadTable()
	writeLoadTable(&report, load, perCheck, idle, loadBefore, b.docker)

	prof := b.profile()
	writeProfiles(&report, prof, load)

	scale := b.scaleTable()
	writeScaleTable(&report, scale)
	writeTargets(&report, load, scale, perCheck)

	fmt.Print("\n" + report.String())
	if path := os.Getenv("BENCH_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
	if path := os.Getenv("BENCH_PLOT_DATA"); path != "" {
		if err := os.WriteFile(path, plotData(load), 0o644); err != nil {
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

	b.vault = StartVault(t)
	b.svc = b.vault.EnableService(t, benchService)
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b.relayPprof = "http://" + pprofAddr + "/debug/pprof/"
	b.relay = StartRelay(t, RelayOptions{Vault: b.vault, Services: []string{benchService}, Args: []string{"-pprof", pprofAddr}})
	b.batchRelay = StartRelay(t, RelayOptions{Vault: b.vault, Token: b.batchToken()})
	b.aloneRelay = StartRelay(t, RelayOptions{Vault: b.vault, Services: []string{benchService}, NoBatch: true})
	b.floorURL = b.vault.Addr + "/v1/" + benchService + "/ca/pem"
	b.writeUsers([]string{benchUser}, accessOf(1))
	b.useUser(benchUser)
	b.vaultPID = b.vault.Proc.cmd.Process.Pid
	b.pluginPID = pluginPID(t, b.vaultPID)
	b.docker = startDockerAuth(t, b.hash)
	return b
}

// batchToken is a batch token with the relay's policy (which RelayToken
// wrote): Vault reads such a token from the token itself, not from its
// token store, so it shows what the lookup of the relay's token costs.
func (b *loadBench) batchToken() string {
	b.t.Helper()
	policy := "registry-relay-" + benchService // RelayToken's name for it
	token := strings.TrimSpace(b.vault.CLI(b.t, "token", "create", "-type=batch", "-policy="+policy,
		"-no-default-policy", "-ttl=4h", "-field=token"))
	if token == "" {
		b.t.Fatal("vault token create -type=batch returned no token")
	}
	return token
}

// useUser makes the load requests authenticate as name.
func (b *loadBench) useUser(name string) {
	b.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+benchPassword))
}

// tokenQuery is the request every token series sends: the registry's
// GET /auth with service and scope.
const tokenQuery = "/auth?service=" + benchService + "&scope=" + benchScope

func (b *loadBench) relayTarget(r *Relay) target {
	return target{url: r.URL + tokenQuery, auth: b.auth, front: r.Proc.cmd.Process.Pid}
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
	req, err := http.NewRequest(http.MethodPost, b.vault.Addr+"/v1/"+benchService+"/users/"+name, bytes.NewReader(body))
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

// warm makes one request to tg and wants a 200: for a token, the
// credential cache then holds the user's password (when it is on) and
// every lazy load has happened.
func (b *loadBench) warm(tg target) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, tg.url, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	if tg.auth != "" {
		req.Header.Set("Authorization", tg.auth)
	}
	code, _, body := doHTTP(b.t, req)
	if code != http.StatusOK {
		b.t.Fatalf("warm-up request %s: %d %s", tg.url, code, truncate(body, 300))
	}
}

// run runs wrk against tg with conns connections for d.
func (b *loadBench) run(tg target, conns int, d time.Duration) wrkResult {
	b.t.Helper()
	args := []string{"-t", strconv.Itoa(min(conns, 2)), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--timeout", "30s", "--latency", "-s", b.script}
	if tg.auth != "" {
		args = append(args, "-H", "Authorization: "+tg.auth)
	}
	args = append(args, tg.url)
	before, machineBefore := b.cpu(tg), machineBusy()
	cmd := exec.Command(b.wrk, args...)
	out, err := cmd.CombinedOutput()
	after, machineAfter := b.cpu(tg), machineBusy()
	if err != nil {
		b.t.Fatalf("wrk -c %d %s: %v\n%s", conns, tg.url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		b.t.Fatalf("wrk -c %d %s: %v\n%s", conns, tg.url, err, out)
	}
	r.Conns = conns
	r.CPU = cpuUse{
		Front:  after.Front - before.Front,
		Vault:  after.Vault - before.Vault,
		Plugin: after.Plugin - before.Plugin,
		Wrk:    cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(),
	}
	r.CPU.Others = max(0, machineAfter-machineBefore-r.CPU.Front-r.CPU.Vault-r.CPU.Plugin-r.CPU.Wrk)
	return r
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	i := strings.Index(out, "WRK_RESULT ")
	if i < 0 {
		return r, errors.New("no WRK_RESULT line in wrk's output")
	}
	var durUS, p50, p99, longest float64
	if _, err := fmt.Sscanf(out[i:], "WRK_RESULT %f %d %d %d %f %f %f",
		&durUS, &r.Requests, &r.Non2xx, &r.SockErrs, &p50, &p99, &longest); err != nil {
		return r, fmt.Errorf("reading WRK_RESULT: %w", err)
	}
	us := func(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }
	r.Duration, r.P50, r.P99, r.Max = us(durUS), us(p50), us(p99), us(longest)
	return r, nil
}

// loadRow is one line of the load table.
type loadRow struct {
	Series string
	wrkResult
}

type loadResults struct {
	Rows       []loadRow
	Peak       memSample // highest RSS during the 64-connection warm run
	DockerPeak int64     // docker_auth's highest RSS under 64 connections, KiB
}

func (l loadResults) find(series string, conns int) wrkResult {
	for _, r := range l.Rows {
		if r.Series == series && r.Conns == conns {
			return r.wrkResult
		}
	}
	return wrkResult{}
}

// best is the series' row with the highest rate.
func (l loadResults) best(series string) wrkResult {
	var top wrkResult
	for _, c := range loadConns {
		if r := l.find(series, c); r.OKPerSec() > top.OKPerSec() {
			top = r
		}
	}
	return top
}

// has reports whether the series ran.
func (l loadResults) has(series string) bool { return l.find(series, loadConns[0]).Requests > 0 }

// loadTable measures every series at each connection count.
func (b *loadBench) loadTable() loadResults {
	var res loadResults
	sweep := func(series string, tg target, at64 func(load func())) {
		for _, c := range loadConns {
			b.t.Logf("load: %s, %d connections", series, c)
			if tg.auth != "" {
				b.warm(tg)
			}
			var r wrkResult
			load := func() { r = b.run(tg, c, loadDuration) }
			if c == 64 && at64 != nil {
				at64(load)
			} else {
				load()
			}
			res.Rows = append(res.Rows, loadRow{series, r})
		}
	}
	sweep(seriesFloor, target{url: b.floorURL}, nil)
	sweep(seriesWarm, b.relayTarget(b.relay), func(load func()) { res.Peak = b.peakMemory(load) })
	sweep(seriesAlone, b.relayTarget(b.aloneRelay), nil)
	sweep(seriesBatch, b.relayTarget(b.batchRelay), nil)
	b.svc.WriteConfig(b.t, "credential_cache_ttl=0")
	sweep(seriesCold, b.relayTarget(b.relay), nil)
	b.svc.WriteConfig(b.t, "credential_cache_ttl=5m")
	if b.docker != nil {
		tg := target{url: b.docker.URL + tokenQuery, auth: b.auth, front: b.docker.PID()}
		sweep(seriesDocker, tg, func(load func()) {
			res.DockerPeak = peakRSS(tg.front, load)
		})
	}
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

func (s scaleResults) find(users, entries int) wrkResult {
	for _, r := range s.Rows {
		if r.Users == users && r.Entries == entries {
			return r.wrkResult
		}
	}
	return wrkResult{}
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
	tg := b.relayTarget(b.relay)
	b.warm(tg)
	b.t.Logf("scale: 64 connections, %d-entry user, %d users", scaleEntries, scaleUsers)
	res.PeakLarge = b.peakMemory(func() { res.LoadLarge = b.run(tg, 64, loadDuration) })
	return res
}

func (b *loadBench) measureScale(res *scaleResults, users int) {
	for _, n := range scaleEntryCounts {
		b.useUser(fmt.Sprintf("entries-%d", n))
		tg := b.relayTarget(b.relay)
		b.warm(tg)
		b.t.Logf("scale: %d users, user of %d entries", users, n)
		res.Rows = append(res.Rows, scaleRow{users, n, b.run(tg, 1, scaleDuration)})
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

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// memSample is the resident memory (VmRSS) of the plugin, the relay and
// Vault, in KiB.
type memSample struct {
	Plugin, Relay, Vault int64
}

func (b *loadBench) memory() memSample {
	return memSample{Plugin: rssKiB(b.pluginPID), Relay: rssKiB(b.relay.Proc.cmd.Process.Pid), Vault: rssKiB(b.vaultPID)}
}

// peakMemory runs load and returns the highest RSS of the plugin, the
// relay and Vault seen while it ran.
func (b *loadBench) peakMemory(load func()) memSample {
	peak := peakRSSOf([]int{b.pluginPID, b.relay.Proc.cmd.Process.Pid, b.vaultPID}, load)
	return memSample{Plugin: peak[0], Relay: peak[1], Vault: peak[2]}
}

// peakRSS runs load and returns the highest RSS of pid seen meanwhile.
func peakRSS(pid int, load func()) int64 { return peakRSSOf([]int{pid}, load)[0] }

// peakRSSOf runs load and returns the highest RSS of each process seen
// while it ran, sampled every 100ms.
func peakRSSOf(pids []int, load func()) []int64 {
	peak := make([]int64, len(pids))
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
	return peak
}

// cpu reads the CPU time the front process of tg, Vault and the plugin
// have used so far.
func (b *loadBench) cpu(tg target) cpuUse {
	return cpuUse{Front: cpuTime(tg.front), Vault: cpuTime(b.vaultPID), Plugin: cpuTime(b.pluginPID)}
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime reads utime + stime of a process; 0 when it cannot (pid 0).
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

// pluginPID finds the plugin process: the child of Vault whose executable
// is the plugin binary.
func pluginPID(t testing.TB, vaultPID int) int {
	t.Helper()
	pid := findPluginPID(vaultPID)
	if pid == 0 {
		t.Fatalf("no %s child process of Vault (pid %d)", pluginName, vaultPID)
	}
	return pid
}
