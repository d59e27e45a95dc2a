//go:build e2e && soak

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The soak of `make soak` (scripts/soak.sh): a single-node Raft Vault, the
// relay, token traffic at half the measured warm throughput for
// SOAK_DURATION (default 30m), with churn — users created, changed and
// deleted, a key rotation every SOAK_ROTATE (default 3m), refresh tokens
// issued and used — sampling the relay's and the plugin's memory and
// goroutines every SOAK_SAMPLE (default 30s). It asserts 0 failed requests
// and memory and goroutines flat (the last third of the run within 10 % of
// the first third after warm-up, with a small absolute slack for short
// runs), and prints every sample.

func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// soakSample is one sample of the processes and the traffic.
type soakSample struct {
	at                  time.Duration
	relayRSS, pluginRSS int64 // bytes
	relayGor, pluginGor int
	sent, failed        int64 // in the window
	p99                 time.Duration
	storageBytes        int64
}

func TestSoak_churn(t *testing.T) {
	duration := envDuration(t, "SOAK_DURATION", 30*time.Minute)
	rotateEvery := envDuration(t, "SOAK_ROTATE", 3*time.Minute)
	sampleEvery := envDuration(t, "SOAK_SAMPLE", 30*time.Second)

	c := StartCluster(t, 1)
	v := c.Nodes[0]
	// The plugin serves its profiles on loopback, for its goroutine count.
	pprofPort := freePort(t)
	sum := sha256Hex([]byte(readFileString(t, bins.plugin)))
	v.CLI(t, "plugin", "register", "-sha256="+sum, "-version="+pluginVersion,
		fmt.Sprintf("-env=VAULT_PLUGIN_REGISTRY_PPROF=127.0.0.1:%d", pprofPort), "secret", pluginName)
	svc := v.EnableService(t, "registry")
	svc.WriteConfig(t, "lockout_threshold=5")
	// Load users from cheap hashes, so that set-up spends no bcrypt time.
	var users []user
	for i := range 50 {
		u := user{fmt.Sprintf("soak%02d", i), fmt.Sprintf("soak-pw-%02d-a1", i), fmt.Sprintf("repository:soak%02d/**:pull", i)}
		hash, err := bcrypt.GenerateFromPassword([]byte(u.password), 4)
		if err != nil {
			t.Fatal(err)
		}
		v.CLI(t, "write", svc.Name+"/users/"+u.name, "password_hash="+string(hash), "access="+u.access)
		users = append(users, u)
	}
	relay := StartRelay(t, RelayOptions{Vault: v, Services: []string{svc.Name}})
	relayPID := relay.Proc.cmd.Process.Pid
	for _, u := range users {
		if code, _, body := relay.Token(t, svc.Name, u.name, u.password, "repository:"+u.name+"/app:pull"); code != http.StatusOK {
			t.Fatalf("first token of %s: %d %s", u.name, code, truncate(body, 200))
		}
	}

	rate := soakRate(t, relay, svc.Name, users)
	loadClient.CloseIdleConnections()
	idleBefore := relayMetric(relay, "go_goroutines")
	dataDir := filepath.Join(c.nodeDir(0), "data")
	storageStart := dirSize(t, dataDir)
	t.Logf("MEASURE soak rate=%d/s duration=%s rotate_every=%s storage_start=%d", rate, duration, rotateEvery, storageStart)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var window []time.Duration
	var sent, failed atomic.Int64
	var totalSent, totalFailed atomic.Int64
	failures := map[string]int{}
	record := func(d time.Duration, why string) {
		sent.Add(1)
		totalSent.Add(1)
		mu.Lock()
		defer mu.Unlock()
		window = append(window, d)
		if why != "" {
			failed.Add(1)
			totalFailed.Add(1)
			failures[why]++
		}
	}

	// Token traffic, open loop.
	jobs := make(chan time.Time, rate)
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := 0
			for due := range jobs {
				i++
				u := users[(int(due.UnixNano())+i)%len(users)]
				code, _, body := soakGet(relay, svc.Name, u)
				why := ""
				if code != http.StatusOK {
					why = fmt.Sprintf("%d %s", code, truncate(body, 100))
				}
				record(time.Since(due), why)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case due := <-tick.C:
				select {
				case jobs <- due:
				default:
					record(0, "dropped: no worker free")
				}
			}
		}
	}()

	// Churn: a user created, one changed, one deleted every second; a
	// refresh token issued and used twice a second; a key rotation every
	// rotateEvery.
	var rounds, rotations atomic.Int64
	churnErrors := map[string]int{}
	var churnMu sync.Mutex
	churnFail := func(what string, err error) {
		churnMu.Lock()
		defer churnMu.Unlock()
		churnErrors[what+": "+err.Error()]++
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		rotate := time.NewTicker(rotateEvery)
		defer rotate.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-rotate.C:
				rotations.Add(1)
				if _, errOut, err := v.TryCLI("", "write", "-f", svc.Name+"/keys/rotate"); err != nil {
					churnFail("rotate", fmt.Errorf("%v %s", err, errOut))
				}
			case <-tick.C:
				rounds.Add(1)
				name := func(i int) string { return fmt.Sprintf("churn%06d", i) }
				if _, errOut, err := v.TryCLI("", "write", svc.Name+"/users/"+name(n), "password=churn-pw-a-"+strconv.Itoa(n), "access=repository:churn/**:pull"); err != nil {
					churnFail("create", fmt.Errorf("%v %s", err, errOut))
				}
				if code, _, _ := soakGet(relay, svc.Name, user{name(n), "churn-pw-a-" + strconv.Itoa(n), ""}); code != http.StatusOK {
					churnFail("cold token", fmt.Errorf("%d", code))
				}
				if n >= 1 {
					if _, errOut, err := v.TryCLI("", "write", svc.Name+"/users/"+name(n-1), "password=churn-pw-b-"+strconv.Itoa(n-1), "access=repository:churn/**:pull,push"); err != nil {
						churnFail("change", fmt.Errorf("%v %s", err, errOut))
					}
				}
				if n >= 2 {
					if _, errOut, err := v.TryCLI("", "delete", svc.Name+"/users/"+name(n-2)); err != nil {
						churnFail("delete", fmt.Errorf("%v %s", err, errOut))
					}
				}
				for range 2 {
					u := users[n%len(users)]
					rt, err := soakRefresh(relay, svc.Name, u)
					if err != nil {
						churnFail("refresh", err)
					} else if rt == "" {
						churnFail("refresh", fmt.Errorf("no refresh token"))
					}
				}
			}
		}
	}()

	start := time.Now()
	var samples []soakSample
	sample := func() {
		mu.Lock()
		w := window
		window = nil
		mu.Unlock()
		sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
		s := soakSample{
			at:       time.Since(start).Round(time.Second),
			relayRSS: rssKiB(relayPID) << 10, sent: sent.Swap(0), failed: failed.Swap(0), p99: quantile(w, 0.99),
			storageBytes: dirSize(t, dataDir),
		}
		s.relayGor = int(relayMetric(relay, "go_goroutines"))
		if pids := pluginPIDs(t, v.pluginDir); len(pids) == 1 {
			s.pluginRSS = rssKiB(pids[0]) << 10
		}
		s.pluginGor = pluginGoroutines(pprofPort)
		samples = append(samples, s)
		t.Logf("MEASURE soak sample at=%s relay_rss=%.1fMiB relay_goroutines=%d plugin_rss=%.1fMiB plugin_goroutines=%d requests=%d failed=%d p99=%s storage=%d",
			s.at, mib(s.relayRSS), s.relayGor, mib(s.pluginRSS), s.pluginGor, s.sent, s.failed, ms(s.p99), s.storageBytes)
	}
	ticker := time.NewTicker(sampleEvery)
	for time.Since(start) < duration {
		<-ticker.C
		sample()
	}
	ticker.Stop()
	close(stop)
	wg.Wait()
	// Churn stopped: the storage after the pruning of what churn left, and
	// the relay's goroutines at rest, as before the traffic (a leak stays).
	loadClient.CloseIdleConnections()
	time.Sleep(sampleEvery)
	storageEnd := dirSize(t, dataDir)
	idleAfter := relayMetric(relay, "go_goroutines")
	t.Logf("MEASURE soak relay_goroutines_at_rest before=%.0f after=%.0f", idleBefore, idleAfter)
	if idleAfter > idleBefore+10 {
		t.Errorf("the relay has %.0f goroutines at rest after the soak, %.0f before it", idleAfter, idleBefore)
	}

	t.Logf("MEASURE soak total requests=%d failed=%d rate=%.0f/s churn_rounds=%d rotations=%d storage_start=%d storage_end=%d churn_errors=%v failures=%v",
		totalSent.Load(), totalFailed.Load(), float64(totalSent.Load())/duration.Seconds(), rounds.Load(), rotations.Load(),
		storageStart, storageEnd, churnErrors, failures)
	if totalFailed.Load() > 0 {
		t.Errorf("%d of %d token requests failed: %v", totalFailed.Load(), totalSent.Load(), failures)
	}
	if len(churnErrors) > 0 {
		t.Errorf("churn errors: %v", churnErrors)
	}
	// Flat: skip the warm-up (the first tenth), then the first third of
	// what is left against the last third.
	rest := samples[len(samples)/10:]
	third := len(rest) / 3
	if third == 0 {
		t.Logf("too few samples (%d) to compare", len(samples))
		return
	}
	first, last := rest[:third], rest[len(rest)-third:]
	// slack < 0: reported only (the relay's goroutines under load follow
	// the requests in flight, which follow the machine's load).
	flat := func(what string, get func(soakSample) float64, slack float64) {
		a, b := meanOf(first, get), meanOf(last, get)
		t.Logf("MEASURE soak flat %s first=%.1f last=%.1f change=%+.1f%%", what, a, b, 100*(b-a)/a)
		if slack >= 0 && b > a*1.10 && b-a > slack {
			t.Errorf("%s grew from %.1f to %.1f (more than 10 %%)", what, a, b)
		}
	}
	flat("relay_rss_mib", func(s soakSample) float64 { return mib(s.relayRSS) }, 4)
	flat("plugin_rss_mib", func(s soakSample) float64 { return mib(s.pluginRSS) }, 4)
	flat("relay_goroutines", func(s soakSample) float64 { return float64(s.relayGor) }, -1)
	flat("plugin_goroutines", func(s soakSample) float64 { return float64(s.pluginGor) }, 10)
	flat("p99_ms", func(s soakSample) float64 { return float64(s.p99) / float64(time.Millisecond) }, 20)
}

