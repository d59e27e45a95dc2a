//go:build e2e && bench

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The tables of `make bench`, in Markdown, and the picture's data.

// share is CPU time d as a share of all cores over the run.
func (r wrkResult) share(d time.Duration) string {
	if r.Duration <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(d)/float64(r.Duration)/float64(runtime.NumCPU()))
}

// perRequest is the CPU time of a process per request, in microseconds.
func (r wrkResult) perRequest(d time.Duration) float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(d) / float64(r.Requests) / float64(time.Microsecond)
}

func us(v float64) string { return fmt.Sprintf("%.0f", v) }

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
	if b == 0 || a == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// rateRatio is "a / b = ratio" for two rates.
func rateRatio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%s (%.0f / %.0f)", ratio(a, b), a, b)
}

func writeLoadTable(w io.Writer, l loadResults, perCheck time.Duration, idle memSample, loadBefore string, docker *dockerAuth) {
	fmt.Fprintf(w, "### Load: wrk → relay → Vault → plugin, loopback, %s per row\n\n", loadDuration)
	fmt.Fprintf(w, "One user, one scope (`%s`), ES256 tokens, `GET %s`; wrk -t min(c,2) -c c.\n", benchScope, tokenQuery)
	fmt.Fprintf(w, "Load average just before the load run: %s (%d cores; a figure above %d means other work competed for the CPU).\n", loadBefore, runtime.NumCPU(), runtime.NumCPU())
	if docker != nil {
		fmt.Fprintf(w, "docker_auth: cesanta/docker_auth's auth_server %s, the same user and bcrypt hash (cost %d), an ES256 key, an ACL granting the scope.\n",
			docker.Version, bcrypt.DefaultCost)
	} else {
		fmt.Fprintln(w, "docker_auth: skipped (DOCKER_AUTH_BIN not set).")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "front: the relay, or docker_auth. front, Vault, plugin, wrk: CPU time per request of each process, in µs.")
	fmt.Fprintln(w, "busy: the four together, as a share of all cores; others: what the rest of the machine used meanwhile")
	fmt.Fprintln(w, "(near 0% on a quiet machine). failed: non-2xx answers and socket errors.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| series | conns | tokens/s | p50 | p99 | longest | failed | front | Vault | plugin | wrk | busy | others |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range l.Rows {
		c := r.CPU
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n",
			r.Series, r.Conns, r.OKPerSec(), millis(r.P50), millis(r.P99), millis(r.Max), r.Failed(),
			us(r.perRequest(c.Front)), us(r.perRequest(c.Vault)), us(r.perRequest(c.Plugin)), us(r.perRequest(c.Wrk)),
			r.share(c.Front+c.Vault+c.Plugin+c.Wrk), r.share(c.Others))
	}

	fmt.Fprintln(w, "\nSide by side (tokens/s ratios at each connection count):")
	fmt.Fprintln(w, "\n| conns | warm / floor | warm / one call per token | batch token / service token | warm / docker_auth | cache off / docker_auth |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|")
	for _, c := range loadConns {
		warm, docker := l.find(seriesWarm, c).OKPerSec(), l.find(seriesDocker, c).OKPerSec()
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s |\n", c,
			rateRatio(warm, l.find(seriesFloor, c).OKPerSec()),
			rateRatio(warm, l.find(seriesAlone, c).OKPerSec()),
			rateRatio(l.find(seriesBatch, c).OKPerSec(), warm),
			rateRatio(warm, docker), rateRatio(l.find(seriesCold, c).OKPerSec(), docker))
	}

	cores := runtime.NumCPU()
	bound := float64(cores) / perCheck.Seconds()
	warm, floor, cold := l.best(seriesWarm), l.best(seriesFloor), l.best(seriesCold)
	fmt.Fprintln(w, "\nRatios:")
	fmt.Fprintf(w, "- warm at its best (%d conns, %.0f/s) vs the floor at its best (%d conns, %.0f/s): **%s** of the floor\n",
		warm.Conns, warm.OKPerSec(), floor.Conns, floor.OKPerSec(), ratio(warm.OKPerSec(), floor.OKPerSec()))
	fmt.Fprintf(w, "- cache off vs the bcrypt bound: one bcrypt check (cost %d) takes %s here, so %d cores allow %.1f checks/s; best cache-off rate %.1f/s = **%s** of the bound\n",
		bcrypt.DefaultCost, millis(perCheck), cores, bound, cold.OKPerSec(), ratio(cold.OKPerSec(), bound))
	if l.has(seriesDocker) {
		d := l.best(seriesDocker)
		fmt.Fprintf(w, "- docker_auth at its best (%d conns): %.1f/s = %s of the bcrypt bound; warm relay at its best: **%.0f×** docker_auth\n",
			d.Conns, d.OKPerSec(), ratio(d.OKPerSec(), bound), warm.OKPerSec()/d.OKPerSec())
	}
	fmt.Fprintf(w, "- p99 at 64 conns: floor %s, warm %s, one call per token %s, batch token %s, cache off %s",
		millis(l.find(seriesFloor, 64).P99), millis(l.find(seriesWarm, 64).P99), millis(l.find(seriesAlone, 64).P99),
		millis(l.find(seriesBatch, 64).P99), millis(l.find(seriesCold, 64).P99))
	if l.has(seriesDocker) {
		fmt.Fprintf(w, ", docker_auth %s", millis(l.find(seriesDocker, 64).P99))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "\nMemory (VmRSS):")
	fmt.Fprintln(w, "\n| when | plugin | relay | Vault |")
	fmt.Fprintln(w, "|---|--:|--:|--:|")
	fmt.Fprintf(w, "| idle, 1 user | %s | %s | %s |\n", mib(idle.Plugin), mib(idle.Relay), mib(idle.Vault))
	fmt.Fprintf(w, "| peak under 64 conns, warm, 1 user | %s | %s | %s |\n", mib(l.Peak.Plugin), mib(l.Peak.Relay), mib(l.Peak.Vault))
	if l.DockerPeak > 0 {
		fmt.Fprintf(w, "\ndocker_auth's peak under 64 conns: %s.\n", mib(l.DockerPeak))
	}
}

