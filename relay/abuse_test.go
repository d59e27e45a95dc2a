//go:build unix

package relay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Slow and hostile clients against the relay's real HTTP server, while a
// well-behaved client keeps asking for tokens. Each test logs one line
//
//	MEASURE abuse=<name> ... baseline_p50=… baseline_p99=… during_p50=… during_p99=…
//
// with that client's latency before and during the abuse (go test -v -run
// Abuse ./relay | grep MEASURE). A test fails if any of the client's
// requests fails or hangs, and if its median during the abuse reaches the
// time the relay holds an abuser (a slow connection's life, a wrong
// password's wait; the median of those), measured in the same run: a relay
// that made the client wait behind the abuse would put it there, on any
// machine. Medians, because on an oversubscribed machine the tail of both
// is CPU scheduling, not the relay. Absolute figures belong to make bench.

const (
	// The stand-in plugin's bound on password checks: the plugin runs as
	// many bcrypt comparisons at once as it has CPUs (2 here), one takes
	// ~60ms at cost 10, and a request that waits 2s for a free check is
	// answered 429 (backend.passwordCheckWait).
	pluginPasswordChecks    = 2
	pluginPasswordCheckCost = 60 * time.Millisecond
	pluginPasswordCheckWait = 2 * time.Second

	// The well-behaved client: a user whose credential the plugin has
	// cached, asking for one token at a time on a new connection.
	goodUser          = "alice"
	goodPassword      = "cached-credential"
	wellBehavedTries  = 50
	wellBehavedPause  = 20 * time.Millisecond
	wellBehavedBudget = 2 * time.Minute // for all the tries: a hanging relay fails, a busy machine does not
	abuseGoroutineGap = 8               // goroutines the runtime and pools may keep after the abuse
)

// abuseRig is a relay on loopback in front of a stand-in Vault whose
// plugin bounds its password checks as the real one does.
type abuseRig struct {
	t    *testing.T
	fv   *pluginVault
	s    *Server
	logs *syncBuffer
	addr string

	checkCost   atomic.Int64 // nanoseconds one password check takes; pluginPasswordCheckCost unless set
	checks      atomic.Int64 // wrong passwords checked by the stand-in plugin
	busy        atomic.Int64 // requests it refused: too many password checks
	waiting     atomic.Int64 // requests waiting for a password check now
	mostWaiting atomic.Int64
}

func newAbuseRig(t *testing.T, edit ...func(*Config)) *abuseRig {
	rig := &abuseRig{t: t, fv: newPluginVault(t, "registry")}
	rig.checkCost.Store(int64(pluginPasswordCheckCost))
	slots := make(chan struct{}, pluginPasswordChecks)
	rig.fv.token = func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		user, _ := body["username"].(string)
		password, _ := body["password"].(string)
		_, batch := body["requests"] // only a proven credential, the cached one, rides in a batch
		if batch || user == goodUser && password == goodPassword {
			rig.fv.Answer(w, r) // a cached credential costs no password check
			return
		}
		n := rig.waiting.Add(1)
		for m := rig.mostWaiting.Load(); n > m && !rig.mostWaiting.CompareAndSwap(m, n); m = rig.mostWaiting.Load() {
		}
		wait := time.NewTimer(pluginPasswordCheckWait)
		defer wait.Stop()
		select {
		case slots <- struct{}{}:
			rig.waiting.Add(-1)
		case <-wait.C:
			rig.waiting.Add(-1)
			rig.busy.Add(1)
			pluginRefusal(w, tokenapi.Refusal{Code: tokenapi.CodeBusy, Message: "too many password checks in progress", RetryAfter: 1})
			return
		case <-r.Context().Done():
			rig.waiting.Add(-1)
			return
		}
		time.Sleep(time.Duration(rig.checkCost.Load()))
		<-slots
		rig.checks.Add(1)
		vaultError(w, http.StatusUnauthorized, "invalid username or password")
	}
	rig.s, rig.logs = newTestRelay(t, rig.fv.URL, append([]func(*Config){func(c *Config) {
		c.Log.Level = "warn"
		// Longer than the plugin's queue (2s), and than any answer to
		// the well-behaved client on a busy machine.
		c.Storage.Vault.Timeout = Duration(10 * time.Second)
		c.HTTP.Timeout = Duration(DefaultHTTPTimeout)
	}}, edit...)...)
	rig.addr = serveLoopback(t, rig.s)
	return rig
}

