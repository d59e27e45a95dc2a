//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Issue 20's floods through the real relay on a real Vault: a locked-out
// user's right password from many connections (point 1), and made-up
// Vault tokens while Vault is slow (point 6). In both, a user whose login
// the relay and the plugin know keeps getting tokens, and the requests
// the relay has not seen succeed hold at most its unproven places.

const (
	// floodAttackers is the number of connections of a flood, more than
	// the relay's 128 Vault call slots.
	floodAttackers = 150
	// relayUnproven, relayBatchCalls and relayPerCredential are the
	// relay's maxUnprovenCalls, batchCalls and maxProvenPerCredential.
	relayUnproven      = 32
	relayBatchCalls    = 2
	relayPerCredential = 64
	// servedShare is the share of a cached user's requests answered 200
	// during a flood.
	servedShare = 0.95
	// Gauges of the relay's /metrics.
	callsInFlight    = "godoauth_relay_vault_calls_in_flight"
	unprovenInFlight = "godoauth_relay_vault_unproven_calls_in_flight"
)

// relayDefaults is the harness relay with the relay's default timeouts
// (storage.vault.timeout 3s, http.timeout 5s), batching on or off.
func relayDefaults(v *Vault, service string, batch bool) RelayOptions {
	return RelayOptions{Vault: v, Services: []string{service}, VaultTimeout: 3 * time.Second, HTTPTimeout: 5 * time.Second, NoBatch: !batch}
}

// flood runs attackers connections, each sending the request ask builds
// until stop, and counts their statuses.
type flood struct {
	mu       sync.Mutex
	statuses map[int]int
	wg       sync.WaitGroup
}

func startFlood(r *Relay, stop time.Time, attackers int, ask func(i int) *http.Request) *flood {
	f := &flood{statuses: map[int]int{}}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: attackers}}
	for a := range attackers {
		f.wg.Go(func() {
			for time.Now().Before(stop) {
				code := 0
				if resp, err := client.Do(ask(a)); err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				f.mu.Lock()
				f.statuses[code]++
				f.mu.Unlock()
			}
		})
	}
	return f
}

func (f *flood) wait() map[int]int {
	f.wg.Wait()
	return f.statuses
}

// cachedUserDuring asks tokens for u one after another until stop and
// returns how many were asked and their statuses.
func cachedUserDuring(t testing.TB, r *Relay, service string, u user, stop time.Time) (int, map[int]int) {
	t.Helper()
	statuses := map[int]int{}
	n := 0
	for time.Now().Before(stop) {
		code, _, _ := r.Token(t, service, u.name, u.password, "repository:"+u.name+"/app:pull")
		statuses[code]++
		n++
	}
	return n, statuses
}

// checkGauges fails the test when the relay's /metrics lacked a gauge
// gaugePeaks sampled.
func checkGauges(t testing.TB, peaks map[string]float64, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, ok := peaks[name]; !ok {
			t.Errorf("the relay's /metrics has no %s", name)
		}
	}
}

func share(statuses map[int]int, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(statuses[http.StatusOK]) / float64(n)
}

// TestSecurity_lockedOutUserFloodStallsNoBatch: a user gets a token (the
// relay counts the password as proven), locks their own account with
// wrong passwords, then sends the right password from 150 connections for
// a few seconds. Another user, whose login the relay knows, is served
// (>= 95 % of answers 200) with batching on (the plugin's credential cache
// warm, and cold as after an election) and off; with batching on, the
// attacker's requests hold at most the relay's 32 unproven places and the
// mount's two batch calls of its 128 Vault call slots (off: the unproven
// places and the credential's 64 places on the proven path).
func TestSecurity_lockedOutUserFloodStallsNoBatch(t *testing.T) {
	v := StartVault(t)
	const floodFor = 6 * time.Second
	for i, c := range []struct {
		name        string
		batch, cold bool
	}{
		{"batching, warm cache", true, false},
		{"batching, cold cache", true, true},
		{"batching off", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			svc := v.EnableService(t, fmt.Sprintf("flood%d", i))
			lockout := []string{"lockout_threshold=5", "lockout_duration=10m"}
			svc.WriteConfig(t, lockout...)
			mallory := user{"mallory", "mallory-pw-4e1a77", "repository:mallory/*:*"}
			gina := user{"gina", "gina-pw-90b3c2", "repository:gina/*:*"}
			svc.AddUsers(t, mallory, gina)
			relay := StartRelay(t, relayDefaults(v, svc.Name, c.batch))
			for _, u := range []user{mallory, gina} { // both proven now
				if code, _, body := relay.Token(t, svc.Name, u.name, u.password, "repository:"+u.name+"/app:pull"); code != http.StatusOK {
					t.Fatalf("first token of %s: %d %s", u.name, code, truncate(body, 200))
				}
			}
			for i := range 5 {
				relay.Token(t, svc.Name, mallory.name, fmt.Sprintf("wrong-%d", i))
			}
			if out := v.CLI(t, "read", "-field=locked_until", svc.Name+"/users/"+mallory.name); strings.TrimSpace(out) == "" {
				t.Fatalf("%s is not locked out after 5 wrong passwords", mallory.name)
			}
			if c.cold {
				svc.WriteConfig(t, lockout...) // a config write drops the plugin's cached credentials
			}

			stop := time.Now().Add(floodFor)
			peaks := gaugePeaks(relay, callsInFlight, unprovenInFlight)
			f := startFlood(relay, stop, floodAttackers, func(int) *http.Request {
				req, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?service="+svc.Name+"&scope=repository:mallory/app:pull", nil)
				req.SetBasicAuth(mallory.name, mallory.password)
				return req
			})
			n, served := cachedUserDuring(t, relay, svc.Name, gina, stop)
			attack := f.wait()
			p := peaks()
			checkGauges(t, p, callsInFlight, unprovenInFlight)
			t.Logf("MEASURE flood locked_out_right_password batch=%v cold_cache=%v attackers=%d seconds=%.0f attack_statuses=%v cached_user_requests=%d cached_user_statuses=%v cached_user_served=%.1f%% peak_vault_calls=%.0f/128 peak_unproven=%.0f/%d",
				c.batch, c.cold, floodAttackers, floodFor.Seconds(), attack, n, served, 100*share(served, n), p[callsInFlight], p[unprovenInFlight], relayUnproven)
			if s := share(served, n); s < servedShare || n < 5 {
				t.Errorf("the cached user got %d of %d tokens (%.0f%%) during the flood: %v; want >= %.0f%%", served[http.StatusOK], n, 100*s, served, 100*servedShare)
			}
			if attack[http.StatusOK] > 0 {
				t.Errorf("a locked-out user got a token: %v", attack)
			}
			if p[unprovenInFlight] > relayUnproven {
				t.Errorf("%.0f unproven requests in flight, want at most %d", p[unprovenInFlight], relayUnproven)
			}
			// The attacker: the unproven places and the mount's batch
			// calls (without batching: its places on the proven path,
			// taken before the first refusal came back); the cached user:
			// one call.
			bound := float64(relayUnproven + relayBatchCalls + 1)
			if !c.batch {
				bound = relayUnproven + relayPerCredential + 1
			}
			if p[callsInFlight] > bound {
				t.Errorf("%.0f Vault calls in flight during the flood, want at most %.0f", p[callsInFlight], bound)
			}
		})
	}
}

