//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Helpers for the operator scenarios (refresh tokens, key rotation,
// hardening): what StartRegistry does, with the configuration an operator
// would change, and a few ways to look at what happened.

// replaceOnce replaces old by new in s and fails the test when old is not
// there exactly once, so a change of the harness's configuration cannot
// silently turn an edit into nothing.
func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("configuration edit: %q occurs %d times in\n%s", old, n, s)
	}
	return strings.Replace(s, old, new, 1)
}

// RegistrySite is where a registry keeps its configuration and storage, and
// the port it listens on, so it can be restarted with the same content.
type RegistrySite struct {
	Kind RegistryKind
	Dir  string
	Port int
}

// NewRegistrySite picks a directory and a port for a registry.
func NewRegistrySite(t testing.TB, kind RegistryKind) *RegistrySite {
	t.Helper()
	return &RegistrySite{Kind: kind, Dir: t.TempDir(), Port: freePort(t)}
}

// Start starts a registry of the site's kind for svc, like StartRegistry,
// with its configuration passed through edit first when edit is not nil.
func (s *RegistrySite) Start(t testing.TB, relay *Relay, svc *Service, edit func(config string) string) *Registry {
	t.Helper()
	config := fmt.Sprintf(registryConfig, filepath.Join(s.Dir, "storage"), s.Port, relay.Realm, svc.Name, tokenIssuer, svc.BundlePath)
	if edit != nil {
		config = edit(config)
	}
	cfg := filepath.Join(s.Dir, "config.yml")
	mustWrite(t, cfg, []byte(config))
	env := baseEnv(s.Dir)
	var bin string
	switch s.Kind {
	case Registry28:
		bin = tool(t, "docker-registry")
	case RegistryV3:
		bin = tool(t, "registry")
		env = append(env, "OTEL_TRACES_EXPORTER=none")
	default:
		t.Fatalf("unknown registry kind %q", s.Kind)
	}
	r := &Registry{
		Kind:    s.Kind,
		Host:    fmt.Sprintf("localhost:%d", s.Port),
		URL:     fmt.Sprintf("http://127.0.0.1:%d", s.Port),
		Service: svc,
	}
	r.Proc = StartProcess(t, string(s.Kind)+"-"+svc.Name, env, bin, "serve", cfg)
	waitFor(t, string(s.Kind), r.Proc, startTimeout, func() error {
		return wantStatus(r.URL+"/v2/", http.StatusUnauthorized)
	})
	return r
}

// bearerGet sends GET url with the registry token, as a client does after
// the token exchange, and returns the status and body.
func bearerGet(t testing.TB, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	code, _, body := doHTTP(t, req)
	return code, body
}

// RootCall calls Vault's HTTP API as root and returns the status and the
// decoded JSON answer (nil when there is none).
func (v *Vault) RootCall(t testing.TB, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(mustJSON(t, body))
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", rootToken)
	code, _, raw := doHTTP(t, req)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", method, path, code, truncate(raw, 300))
		}
	}
	return code, out
}

// jsonField reads a string at a path of keys in a decoded JSON object.
func jsonField(m map[string]any, keys ...string) string {
	var cur any = m
	for _, k := range keys {
		obj, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = obj[k]
	}
	s, _ := cur.(string)
	return s
}

// countLines counts the lines of a log that hold every one of parts.
func countLines(log string, parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all && line != "" {
			n++
		}
	}
	return n
}

// pidOf is the process's id, for signals the harness does not send.
func pidOf(p *Process) int { return p.cmd.Process.Pid }

// quantile returns the q-quantile (0 < q ≤ 1) of durations, nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
