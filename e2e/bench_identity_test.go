//go:build e2e && bench

package e2e

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Vault identities in `make bench` (issue 28): at identityConns
// connections, the plugin-user path, a Vault token as the password
// (`vault:<token>`) and a userpass password through
// identity.password_mounts, beside the floor, interleaved in
// identityRounds rounds (medians reported); then the password-mount path
// across several token_reuse periods (expiryReuse, for expiryRun), read by
// a Go client that records when each answer came: p99 per period and the
// longest gap between successful answers. Printed, never asserted.
//
// Run: go test -tags 'e2e bench' -run '^TestBench_identity$' -v -timeout 20m ./e2e/
const (
	identityConns  = 64
	identityRounds = 3
	expiryReuse    = 10 * time.Second
	expiryRun      = 40 * time.Second
	expiryConns    = 64

	identityUser     = "idload"
	identityPassword = "idload-vault-pw"
)

// The identity table's series.
const (
	seriesIdentityToken    = "relay, a Vault token as the password (vault:<token>)"
	seriesIdentityPassword = "relay, a userpass password (identity.password_mounts)"
	seriesPluginUser       = "relay, plugin user, warm"
)

func TestBench_identity(t *testing.T) {
	b := &loadBench{t: t, wrk: tool(t, "wrk")}
	b.script = filepath.Join(t.TempDir(), "report.lua")
	mustWrite(t, b.script, []byte(wrkReport))
	b.vault = StartVault(t)
	v := b.vault
	b.svc = v.EnableService(t, benchService)
	b.svc.WriteUser(t, benchUser, benchPassword, benchScope)
	b.vaultPID = v.Proc.cmd.Process.Pid
	b.pluginPID = pluginPID(t, b.vaultPID)
	b.floorURL = v.Addr + "/v1/" + benchService + "/ca/pem"

	// A userpass user in a group granted the scope: its Vault token as the
	// password, and its password through the relay's password mount.
	v.CLIInput(t, readFileString(t, filepath.Join("..", "deploy", "policies", "identity.hcl")), "policy", "write", identityPolicy, "-")
	v.CLI(t, "auth", "enable", "userpass")
	v.root(t, http.MethodPut, "auth/userpass/users/"+identityUser, map[string]any{"password": identityPassword, "token_policies": identityPolicy})
	vaultToken, entityID := v.login(t, "auth/userpass/login/"+identityUser, map[string]any{"password": identityPassword})
	v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "bench", "member_entity_ids": []string{entityID}})
	v.CLI(t, "write", benchService+"/groups/bench", "access="+benchScope)
	b.relay = StartRelay(t, RelayOptions{Vault: v, Services: []string{benchService}, Extra: "identity:\n  password_mounts: [userpass]\n"})

	basic := func(user, password string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}
	front := b.relay.Proc.cmd.Process.Pid
	series := []struct {
		name string
		tg   target
	}{
		{seriesFloor, target{url: b.floorURL}},
		{seriesPluginUser, target{url: b.relay.URL + tokenQuery, auth: basic(benchUser, benchPassword), front: front}},
		{seriesIdentityToken, target{url: b.relay.URL + tokenQuery, auth: basic("vault", vaultToken), front: front}},
		{seriesIdentityPassword, target{url: b.relay.URL + tokenQuery, auth: basic(identityUser, identityPassword), front: front}},
	}
	for _, s := range series {
		b.warm(s.tg)
		b.warm(s.tg) // a Vault token's second request asks its session
	}
	loadBefore := loadAverage()
	loginsBefore := identityLogins(t, b.relay)["login"]
	runs := map[string][]wrkResult{}
	for round := range identityRounds {
		for _, s := range series {
			t.Logf("identity load: round %d, %s, %d connections", round+1, s.name, identityConns)
			runs[s.name] = append(runs[s.name], b.run(s.tg, identityConns, loadDuration))
		}
	}
	loadAfter := loadAverage()
	roundLogins := identityLogins(t, b.relay)["login"] - loginsBefore

	// The expiry run: its own relay, token_reuse short.
	expiryRelay := StartRelay(t, RelayOptions{Vault: v, Services: []string{benchService},
		Extra: fmt.Sprintf("identity:\n  password_mounts: [userpass]\n  token_reuse: %s\n", expiryReuse)})
	expiryTarget := target{url: expiryRelay.URL + tokenQuery, auth: basic(identityUser, identityPassword)}
	b.warm(expiryTarget)
	expiryBefore := identityLogins(t, expiryRelay)["login"]
	t.Logf("identity expiry run: %s at %d connections, token_reuse %s", expiryRun, expiryConns, expiryReuse)
	expiry := timedLoad(expiryTarget, expiryConns, expiryRun)
	logins := identityLogins(t, expiryRelay)["login"] - expiryBefore

	var report strings.Builder
	writeIdentityTable(&report, series[0].name, runs, loadBefore, loadAfter, roundLogins)
	writeExpiryTable(&report, expiry, logins)
	fmt.Print("\n" + report.String())
	if path := os.Getenv("BENCH_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
}