// TestSecurity_madeUpVaultTokensStayUnproven: 150 connections send made-up
// Vault tokens (user "vault") while Vault stops answering for a second:
// they hold at most the relay's 32 unproven places, not its 128 Vault call
// slots, and a user whose login the relay knows is served (>= 95 %).
func TestSecurity_madeUpVaultTokensStayUnproven(t *testing.T) {
	v := StartVault(t)
	svc := v.EnableService(t, "registry")
	gina := user{"gina", "gina-pw-90b3c2", "repository:gina/*:*"}
	svc.AddUsers(t, gina)
	relay := StartRelay(t, relayDefaults(v, svc.Name, true))
	if code, _, body := relay.Token(t, svc.Name, gina.name, gina.password, "repository:gina/app:pull"); code != http.StatusOK {
		t.Fatalf("first token of %s: %d %s", gina.name, code, truncate(body, 200))
	}

	const floodFor = 5 * time.Second
	start := time.Now()
	stop := start.Add(floodFor)
	peaks := gaugePeaks(relay, callsInFlight, unprovenInFlight)
	f := startFlood(relay, stop, floodAttackers, func(int) *http.Request {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		req, _ := http.NewRequest(http.MethodGet, relay.URL+"/auth?service="+svc.Name+"&scope=repository:x/app:pull", nil)
		req.SetBasicAuth("vault", "hvs."+hex.EncodeToString(b))
		return req
	})
	// Vault stops answering for a second (shorter than the relay's Vault
	// timeout): every call in flight waits, as behind a slow token/identity.
	pid := pidOf(v.Proc)
	paused := make(chan struct{})
	go func() {
		defer close(paused)
		time.Sleep(1500 * time.Millisecond)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Errorf("SIGSTOP to vault: %v", err)
			return
		}
		time.Sleep(time.Second)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("SIGCONT to vault: %v", err)
		}
	}()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	n, served := cachedUserDuring(t, relay, svc.Name, gina, stop)
	attack := f.wait()
	<-paused
	p := peaks()
	checkGauges(t, p, callsInFlight, unprovenInFlight)
	t.Logf("MEASURE flood made_up_vault_tokens attackers=%d seconds=%.0f vault_paused=1s attack_statuses=%v cached_user_requests=%d cached_user_statuses=%v cached_user_served=%.1f%% peak_vault_calls=%.0f/128 peak_unproven=%.0f/%d",
		floodAttackers, floodFor.Seconds(), attack, n, served, 100*share(served, n), p[callsInFlight], p[unprovenInFlight], relayUnproven)
	if bound := float64(relayUnproven + 1); p[callsInFlight] > bound {
		t.Errorf("%.0f Vault calls in flight during the flood, want at most %.0f (the unproven places and the cached user's)", p[callsInFlight], bound)
	}
	if s := share(served, n); s < servedShare || n < 5 {
		t.Errorf("the cached user got %d of %d tokens (%.0f%%) during the flood: %v; want >= %.0f%%", served[http.StatusOK], n, 100*s, served, 100*servedShare)
	}
	if attack[http.StatusOK] > 0 || attack[http.StatusBadRequest] > 0 {
		t.Errorf("made-up tokens got answers other than 401, 429 and 503: %v", attack)
	}
}
