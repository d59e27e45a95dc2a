//go:build e2e && bench

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// CPU profiles of the relay, Vault and the plugin, taken together during
// one warm run at 64 connections: the relay's -pprof listener, Vault's
// sys/pprof/profile, and the plugin's listener (VAULT_PLUGIN_REGISTRY_PPROF,
// given at registration). Each sample's stack is put in the first row
// whose patterns it matches, so a process's rows add up to its total.

// pluginPprofEnv is plugin.PprofEnv.
const pluginPprofEnv = "VAULT_PLUGIN_REGISTRY_PPROF"

// profileRule is one row of a process's breakdown: a sample belongs to it
// when its stack (frames joined by newlines) matches every pattern.
type profileRule struct {
	Label    string
	Patterns []*regexp.Regexp
}

func rule(label string, patterns ...string) profileRule {
	r := profileRule{Label: label}
	for _, p := range patterns {
		r.Patterns = append(r.Patterns, regexp.MustCompile(p))
	}
	return r
}

func (r profileRule) matches(stack string) bool {
	for _, p := range r.Patterns {
		if !p.MatchString(stack) {
			return false
		}
	}
	return true
}

// Row labels the estimates refer to.
const (
	rowVaultExistence  = "existence check: round trip to the plugin before the POST"
	rowVaultToken      = "lookup and ACL of the relay's token"
	rowVaultStorage    = "serving the plugin's storage reads (gRPC server)"
	rowVaultRoute      = "the request's hop to the plugin and back (gRPC client)"
	rowPluginExistence = "existence check (gRPC server side)"
	rowPluginUserRead  = "user record: storage read (gRPC call into Vault)"
	rowPluginUserJSON  = "user record: JSON decode"
	rowPluginStorage   = "other storage calls into Vault"
	rowRelayJSON       = "JSON: Vault request and answer, the client's answer"
	rowRelayClient     = "HTTP client to Vault: transport, connection I/O"
	rowGC              = "Go GC in the background"
	rowRuntime         = "Go scheduler, netpoll, idle threads"
	rowOther           = "other"

	crossAlloc   = "memory allocation and GC"
	crossSyscall = "system calls on sockets"
	crossFutex   = "futex: waking and parking threads"
	crossDial    = "new connections (dial)"
	crossJSONGC  = "JSON or allocation (union)"
)

var (
	runtimeRules = []profileRule{
		rule(rowGC, `runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge`),
		rule(rowRuntime, `runtime\.(mcall|mstart|schedule|findRunnable|park_m|goexit0|sysmon|netpoll)`),
	}
	relayRules = append([]profileRule{
		rule(rowRelayJSON, `encoding/json`),
		rule(rowRelayClient, `net/http\.\(\*Transport\)|net/http\.\(\*persistConn\)|net/http\.persistConnWriter|net/http\.\(\*Client\)|net/http\.send`),
		rule("Vault API client (vault/api, retryablehttp)", `hashicorp/vault/api|retryablehttp`),
		rule("metrics and logging", `prometheus|go-hclog|relay\.\(\*Server\)\.record`),
		rule("the relay's own code: parsing, credential MAC, answer", `vault-plugin-registry/relay`),
		rule("HTTP server: accept, read the request, write the answer", `net/http\.`),
	}, runtimeRules...)
	vaultRules = append([]profileRule{
		rule(rowVaultExistence, `RouteExistenceCheck|HandleExistenceCheck`),
		rule(rowVaultToken, `\(\*Core\)\.CheckToken|fetchACLTokenEntryAndEntity|\(\*TokenStore\)|\(\*ACL\)`),
		rule(rowVaultStorage, `GRPCStorageServer`),
		rule(rowVaultRoute, `\(\*Router\)\.Route|backendGRPCPluginClient|GRPCBackendClient`),
		rule("audit, quotas, metrics", `vault/audit|/quotas|go-metrics|eventlogger`),
		rule("HTTP server, request and response JSON", `net/http\.|vault/http\.|encoding/json|jsonutil`),
		rule("gRPC transport (other)", `google\.golang\.org/grpc|x/net/http2`),
	}, runtimeRules...)
	pluginRules = append([]profileRule{
		rule(rowPluginExistence, `HandleExistenceCheck`),
		rule("bcrypt", `crypto/bcrypt`),
		rule(rowPluginUserRead, `GRPCStorageClient`, `ReadUser`),
		rule(rowPluginUserJSON, `encoding/json`, `ReadUser`),
		rule(rowPluginStorage, `GRPCStorageClient`),
		rule("ES256 signature", `crypto/ecdsa|crypto/internal/fips140/(ecdsa|nistec|bigmod)|crypto/ed25519|crypto/rsa`),
		rule("the plugin's own code: grant, caches, MAC, claims", `vault-plugin-registry/`),
		rule("SDK: request and response JSON across gRPC", `encoding/json`),
		rule("SDK: framework and plugin glue", `vault/sdk/`),
		rule("gRPC transport", `google\.golang\.org/grpc|x/net/http2`),
	}, runtimeRules...)

	// Cross-cutting figures: they overlap the rows.
	crossRules = []profileRule{
		rule(crossAlloc, `runtime\.mallocgc|runtime\.gcBgMarkWorker|runtime\.gcAssistAlloc|runtime\.bgsweep`),
		rule(crossSyscall, `syscall\.(read|write|Syscall|RawSyscall)|internal/runtime/syscall|internal/poll\.\(\*FD\)\.(Read|Write)`),
		rule(crossFutex, `runtime\.futex`),
		rule(crossDial, `dialConn|net\.\(\*Dialer\)`),
	}
	relayCross = append(slices.Clone(crossRules), rule(crossJSONGC, `encoding/json|runtime\.mallocgc|runtime\.gcBgMarkWorker|runtime\.gcAssistAlloc|runtime\.bgsweep`))
)

