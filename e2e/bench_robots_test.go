//go:build e2e && bench

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Robot accounts in `make bench` (issue 23): creds/ issue rate at
// robotIssuers concurrent callers, which also makes robotsLive live robots;
// then, with those robots live, a warm robot's token against a warm user's
// (p50, the two series interleaved in one run). Printed, never asserted.
// The mass expiry of robots is TestBench_robotExpiry (bench_scale_test.go),
// on Raft storage, which has a size.
//
// Run: go test -tags 'e2e bench' -run '^TestBench_robots$' -v -timeout 20m ./e2e/
const (
	robotsLive      = 10000
	robotIssuers    = 8
	robotRole       = "bench"
	robotRounds     = 3 // user and robot series, interleaved
	robotLoadConns  = 1
	robotLoadPeriod = 8 * time.Second
)

func TestBench_robots(t *testing.T) {
	b := &loadBench{t: t, wrk: tool(t, "wrk")}
	b.script = filepath.Join(t.TempDir(), "report.lua")
	mustWrite(t, b.script, []byte(wrkReport))
	b.vault = StartVault(t)
	b.svc = b.vault.EnableService(t, benchService)
	b.relay = StartRelay(t, RelayOptions{Vault: b.vault, Services: []string{benchService}})
	b.vaultPID = b.vault.Proc.cmd.Process.Pid
	b.pluginPID = pluginPID(t, b.vaultPID)
	// A user at the default bcrypt cost, as TestBench_load has it.
	b.svc.WriteUser(t, benchUser, benchPassword, benchScope)
	b.vault.CLI(t, "write", benchService+"/roles/"+robotRole, "access="+benchScope, "ttl=2h", "max_ttl=4h")

	issued, failed, took, one := issueRobots(t, b.vault, robotRole, robotsLive, robotIssuers)
	if failed > 0 {
		t.Errorf("%d of %d creds/ reads failed", failed, robotsLive)
	}

	b.useUser(benchUser)
	user := b.relayTarget(b.relay)
	robot := target{url: user.url, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(one.User+":"+one.Password)), front: user.front}
	b.warm(user)
	b.warm(robot)
	var userRuns, robotRuns []wrkResult
	for range robotRounds {
		userRuns = append(userRuns, b.run(user, robotLoadConns, robotLoadPeriod))
		robotRuns = append(robotRuns, b.run(robot, robotLoadConns, robotLoadPeriod))
	}
	live := len(b.vault.liveRobots(t, benchService, robotRole))

	var report strings.Builder
	fmt.Fprintf(&report, "\n### Robot accounts (issue 23)\n\n")
	fmt.Fprintf(&report, "creds/%s read %d times by %d concurrent callers (root token, HTTP API): %d robots in %s, **%.0f robots/s**; %d live robots listed afterwards.\n\n",
		robotRole, robotsLive, robotIssuers, issued, took.Round(time.Millisecond), float64(issued)/took.Seconds(), live)
	fmt.Fprintf(&report, "Warm tokens through the relay at %d connection, with those robots live, %s per run, the two series interleaved:\n\n", robotLoadConns, robotLoadPeriod)
	fmt.Fprintln(&report, "| run | user p50 | robot p50 | user tokens/s | robot tokens/s |")
	fmt.Fprintln(&report, "|---|---|---|---|---|")
	for i := range userRuns {
		u, r := userRuns[i], robotRuns[i]
		fmt.Fprintf(&report, "| %d | %s | %s | %.0f | %.0f |\n", i+1, millis(u.P50), millis(r.P50), u.OKPerSec(), r.OKPerSec())
	}
	up, rp := medianP50(userRuns), medianP50(robotRuns)
	fmt.Fprintf(&report, "\nMedian of the runs' p50: user %s, robot %s: robot/user ×%.2f (target: within 10%%).\n",
		millis(up), millis(rp), float64(rp)/float64(max(up, 1)))
	for _, runs := range [][]wrkResult{userRuns, robotRuns} {
		for _, r := range runs {
			if r.Failed() > 0 {
				t.Errorf("%d of %d token requests failed", r.Failed(), r.Requests)
			}
		}
	}

	fmt.Print(report.String())
	if path := os.Getenv("BENCH_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
}

func medianP50(runs []wrkResult) time.Duration {
	return medianOf(runs, func(r wrkResult) time.Duration { return r.P50 })
}

// issueRobots reads creds/<role> n times with callers goroutines and
// returns how many succeeded and failed, the time taken, and one robot.
func issueRobots(t *testing.T, v *Vault, role string, n, callers int) (issued, failed int64, took time.Duration, one robotCreds) {
	t.Helper()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: callers}}
	var left atomic.Int64
	left.Store(int64(n))
	var first sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				req, err := http.NewRequest(http.MethodGet, v.Addr+"/v1/"+benchService+"/creds/"+role, nil)
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("X-Vault-Token", rootToken)
				resp, err := client.Do(req)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					atomic.AddInt64(&failed, 1)
					continue
				}
				atomic.AddInt64(&issued, 1)
				first.Do(func() {
					var out map[string]any
					if err := json.Unmarshal(body, &out); err != nil {
						t.Error(err)
						return
					}
					one = robotCredsOf(t, out)
				})
			}
		})
	}
	wg.Wait()
	return issued, failed, time.Since(start), one
}