func writeProfiles(w io.Writer, s profileSet, l loadResults) {
	fmt.Fprintf(w, "\n### Where a warm token's CPU goes: profiles under 64 connections\n\n")
	fmt.Fprintf(w, "CPU profiles of the relay (`-pprof`), Vault (`sys/pprof/profile`) and the plugin (`%s`), taken together\n", pluginPprofEnv)
	fmt.Fprintf(w, "for %s of a warm run at 64 connections (%.0f tokens/s, p99 %s meanwhile; profiling costs a little).\n",
		profileDuration, s.Load.OKPerSec(), millis(s.Load.P99))
	fmt.Fprintln(w, "µs per token: CPU time of the row over the tokens served during the profile. Each sample counts in the")
	fmt.Fprintln(w, "first row its stack matches, so the rows add up to the process's total; the rows marked *across* overlap them.")
	fmt.Fprintf(w, "\nPer token, profiles: relay %s µs, Vault %s µs, plugin %s µs. /proc, same run: relay %s, Vault %s, plugin %s, wrk %s µs.\n",
		us(s.perToken(s.Relay, s.Relay.Total)), us(s.perToken(s.Vault, s.Vault.Total)), us(s.perToken(s.Plugin, s.Plugin.Total)),
		us(s.Load.perRequest(s.Load.CPU.Front)), us(s.Load.perRequest(s.Load.CPU.Vault)),
		us(s.Load.perRequest(s.Load.CPU.Plugin)), us(s.Load.perRequest(s.Load.CPU.Wrk)))
	for _, p := range []procProfile{s.Relay, s.Vault, s.Plugin} {
		writeBreakdown(w, s, p)
	}
	writeEstimates(w, s, l)
}