// profileRow is CPU time in one row of a breakdown.
type profileRow struct {
	Label string
	Time  time.Duration
}

// procProfile is one process's profile, broken down.
type procProfile struct {
	Name     string
	File     string
	Duration time.Duration // wall time the profile covers
	Total    time.Duration // CPU time sampled
	Rows     []profileRow  // each sample in one row, rules' order, then rowOther
	Cross    []profileRow  // overlapping figures
	Top      []profileRow  // functions with the most CPU of their own
	Err      string        // why there is no profile
}

// row returns the time of the row or cross figure labelled label.
func (p procProfile) row(label string) time.Duration {
	for _, r := range slices.Concat(p.Rows, p.Cross) {
		if r.Label == label {
			return r.Time
		}
	}
	return 0
}

// profileSet is the three profiles and the load they were taken under.
type profileSet struct {
	Load                 wrkResult
	Relay, Vault, Plugin procProfile
}

// perToken is d in microseconds per token of the profiled run.
func (s profileSet) perToken(p procProfile, d time.Duration) float64 {
	tokens := s.Load.OKPerSec() * p.Duration.Seconds()
	if tokens <= 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / tokens
}

// profile takes the three CPU profiles during a warm run at 64
// connections.
func (b *loadBench) profile() profileSet {
	b.t.Helper()
	pluginPprof := b.enablePluginProfiles()
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		dir = b.t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.useUser(benchUser)
	tg := b.relayTarget(b.relay)
	b.warm(tg)

	secs := int(profileDuration.Seconds())
	set := profileSet{
		Relay:  procProfile{Name: "relay", File: filepath.Join(dir, "relay.pprof")},
		Vault:  procProfile{Name: "Vault", File: filepath.Join(dir, "vault.pprof")},
		Plugin: procProfile{Name: "plugin", File: filepath.Join(dir, "plugin.pprof")},
	}
	sources := []struct {
		p     *procProfile
		url   string
		token string
	}{
		{&set.Relay, fmt.Sprintf("%sprofile?seconds=%d", b.relayPprof, secs), ""},
		{&set.Vault, fmt.Sprintf("%s/v1/sys/pprof/profile?seconds=%d", b.vault.Addr, secs), rootToken},
		{&set.Plugin, fmt.Sprintf("%sprofile?seconds=%d", pluginPprof, secs), ""},
	}
	b.t.Logf("profiles: relay, Vault, plugin for %s under 64 connections", profileDuration)
	var wg sync.WaitGroup
	wg.Go(func() { set.Load = b.run(tg, 64, profileDuration+4*time.Second) })
	time.Sleep(2 * time.Second) // wrk at full speed before sampling starts
	for _, s := range sources {
		wg.Go(func() {
			if err := fetchProfile(s.url, s.token, s.p.File); err != nil {
				s.p.Err = err.Error()
			}
		})
	}
	wg.Wait()
	b.t.Logf("profiles kept in %s", dir)
	for _, s := range []struct {
		p     *procProfile
		rules []profileRule
		cross []profileRule
	}{{&set.Relay, relayRules, relayCross}, {&set.Vault, vaultRules, crossRules}, {&set.Plugin, pluginRules, crossRules}} {
		if s.p.Err == "" {
			if err := s.p.breakDown(s.rules, s.cross); err != nil {
				s.p.Err = err.Error()
			}
		}
		if s.p.Err != "" {
			b.t.Logf("no %s profile: %s", s.p.Name, s.p.Err)
		}
	}
	return set
}

