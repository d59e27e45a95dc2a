//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	alertRulesFile = "../deploy/prometheus/godoauth-relay.rules.yml"
	alertTestsFile = "../deploy/prometheus/godoauth-relay.rules.test.yml"
	dashboardFile  = "../deploy/grafana/godoauth-relay.json"
)

// metricName finds the relay's metric names in a PromQL expression.
var metricName = regexp.MustCompile(`\bgodoauth_[a-zA-Z0-9_:]*`)

// TestDeploy_alertsAndDashboardNameRealMetrics: every metric the alert
// rules and the Grafana dashboard name is in the real relay's /metrics,
// the rules pass `promtool check rules` and their own `promtool test
// rules` cases, and the dashboard's queries parse as PromQL.
func TestDeploy_alertsAndDashboardNameRealMetrics(t *testing.T) {
	st := NewStack(t, "registry")
	st.Services["registry"].WriteUser(t, "alice", "alice-pw-77a0", "repository:linux/app:pull")
	// One answer of a few kinds, so the labelled families have a series.
	st.Relay.Token(t, "registry", "alice", "alice-pw-77a0", "repository:linux/app:pull")
	st.Relay.Token(t, "registry", "alice", "wrong", "repository:linux/app:pull")
	st.Relay.Token(t, "no-such-service", "alice", "alice-pw-77a0")
	families := metricFamilies(st.Relay.Metrics(t))

	rules := alertExprs(t)
	dashboard := dashboardExprs(t)
	if len(rules) < 5 || len(dashboard) < 5 {
		t.Fatalf("%d alert rules and %d dashboard queries; want at least 5 each", len(rules), len(dashboard))
	}
	named := map[string]bool{}
	for where, expr := range mergeExprs(rules, dashboard) {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s names no relay metric: %s", where, expr)
		}
		for _, n := range names {
			named[n] = true
			if !families[n] {
				t.Errorf("%s names %s, which the relay's /metrics does not have", where, n)
			}
		}
	}
	// The alerts cover what an operator must hear about.
	for _, m := range []string{"godoauth_relay_vault_errors_total", "godoauth_relay_requests_total",
		"godoauth_relay_request_duration_seconds_bucket", "godoauth_relay_vault_token_errors_total",
		"godoauth_relay_vault_token_expiry_timestamp_seconds"} {
		if !named[m] {
			t.Errorf("neither the rules nor the dashboard use %s", m)
		}
	}

	promtool := tool(t, "promtool")
	if r := RunCommand(t, baseEnv(t.TempDir()), "", "", promtool, "check", "rules", alertRulesFile); !r.OK() {
		t.Errorf("promtool check rules: %v", r)
	}
	if r := RunCommand(t, baseEnv(t.TempDir()), filepath.Dir(alertTestsFile), "", promtool, "test", "rules",
		filepath.Base(alertTestsFile)); !r.OK() {
		t.Errorf("promtool test rules: %v", r)
	}
	// The dashboard's queries, with Grafana's variables filled in, as
	// recording rules: promtool parses each.
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	fill := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$instance", ".*")
	for i, where := range sortedKeys(dashboard) {
		q, _ := json.Marshal(fill.Replace(dashboard[where]))
		fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %s\n", i, q)
	}
	asRules := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(asRules, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := RunCommand(t, baseEnv(t.TempDir()), "", "", promtool, "check", "rules", asRules); !r.OK() {
		t.Errorf("the dashboard's queries do not parse: %v", r)
	}
}

// metricFamilies returns the names in a /metrics text, with a histogram's
// _bucket, _sum and _count.
func metricFamilies(text string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	return names
}

func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(readBytes(t, alertRulesFile), &file); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	return exprs
}

func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(readBytes(t, dashboardFile), &d); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs[fmt.Sprintf("panel %q query %s", p.Title, q.RefID)] = q.Expr
		}
	}
	return exprs
}

func mergeExprs(ms ...map[string]string) map[string]string {
	all := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			all[k] = v
		}
	}
	return all
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestDeploy_healthcheckSubcommand: `godoauth-relay healthcheck`, the
// container's HEALTHCHECK, exits 0 while the relay's /healthz is 200 and 1
// once Vault is sealed.
func TestDeploy_healthcheckSubcommand(t *testing.T) {
	st := NewStack(t, "registry")
	check := func() Result {
		return RunCommand(t, baseEnv(t.TempDir()), "", "", bins.relay, "healthcheck", "-url", st.Relay.URL+"/healthz")
	}
	if r := check(); !r.OK() {
		t.Fatalf("healthcheck of a healthy relay: %v", r)
	}
	st.Vault.Seal(t)
	waitFor(t, "healthz 503", nil, 10*time.Second, func() error { return wantStatus(st.Relay.URL+"/healthz", http.StatusServiceUnavailable) })
	if r := check(); r.ExitCode != 1 || !strings.Contains(r.Stderr, "503") {
		t.Errorf("healthcheck with Vault sealed: want exit 1 naming the 503: %v", r)
	}
}