func writeBreakdown(w io.Writer, s profileSet, p procProfile) {
	if p.Err != "" {
		fmt.Fprintf(w, "\n#### %s: no profile (%s)\n", p.Name, p.Err)
		return
	}
	fmt.Fprintf(w, "\n#### %s: %s µs per token\n\n", p.Name, us(s.perToken(p, p.Total)))
	fmt.Fprintln(w, "| where | µs per token | share |")
	fmt.Fprintln(w, "|---|--:|--:|")
	pct := func(d time.Duration) string {
		if p.Total == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%%", 100*float64(d)/float64(p.Total))
	}
	for _, r := range p.Rows {
		fmt.Fprintf(w, "| %s | %s | %s |\n", r.Label, us(s.perToken(p, r.Time)), pct(r.Time))
	}
	for _, r := range p.Cross {
		fmt.Fprintf(w, "| *across:* %s | %s | %s |\n", r.Label, us(s.perToken(p, r.Time)), pct(r.Time))
	}
	fmt.Fprintf(w, "\n<details><summary>%s: functions with the most CPU of their own</summary>\n\n", p.Name)
	fmt.Fprintln(w, "| function | µs per token | share |")
	fmt.Fprintln(w, "|---|--:|--:|")
	for _, r := range p.Top {
		fmt.Fprintf(w, "| `%s` | %.1f | %s |\n", r.Label, s.perToken(p, r.Time), pct(r.Time))
	}
	fmt.Fprintln(w, "\n</details>")
}

// writeBatchingSaved is batching's before and after, measured in this
// run: the same relay with storage.vault.batch false, then true.
func writeBatchingSaved(w io.Writer, l loadResults) {
	if !l.has(seriesAlone) {
		return
	}
	fmt.Fprintln(w, "\n### Batching (token/batch): before and after, this run")
	fmt.Fprintln(w, "\nBefore: the relay with `storage.vault.batch: false`, one Vault call per token; after: the default, requests")
	fmt.Fprintln(w, "that arrive while a mount's calls are in flight go together. µs: CPU per token of each process.")
	fmt.Fprintln(w, "\n| conns | tokens/s before → after | p99 before → after | relay µs | Vault µs | plugin µs | saved, µs per token |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range loadConns {
		a, b := l.find(seriesAlone, c), l.find(seriesWarm, c)
		pr := func(r wrkResult, d time.Duration) float64 { return r.perRequest(d) }
		saved := pr(a, a.CPU.Front+a.CPU.Vault+a.CPU.Plugin) - pr(b, b.CPU.Front+b.CPU.Vault+b.CPU.Plugin)
		fmt.Fprintf(w, "| %d | %.0f → %.0f | %s → %s | %s → %s | %s → %s | %s → %s | %s |\n", c,
			a.OKPerSec(), b.OKPerSec(), millis(a.P99), millis(b.P99),
			us(pr(a, a.CPU.Front)), us(pr(b, b.CPU.Front)), us(pr(a, a.CPU.Vault)), us(pr(b, b.CPU.Vault)),
			us(pr(a, a.CPU.Plugin)), us(pr(b, b.CPU.Plugin)), us(saved))
	}
}