// enablePluginProfiles registers the plugin again with its profile
// listener turned on (`vault plugin register -env`), reloads it, and
// returns the listener's base URL. The plugin runs in a new process.
func (b *loadBench) enablePluginProfiles() string {
	b.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(b.t))
	bin, err := os.ReadFile(bins.plugin)
	if err != nil {
		b.t.Fatal(err)
	}
	b.vault.CLI(b.t, "plugin", "register", "-sha256="+sha256Hex(bin), "-version="+pluginVersion,
		"-env="+pluginPprofEnv+"="+addr, "secret", pluginName)
	b.vault.CLI(b.t, "plugin", "reload", "-plugin="+pluginName)
	old := b.pluginPID
	b.warm(b.relayTarget(b.relay)) // starts the new process
	base := "http://" + addr + "/debug/pprof/"
	deadline := time.Now().Add(startTimeout)
	for {
		if pid := findPluginPID(b.vaultPID); pid != 0 && pid != old {
			if code, err := statusOf(base); err == nil && code == http.StatusOK {
				b.pluginPID = pid
				return base
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the plugin serves no profiles on %s after the reload", addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fetchProfile(url, token, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), profileDuration+time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, truncate(body, 200))
	}
	return os.WriteFile(path, body, 0o644)
}

// traceSample is one stack of `go tool pprof -traces` and its CPU time.
type traceSample struct {
	Time  time.Duration
	Leaf  string
	Stack string // frames, leaf first, joined by newlines
}

var traceDuration = regexp.MustCompile(`(?m)^Duration: (\S+),`)

// readTraces runs `go tool pprof -traces` on a profile.
func readTraces(path string) (time.Duration, []traceSample, error) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "tool", "pprof", "-traces", path).Output()
	if err != nil {
		return 0, nil, fmt.Errorf("go tool pprof -traces %s: %w", filepath.Base(path), err)
	}
	m := traceDuration.FindSubmatch(out)
	if m == nil {
		return 0, nil, fmt.Errorf("go tool pprof -traces %s: no Duration line", filepath.Base(path))
	}
	dur, err := time.ParseDuration(string(m[1]))
	if err != nil {
		return 0, nil, fmt.Errorf("profile duration %q: %w", m[1], err)
	}
	var samples []traceSample
	blocks := strings.Split(string(out), "-----------+-------------------------------------------------------")
	for _, block := range blocks[1:] {
		var s traceSample
		var frames []string
		for line := range strings.SplitSeq(block, "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			if len(frames) == 0 {
				value, frame, ok := strings.Cut(strings.TrimSpace(line), " ")
				if !ok {
					continue
				}
				if s.Time, err = time.ParseDuration(value); err != nil {
					return 0, nil, fmt.Errorf("sample value %q: %w", value, err)
				}
				s.Leaf = strings.TrimSuffix(strings.TrimSpace(frame), " (inline)")
				frames = append(frames, s.Leaf)
				continue
			}
			frames = append(frames, strings.TrimSuffix(strings.TrimSpace(line), " (inline)"))
		}
		if len(frames) > 0 {
			s.Stack = strings.Join(frames, "\n")
			samples = append(samples, s)
		}
	}
	return dur, samples, nil
}

// breakDown reads the profile and fills in the rows, cross figures and
// top functions.
func (p *procProfile) breakDown(rules, cross []profileRule) error {
	dur, samples, err := readTraces(p.File)
	if err != nil {
		return err
	}
	p.Duration = dur
	rows := make([]time.Duration, len(rules)+1)
	crossTimes := make([]time.Duration, len(cross))
	flat := map[string]time.Duration{}
	for _, s := range samples {
		p.Total += s.Time
		flat[s.Leaf] += s.Time
		i := slices.IndexFunc(rules, func(r profileRule) bool { return r.matches(s.Stack) })
		if i < 0 {
			i = len(rules)
		}
		rows[i] += s.Time
		for j, r := range cross {
			if r.matches(s.Stack) {
				crossTimes[j] += s.Time
			}
		}
	}
	for i, r := range rules {
		p.Rows = append(p.Rows, profileRow{r.Label, rows[i]})
	}
	p.Rows = append(p.Rows, profileRow{rowOther, rows[len(rules)]})
	for j, r := range cross {
		p.Cross = append(p.Cross, profileRow{r.Label, crossTimes[j]})
	}
	for fn, d := range flat {
		p.Top = append(p.Top, profileRow{fn, d})
	}
	slices.SortFunc(p.Top, func(a, b profileRow) int {
		return cmp.Or(cmp.Compare(b.Time, a.Time), strings.Compare(a.Label, b.Label))
	})
	p.Top = p.Top[:min(len(p.Top), 10)]
	return nil
}