// soakRate is half the warm throughput measured for ten seconds with 32
// clients asking at once (SOAK_RATE overrides it).
func soakRate(t testing.TB, relay *Relay, service string, users []user) int {
	t.Helper()
	if v := os.Getenv("SOAK_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("SOAK_RATE=%q", v)
		}
		return n
	}
	var n atomic.Int64
	end := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; time.Now().Before(end); j++ {
				if code, _, _ := soakGet(relay, service, users[j%len(users)]); code == http.StatusOK {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	warm := float64(n.Load()) / 10
	t.Logf("MEASURE soak warm_throughput=%.0f/s (32 clients)", warm)
	return max(1, int(warm/2))
}

func soakGet(relay *Relay, service string, u user) (int, http.Header, []byte) {
	q := url.Values{"service": {service}, "scope": {"repository:" + u.name + "/app:pull"}}
	req, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?"+q.Encode(), nil)
	req.SetBasicAuth(u.name, u.password)
	resp, err := loadClient.Do(req)
	if err != nil {
		return 0, nil, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	return resp.StatusCode, resp.Header, body
}

// soakRefresh gets a refresh token with a password grant and uses it.
func soakRefresh(relay *Relay, service string, u user) (string, error) {
	post := func(form url.Values) (int, []byte, error) {
		resp, err := loadClient.PostForm(relay.URL+"/auth", form)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
		return resp.StatusCode, b, nil
	}
	code, body, err := post(url.Values{"grant_type": {"password"}, "username": {u.name}, "password": {u.password},
		"access_type": {"offline"}, "client_id": {"soak"}, "service": {service}})
	if err != nil || code != http.StatusOK {
		return "", fmt.Errorf("password grant: %d %v %s", code, err, truncate(body, 100))
	}
	rt := jsonString(body, "refresh_token")
	code, body, err = post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"soak"}, "service": {service}})
	if err != nil || code != http.StatusOK {
		return "", fmt.Errorf("refresh grant: %d %v %s", code, err, truncate(body, 100))
	}
	return rt, nil
}

func jsonString(body []byte, key string) string {
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	s, _ := m[key].(string)
	return s
}

// relayMetric reads one unlabelled sample of the relay's /metrics.
func relayMetric(r *Relay, name string) float64 {
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := metricLine.FindStringSubmatch(sc.Text()); m != nil && m[1] == name && m[2] == "" {
			f, _ := strconv.ParseFloat(m[3], 64)
			return f
		}
	}
	return 0
}

// pluginGoroutines reads "goroutine profile: total N" from the plugin's
// profile listener.
func pluginGoroutines(port int) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", port))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
	return n
}

// dirSize is what du says of dir, in bytes.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-sb", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	return n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func meanOf(s []soakSample, get func(soakSample) float64) float64 {
	var sum float64
	for _, x := range s {
		sum += get(x)
	}
	return sum / float64(len(s))
}