// writeEstimates puts each of issue 15's candidate optimisations against
// the profiles (and, for the relay's token, against the batch-token run).
func writeEstimates(w io.Writer, s profileSet, l loadResults) {
	if s.Relay.Err != "" || s.Vault.Err != "" || s.Plugin.Err != "" {
		fmt.Fprintln(w, "\nNo estimates: a profile is missing.")
		return
	}
	t := func(p procProfile, label string) float64 { return s.perToken(p, p.row(label)) }
	total := s.perToken(s.Relay, s.Relay.Total) + s.perToken(s.Vault, s.Vault.Total) +
		s.perToken(s.Plugin, s.Plugin.Total) + s.Load.perRequest(s.Load.CPU.Wrk)
	rate := l.find(seriesWarm, 64).OKPerSec()
	ifSaved := func(saved float64) string {
		if total <= saved || rate == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f → %.0f", rate, rate*total/(total-saved))
	}

	writeBatchingSaved(w, l)

	fmt.Fprintln(w, "\n### Issue 15's candidates: what each still costs, and would save if it went")
	fmt.Fprintf(w, "\nEstimated from the profiles above; the token lookup also measured. The four processes use the CPU at 64\n")
	fmt.Fprintf(w, "connections, so tokens/s grow about as C / (C − saving), C = %s µs per token (the three profiles and wrk).\n", us(total))
	fmt.Fprintln(w, "On a busy machine the absolute rates are low; the ratios hold as long as our share of the CPU stays the same.")
	fmt.Fprintln(w, "\n| candidate | cost now, µs per token | saves at most, µs | warm tokens/s at 64 conns: now → without it |")
	fmt.Fprintln(w, "|---|---|--:|--:|")

	exV, exP := t(s.Vault, rowVaultExistence), t(s.Plugin, rowPluginExistence)
	fmt.Fprintf(w, "| existence check: Vault asks the plugin over gRPC before each POST | Vault %s + plugin %s | %s | %s |\n",
		us(exV), us(exP), us(exV+exP), ifSaved(exV+exP))

	read, decode, other := t(s.Plugin, rowPluginUserRead), t(s.Plugin, rowPluginUserJSON), t(s.Plugin, rowPluginStorage)
	serve := t(s.Vault, rowVaultStorage)
	serveUser := 0.0
	if read+other > 0 {
		serveUser = serve * read / (read + other) // Vault's share for the user record
	}
	user := read + decode + serveUser
	fmt.Fprintf(w, "| user record read through storage and JSON-decoded on each request | plugin: read %s + decode %s; Vault serving it %s (of %s for all the plugin's reads; the plugin's other storage calls: %s) | %s | %s |\n",
		us(read), us(decode), us(serveUser), us(serve), us(other), us(user), ifSaved(user))

	json, alloc, union := t(s.Relay, rowRelayJSON), t(s.Relay, crossAlloc), t(s.Relay, crossJSONGC)
	client, dial := t(s.Relay, rowRelayClient), t(s.Relay, crossDial)
	fmt.Fprintf(w, "| relay: allocations, JSON, HTTP client to Vault | JSON %s; allocation and GC %s (the two together %s); HTTP client %s, of which new connections %s | %s (JSON and allocation gone) | %s |\n",
		us(json), us(alloc), us(union), us(client), us(dial), us(union), ifSaved(union))

	lookup := t(s.Vault, rowVaultToken)
	svc, batch := l.find(seriesWarm, 64), l.find(seriesBatch, 64)
	measured := svc.perRequest(svc.CPU.Vault) - batch.perRequest(batch.CPU.Vault)
	fmt.Fprintf(w, "| Vault's lookup of the relay's token (deployment: a batch token) | profile: lookup and ACL %s. Measured, 64 conns: Vault %s µs per token with the service token, %s with a batch token; %.0f vs %.0f tokens/s, p99 %s vs %s | %s (profile), %s (measured) | %s |\n",
		us(lookup), us(svc.perRequest(svc.CPU.Vault)), us(batch.perRequest(batch.CPU.Vault)),
		svc.OKPerSec(), batch.OKPerSec(), millis(svc.P99), millis(batch.P99), us(lookup), us(measured), ifSaved(lookup))

	floor := l.find(seriesFloor, 64)
	fmt.Fprintf(w, "\nFor scale: the floor (`GET ca/pem`, no token, no storage read) costs Vault %s µs and the plugin %s µs per request at 64 connections;\n",
		us(floor.perRequest(floor.CPU.Vault)), us(floor.perRequest(floor.CPU.Plugin)))
	fmt.Fprintf(w, "a warm token costs Vault %s and the plugin %s in the same table. Vault's request hop to the plugin and back: %s µs per token.\n",
		us(svc.perRequest(svc.CPU.Vault)), us(svc.perRequest(svc.CPU.Plugin)), us(t(s.Vault, rowVaultRoute)))
}