// median is the run with the median rate of runs.
func median(runs []wrkResult) wrkResult {
	if len(runs) == 0 {
		return wrkResult{}
	}
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b wrkResult) int {
		switch {
		case a.OKPerSec() < b.OKPerSec():
			return -1
		case a.OKPerSec() > b.OKPerSec():
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

func writeIdentityTable(w io.Writer, floorName string, runs map[string][]wrkResult, loadBefore, loadAfter string, logins float64) {
	fmt.Fprintf(w, "### Vault identities: wrk → relay → Vault → plugin, %d connections, %s per run\n\n", identityConns, loadDuration)
	fmt.Fprintf(w, "The same relay, user scope and `GET %s` for each token series; %d rounds, the series interleaved in each; the run with the median rate of each series.\n", tokenQuery, identityRounds)
	fmt.Fprintf(w, "Load average before: %s; after: %s. The relay's Vault logins for the password-mount user meanwhile (token_reuse 1m, renewed ahead): %.0f.\n\n", loadBefore, loadAfter, logins)
	fmt.Fprintln(w, "| series | tokens/s (each round) | p99 (each round) | tokens/s, median | p50 | p99 | failed | of the floor | of the plugin user |")
	fmt.Fprintln(w, "|---|---|---|--:|--:|--:|--:|--:|--:|")
	floor, plugin := median(runs[floorName]), median(runs[seriesPluginUser])
	for _, name := range []string{floorName, seriesPluginUser, seriesIdentityToken, seriesIdentityPassword} {
		rs := runs[name]
		var rates, p99s []string
		var failed int64
		for _, r := range rs {
			rates = append(rates, fmt.Sprintf("%.0f", r.OKPerSec()))
			p99s = append(p99s, millis(r.P99))
			failed += r.Failed()
		}
		m := median(rs)
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %s | %s | %d | %s | %s |\n", name, strings.Join(rates, ", "), strings.Join(p99s, ", "), m.OKPerSec(),
			millis(m.P50), millis(m.P99), failed, ratio(m.OKPerSec(), floor.OKPerSec()), ratio(m.OKPerSec(), plugin.OKPerSec()))
	}
	fmt.Fprintf(w, "\nThe rounds are %s apart for each series, token_reuse is 1m: a password-mount run that begins after its token's reuse ended "+
		"without a request (round 2 here) begins with the login, each waiting request first checked by the plugin as an unknown user (a decoy bcrypt); "+
		"under steady load the token is replaced ahead of its end (the expiry run below).\n", time.Duration(len(runs))*loadDuration)
	tok := median(runs[seriesIdentityToken])
	// Paired by round (the two series run one after the other), the
	// ratios shake off most of what the rest of the machine does.
	var paired []string
	for i, p := range runs[seriesPluginUser] {
		for _, name := range []string{seriesIdentityToken, seriesIdentityPassword} {
			if i < len(runs[name]) {
				paired = append(paired, fmt.Sprintf("%s %s", map[string]string{seriesIdentityToken: "Vault token", seriesIdentityPassword: "password mount"}[name],
					ratio(runs[name][i].OKPerSec(), p.OKPerSec())))
			}
		}
	}
	fmt.Fprintf(w, "\nOf the plugin user's tokens/s in the same round, round by round: %s.\n", strings.Join(paired, ", "))
	fmt.Fprintf(w, "\nTarget (issue 28): the Vault-token path ≥ 0.8× the plugin user's tokens/s, p99 within 1.5×: here %s× the rate, p99 %s vs %s (%s×).\n\n",
		ratio(tok.OKPerSec(), plugin.OKPerSec()), millis(tok.P99), millis(plugin.P99), ratio(float64(tok.P99), float64(plugin.P99)))
}

// timedResult is a load run whose every answer's time is known.
type timedResult struct {
	duration time.Duration
	ok, bad  int
	// windows are the p99 latencies of each expiryReuse window.
	windows []time.Duration
	p50     time.Duration
	p99     time.Duration
	// gap is the longest time between two successful answers, ending
	// gapAt after the start; slowest is the slowest answer, at slowestAt.
	gap, gapAt         time.Duration
	slowest, slowestAt time.Duration
}

// timedLoad sends tg's request over conns keep-alive connections for d,
// and records when each answer came and how long it took.
func timedLoad(tg target, conns int, d time.Duration) timedResult {
	type answer struct {
		at, took time.Duration
		ok       bool
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	start := time.Now()
	end := start.Add(d)
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			var mine []answer
			for time.Now().Before(end) {
				req, _ := http.NewRequest(http.MethodGet, tg.url, nil)
				req.Header.Set("Authorization", tg.auth)
				sent := time.Now()
				resp, err := client.Do(req)
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				now := time.Now()
				mine = append(mine, answer{at: now.Sub(start), took: now.Sub(sent), ok: ok})
			}
			mu.Lock()
			answers = append(answers, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	r := timedResult{duration: time.Since(start)}
	slices.SortFunc(answers, func(a, b answer) int { return int(a.at - b.at) })
	var all []time.Duration
	windows := make([][]time.Duration, int((d+expiryReuse-1)/expiryReuse))
	last := time.Duration(0)
	for _, a := range answers {
		if !a.ok {
			r.bad++
			continue
		}
		r.ok++
		if a.at-last > r.gap {
			r.gap, r.gapAt = a.at-last, a.at
		}
		if a.took > r.slowest {
			r.slowest, r.slowestAt = a.took, a.at
		}
		last = a.at
		all = append(all, a.took)
		if i := int(a.at / expiryReuse); i < len(windows) {
			windows[i] = append(windows[i], a.took)
		}
	}
	r.p50, r.p99 = percentile(all, 0.5), percentile(all, 0.99)
	for _, w := range windows {
		r.windows = append(r.windows, percentile(w, 0.99))
	}
	return r
}

func writeExpiryTable(w io.Writer, r timedResult, logins float64) {
	fmt.Fprintf(w, "### A userpass password through the relay across token_reuse periods\n\n")
	fmt.Fprintf(w, "identity.token_reuse %s, %s at %d connections (a Go client that times each answer; slower than wrk, so compare within this table).\n\n",
		expiryReuse, expiryRun, expiryConns)
	var cols, seps, vals []string
	for i, p := range r.windows {
		cols = append(cols, fmt.Sprintf("p99, %ds-%ds", i*int(expiryReuse.Seconds()), (i+1)*int(expiryReuse.Seconds())))
		seps = append(seps, "--:")
		vals = append(vals, millis(p))
	}
	fmt.Fprintf(w, "| tokens/s | failed | p50 | p99 | %s | longest gap between tokens (ending at) | slowest answer (at) | Vault logins |\n", strings.Join(cols, " | "))
	fmt.Fprintf(w, "|--:|--:|--:|--:|%s|--:|--:|--:|\n", strings.Join(seps, "|"))
	fmt.Fprintf(w, "| %.0f | %d | %s | %s | %s | %s (%.1fs) | %s (%.1fs) | %.0f |\n\n", float64(r.ok)/r.duration.Seconds(), r.bad,
		millis(r.p50), millis(r.p99), strings.Join(vals, " | "), millis(r.gap), r.gapAt.Seconds(), millis(r.slowest), r.slowestAt.Seconds(), logins)
}