// wellBehaved asks for tokens one after another, each on a new connection
// as docker does, and returns the latencies' p50 and p99. Every request
// must get a token.
func (rig *abuseRig) wellBehaved() (p50, p99 time.Duration) {
	t := rig.t
	transport := &http.Transport{DisableKeepAlives: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: wellBehavedBudget / 4}
	target := "http://" + rig.addr + "/auth?service=registry&scope=repository:linux/app:pull"
	var took []time.Duration
	begin := time.Now()
	for i := range wellBehavedTries {
		if time.Since(begin) > wellBehavedBudget {
			t.Errorf("only %d of %d well-behaved requests in %s", i, wellBehavedTries, wellBehavedBudget)
			break
		}
		if i > 0 {
			time.Sleep(wellBehavedPause)
		}
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.SetBasicAuth(goodUser, goodPassword)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("well-behaved request %d: %v", i, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took = append(took, time.Since(start))
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"token"`) {
			t.Errorf("well-behaved request %d: %s %q %v", i, resp.Status, body, err)
		}
	}
	if len(took) == 0 {
		t.Fatal("no well-behaved request got an answer")
	}
	slices.Sort(took)
	return took[len(took)/2], took[(len(took)*99+99)/100-1]
}

// abuseEnd is what a stopped abuse reports: facts for the log, and held,
// the median time the relay held an abuser (0 when the abuse holds nothing
// the client could wait behind; then only the outcomes count).
type abuseEnd struct {
	facts string
	held  time.Duration
}

// measure runs the abuse between two measurements of the well-behaved
// client, logs the MEASURE line and checks the bound. start begins the
// abuse and returns once it is in full swing; its stop ends it.
func (rig *abuseRig) measure(name string, start func() (stop func() abuseEnd)) {
	t := rig.t
	baseP50, baseP99 := rig.wellBehaved()
	before := runtime.NumGoroutine()
	stop := start()
	p50, p99 := rig.wellBehaved()
	end := stop()
	t.Logf("MEASURE abuse=%s %s abuser_held_p50=%s baseline_p50=%s baseline_p99=%s during_p50=%s during_p99=%s",
		name, end.facts, ms(end.held), ms(baseP50), ms(baseP99), ms(p50), ms(p99))
	if end.held > 0 && p50 >= end.held {
		t.Errorf("during %s the well-behaved requests took %s (median), as long as the relay held an abuser (%s, median): they waited behind the abuse",
			name, p50, end.held)
	}
	rig.noGoroutinesLeft(before)
}

// median of ds, 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// noGoroutinesLeft waits for the relay to let go of every abusive
// connection once the abusers are gone. Its idle connections to Vault
// are closed first: they are a pool, not a leak.
func (rig *abuseRig) noGoroutinesLeft(before int) {
	deadline := time.Now().Add(10 * time.Second)
	rig.s.vault.http.CloseIdleConnections()
	after := runtime.NumGoroutine()
	for after > before+abuseGoroutineGap && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		rig.s.vault.http.CloseIdleConnections()
		after = runtime.NumGoroutine()
	}
	if after > before+abuseGoroutineGap {
		buf := make([]byte, 4<<20)
		rig.t.Fatalf("goroutines: %d before the abuse, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// abusers are goroutines holding connections to the relay until stopped.
type abusers struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]time.Time // when dialed
	held  []time.Duration        // lives of the connections the relay closed

	dialed atomic.Int64 // connections opened
	cut    atomic.Int64 // connections the relay closed on them
}

func newAbusers() *abusers {
	a := &abusers{conns: map[net.Conn]time.Time{}}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	return a
}

// dial opens a connection to addr, or returns nil once stopped.
func (a *abusers) dial(addr string) net.Conn {
	for a.ctx.Err() == nil {
		c, err := (&net.Dialer{}).DialContext(a.ctx, "tcp", addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.ctx.Err() != nil {
			c.Close()
			return nil
		}
		a.conns[c] = time.Now()
		a.dialed.Add(1)
		return c
	}
	return nil
}

// hangUp closes c; cut says whether the relay closed it first.
func (a *abusers) hangUp(c net.Conn, cut bool) {
	a.mu.Lock()
	if cut && a.ctx.Err() == nil {
		a.cut.Add(1)
		a.held = append(a.held, time.Since(a.conns[c]))
	}
	delete(a.conns, c)
	a.mu.Unlock()
	c.Close()
}

// heldMedian is the median life of the connections the relay closed.
func (a *abusers) heldMedian() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return median(a.held)
}

// stop ends every abuser and closes its connection.
func (a *abusers) stop() {
	a.cancel()
	a.mu.Lock()
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// sleep waits d, or less when stopped; false once stopped.
func (a *abusers) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-a.ctx.Done():
		return false
	}
}

// TestAbuse_slowloris: connections that send a request line, then header
// lines one byte at a time, and never finish; the relay closes each after
// http.timeout, and the abuser opens another.
func TestAbuse_slowloris(t *testing.T) {
	const (
		conns = 200
		every = 100 * time.Millisecond
	)
	timeout := 2 * time.Second
	rig := newAbuseRig(t, func(c *Config) { c.HTTP.Timeout = Duration(timeout) })
	rig.measure("slowloris", func() func() abuseEnd {
		a := newAbusers()
		start := []byte("GET /auth?service=registry HTTP/1.1\r\nHost: relay\r\n")
		for range conns {
			a.wg.Go(func() {
				for c := a.dial(rig.addr); c != nil; c = a.dial(rig.addr) {
					_, err := c.Write(start)
					for i := 0; err == nil; i++ {
						if !a.sleep(every) {
							a.hangUp(c, false)
							return
						}
						_, err = c.Write([]byte{"X-Slow: a\r\n"[i%11]})
					}
					a.hangUp(c, true)
				}
			})
		}
		waitFor(t, func() bool { return a.dialed.Load() >= conns })
		time.Sleep(3 * every)
		return func() abuseEnd {
			// Every connection lives past http.timeout before the end.
			waitFor(t, func() bool { return a.cut.Load() >= conns })
			a.stop()
			return abuseEnd{fmt.Sprintf("conns=%d byte_every=%s http_timeout=%s cut_by_relay=%d",
				conns, every, timeout, a.cut.Load()), a.heldMedian()}
		}
	})
}

// TestAbuse_clientsThatNeverRead: connections that send token requests
// back to back and never read an answer. The relay answers until the
// socket buffers are full, then its write times out after http.timeout
// plus a second and it closes the connection. The relay bounds its send
// buffer: unbounded, the kernel grows it to megabytes, and each such
// connection would have the relay mint megabytes of tokens before its
// write blocks. Each request asks for many scopes so that each answer is
// large (about 19KiB) and the buffers fill sooner.
func TestAbuse_clientsThatNeverRead(t *testing.T) {
	const (
		conns         = 10
		scopes        = 100
		maxBufferedKB = 1 << 10 // answers a connection may take without reading
	)
	timeout := 2 * time.Second
	rig := newAbuseRig(t, func(c *Config) { c.HTTP.Timeout = Duration(timeout) })
	query := "service=registry"
	for i := range scopes {
		query += fmt.Sprintf("&scope=repository:linux/app-%03d:pull,push", i)
	}
	request := []byte("GET /auth?" + query + " HTTP/1.1\r\nHost: relay\r\n" +
		"Authorization: " + basic(goodUser, goodPassword) + "\r\n\r\n")
	answer := len(get(rig.s, query, basic(goodUser, goodPassword)).Body.Bytes())
	rig.measure("never-read", func() func() abuseEnd {
		a := newAbusers()
		tokensBefore := rig.fv.tokens.Load()
		for range conns {
			a.wg.Go(func() {
				for c := a.dial(rig.addr); c != nil; c = a.dial(rig.addr) {
					for {
						if _, err := c.Write(request); err != nil {
							a.hangUp(c, true)
							break
						}
					}
				}
			})
		}
		waitFor(t, func() bool { return a.dialed.Load() >= conns })
		return func() abuseEnd {
			// The relay closes every one once its write times out.
			waitFor(t, func() bool { return a.cut.Load() >= conns })
			a.stop()
			minted := int64(rig.fv.tokens.Load() - tokensBefore - wellBehavedTries)
			perConnKB := minted * int64(answer) / a.dialed.Load() >> 10
			if perConnKB > maxBufferedKB {
				t.Errorf("the relay answered %dKiB to each connection that never reads; want at most %dKiB",
					perConnKB, maxBufferedKB)
			}
			return abuseEnd{fmt.Sprintf("conns=%d http_timeout=%s answer_bytes=%d cut_by_relay=%d tokens_minted=%d answered_per_conn=%dKiB",
				conns, timeout, answer, a.cut.Load(), minted, perConnKB), a.heldMedian()}
		}
	})
}

// TestAbuse_thousandConnections: a thousand keep-alive connections that
// each asked once and stay open. They hold nothing the well-behaved client
// waits behind; what would go wrong is a refusal or a hang, and the
// outcomes count those: every connection still served, every token
// request answered.
func TestAbuse_thousandConnections(t *testing.T) {
	conns := connectionBudget(t, 1000)
	rig := newAbuseRig(t)
	rig.measure("connections", func() func() abuseEnd {
		a := newAbusers()
		var mem0, mem1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&mem0)
		held := make(chan net.Conn, conns)
		ping := []byte("GET /server-ping HTTP/1.1\r\nHost: relay\r\n\r\n")
		open := make(chan struct{}, 64) // dial 64 at a time
		for range conns {
			a.wg.Go(func() {
				open <- struct{}{}
				c := a.dial(rig.addr)
				<-open
				if c == nil {
					return
				}
				r := bufio.NewReader(c)
				if _, err := c.Write(ping); err != nil {
					a.hangUp(c, true)
					return
				}
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					a.hangUp(c, true)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				held <- c
			})
		}
		waitFor(t, func() bool { return len(held) == conns || a.cut.Load() > 0 })
		if cut := a.cut.Load(); cut > 0 {
			t.Errorf("the relay dropped %d of %d connections", cut, conns)
		}
		runtime.GC()
		runtime.ReadMemStats(&mem1)
		perConn := (int64(mem1.HeapInuse+mem1.StackInuse) - int64(mem0.HeapInuse+mem0.StackInuse)) / int64(conns)
		return func() abuseEnd {
			// Each connection is still open and served.
			still := 0
			for range len(held) {
				c := <-held
				if _, err := c.Write(ping); err == nil {
					if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == 200 {
						still++
					}
				}
			}
			if still != conns {
				t.Errorf("%d of %d connections still served at the end", still, conns)
			}
			a.stop()
			return abuseEnd{facts: fmt.Sprintf("conns=%d memory_per_conn_both_ends=%dKiB", conns, perConn>>10)}
		}
	})
}

// connectionBudget is how many connections a test may open to the relay:
// both ends live in this process, so it needs two descriptors for each. The
// soft limit on open files is raised to the hard one if that helps.
func connectionBudget(t *testing.T, want int) int {
	const spare = 256
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("open files limit: %v", err)
	}
	need := uint64(2*want + spare)
	if lim.Cur < need && lim.Max > lim.Cur {
		raised := lim
		raised.Cur = min(need, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			t.Logf("raised the open files limit from %d to %d", lim.Cur, raised.Cur)
			lim = raised
		}
	}
	if lim.Cur >= need {
		return want
	}
	n := (int(lim.Cur) - spare) / 2
	if n < 100 {
		t.Skipf("open files limit %d leaves room for %d connections only", lim.Cur, n)
	}
	t.Logf("open files limit %d (ulimit -n): %d connections instead of %d", lim.Cur, n, want)
	return n
}

// TestAbuse_wrongPasswordFlood: many clients sending wrong passwords as
// fast as they are answered. Each costs the plugin a bcrypt check, and the
// plugin runs two at a time: the flood queues in the relay (which lets at
// most maxUnprovenCalls such requests reach Vault) and in the plugin, or
// is refused 429, while a user whose credential got a token lately keeps
// getting tokens at once. With storage.vault.timeout shorter than the plugin's
// queue, the flood's requests time out, and that is no Vault outage either.
func TestAbuse_wrongPasswordFlood(t *testing.T) {
	t.Run("default timeouts", func(t *testing.T) {
		rig := newAbuseRig(t)
		passwordFlood(rig)
		if strings.Contains(rig.logs.String(), "[ERROR]") {
			t.Errorf("the relay took the flood for a Vault outage:\n%s", rig.logs.String())
		}
	})
	t.Run("vault timeout shorter than the plugin's queue", func(t *testing.T) {
		// Shorter than the plugin's 2 s queue, so that queued checks time
		// out (most attackers wait longer); long enough that a well-behaved
		// (cached) request on a busy machine rarely does, since its own
		// timeout rightly marks Vault down for a moment (500 ms did, under
		// -race beside other tests).
		rig := newAbuseRig(t, func(c *Config) { c.Storage.Vault.Timeout = Duration(time.Second) })
		// Slower checks (a higher bcrypt cost), so that the queue the
		// relay lets through (about 30 checks, two at a time) takes
		// longer than the timeout: at 60 ms a check it took 0.9 s, and
		// whether any check timed out was a matter of scheduling.
		rig.checkCost.Store(int64(150 * time.Millisecond))
		passwordFlood(rig)
		if !strings.Contains(rig.logs.String(), "did not answer an unproven request") {
			t.Errorf("no password check timed out:\n%s", rig.logs.String())
		}
	})
}

func passwordFlood(rig *abuseRig) {
	const attackers = 200
	t := rig.t
	rig.measure("wrong-password-flood", func() func() abuseEnd {
		a := newAbusers()
		transport := &http.Transport{MaxIdleConnsPerHost: attackers}
		client := &http.Client{Transport: transport}
		var mu sync.Mutex
		statuses := map[int]int{}
		var waited []time.Duration // of the answered wrong passwords
		for i := range attackers {
			a.wg.Go(func() {
				user := fmt.Sprintf("mallory-%d", i)
				for a.ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(a.ctx, http.MethodGet,
						"http://"+rig.addr+"/auth?service=registry&scope=repository:linux/app:pull", nil)
					req.SetBasicAuth(user, "wrong-password")
					start := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					took := time.Since(start)
					mu.Lock()
					statuses[resp.StatusCode]++
					waited = append(waited, took)
					mu.Unlock()
				}
			})
		}
		// In full swing: the plugin's queue of password checks is long,
		// and the flood has begun to be refused.
		waitFor(t, func() bool { return rig.waiting.Load() >= 16 })
		time.Sleep(pluginPasswordCheckWait)
		return func() abuseEnd {
			a.stop()
			transport.CloseIdleConnections()
			mu.Lock()
			defer mu.Unlock()
			if statuses[http.StatusUnauthorized] == 0 {
				t.Errorf("no wrong password was refused 401: %v", statuses)
			}
			return abuseEnd{fmt.Sprintf("attackers=%d vault_timeout=%s plugin_checks=%d plugin_most_waiting=%d plugin_busy_429=%d answers=%v",
				attackers, rig.s.vault.timeout, rig.checks.Load(), rig.mostWaiting.Load(), rig.busy.Load(), statuses), median(waited)}
		}
	})
}