func writeScaleTable(w io.Writer, s scaleResults) {
	fmt.Fprintf(w, "\n### Scale: one user's token latency, 1 connection, warm cache, %s per row\n\n", scaleDuration)
	fmt.Fprintf(w, "Fillers have %d entries (%d bytes of access string each); %d users written in %s (%.0f users/s, password_hash, %d writers).\n\n",
		scaleEntries, s.AccessSize, s.Added, s.WriteTime.Round(time.Second), float64(s.Added)/s.WriteTime.Seconds(), userWriters)
	fmt.Fprintln(w, "relay, Vault, plugin: CPU time per request, in µs; others: CPU the rest of the machine used meanwhile.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| users in mount | entries of the user | p50 | p99 | tokens/s | relay | Vault | plugin | others |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range s.Rows {
		fmt.Fprintf(w, "| %d | %d | %s | %s | %.0f | %s | %s | %s | %s |\n", r.Users, r.Entries, millis(r.P50), millis(r.P99), r.OKPerSec(),
			us(r.perRequest(r.CPU.Front)), us(r.perRequest(r.CPU.Vault)), us(r.perRequest(r.CPU.Plugin)), r.share(r.CPU.Others))
	}
	small, large := s.find(10, scaleEntryCounts[0]), s.find(scaleUsers, scaleEntryCounts[0])
	fmt.Fprintf(w, "\nFlatness: a %d-entry user's p50 with 10 users %s, with %d users %s (×%s); p99 %s vs %s.\n",
		scaleEntryCounts[0], millis(small.P50), scaleUsers, millis(large.P50), ratio(float64(large.P50), float64(small.P50)),
		millis(small.P99), millis(large.P99))
	l := s.LoadLarge
	fmt.Fprintf(w, "\nWith 64 connections, %d users, the %d-entry user: %.0f tokens/s, p50 %s, p99 %s, %d failed; per request relay %s µs, Vault %s µs, plugin %s µs.\n",
		scaleUsers, scaleEntries, l.OKPerSec(), millis(l.P50), millis(l.P99), l.Failed(),
		us(l.perRequest(l.CPU.Front)), us(l.perRequest(l.CPU.Vault)), us(l.perRequest(l.CPU.Plugin)))
	fmt.Fprintln(w, "\n| when | plugin | relay | Vault |")
	fmt.Fprintln(w, "|---|--:|--:|--:|")
	fmt.Fprintf(w, "| idle, %d users | %s | %s | %s |\n", scaleUsers, mib(s.IdleLarge.Plugin), mib(s.IdleLarge.Relay), mib(s.IdleLarge.Vault))
	fmt.Fprintf(w, "| peak under 64 conns, %d-entry user, %d users | %s | %s | %s |\n",
		scaleEntries, scaleUsers, mib(s.PeakLarge.Plugin), mib(s.PeakLarge.Relay), mib(s.PeakLarge.Vault))
}

// writeTargets checks this run against issue 15's targets.
func writeTargets(w io.Writer, l loadResults, s scaleResults, perCheck time.Duration) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	warm, floor, cold := l.best(seriesWarm), l.best(seriesFloor), l.best(seriesCold)
	bound := float64(runtime.NumCPU()) / perCheck.Seconds()
	p99 := l.find(seriesWarm, 64).P99
	relayPeak := max(l.Peak.Relay, s.PeakLarge.Relay)
	small, large := s.find(10, scaleEntryCounts[0]), s.find(scaleUsers, scaleEntryCounts[0])
	flat := float64(large.P50) / float64(max(small.P50, 1))

	fmt.Fprintln(w, "\n### Issue 15's targets, this run")
	fmt.Fprintln(w, "\n| target | this run | |")
	fmt.Fprintln(w, "|---|---|---|")
	fmt.Fprintf(w, "| warm tokens/s ≥ 0.5× the floor, each at its best concurrency | %s | %s |\n",
		rateRatio(warm.OKPerSec(), floor.OKPerSec()), verdict(warm.OKPerSec() >= 0.5*floor.OKPerSec()))
	fmt.Fprintf(w, "| warm p99 at 64 connections < 50 ms | %s | %s |\n", millis(p99), verdict(p99 > 0 && p99 < 50*time.Millisecond))
	fmt.Fprintf(w, "| cache off within 10%% of the bcrypt bound | %s of %.1f/s | %s |\n",
		ratio(cold.OKPerSec(), bound), bound, verdict(cold.OKPerSec() >= 0.9*bound))
	fmt.Fprintf(w, "| relay RSS < 40 MB | peak %s | %s |\n", mib(relayPeak), verdict(relayPeak > 0 && relayPeak*1024 < 40_000_000))
	fmt.Fprintf(w, "| latency flat from 10 to %d users (p50 within 20%%) | ×%.2f | %s |\n", scaleUsers, flat, verdict(flat <= 1.2))
}

// plotData is the picture's data for gnuplot: one block per series that
// ran, its first line the series' name, then conns, tokens/s, p99 in ms.
func plotData(l loadResults) []byte {
	var b bytes.Buffer
	for _, series := range []string{seriesFloor, seriesWarm, seriesAlone, seriesBatch, seriesCold, seriesDocker} {
		if !l.has(series) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\n\n") // gnuplot: the next block (index)
		}
		fmt.Fprintf(&b, "%q\tconns\ttokens/s\tp99_ms\n", series)
		for _, c := range loadConns {
			r := l.find(series, c)
			fmt.Fprintf(&b, "%d\t%.1f\t%.3f\n", c, r.OKPerSec(), float64(r.P99)/float64(time.Millisecond))
		}
	}
	return b.Bytes()
}
