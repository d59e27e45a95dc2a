//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// recipeStep is one shell block of docs/MIGRATING.md, "Coming from godoauth".
type recipeStep struct {
	number   string // the "**N." before the block
	commands []string
}

var stepHeading = regexp.MustCompile(`(?m)^\*\*(\d+)\.`)

// readRecipe returns the numbered steps of docs/MIGRATING.md ("Coming
// from godoauth"), each with its shell commands (comments dropped,
// continued lines joined).
func readRecipe(t *testing.T) []recipeStep {
	t.Helper()
	doc := string(readBytes(t, "../docs/MIGRATING.md"))
	start := strings.Index(doc, "# Coming from godoauth")
	end := strings.Index(doc, "**Roll back.**")
	if start < 0 || end < start {
		t.Fatal("docs/MIGRATING.md: no \"Coming from godoauth\" with a roll back")
	}
	section := doc[start:end]
	var steps []recipeStep
	for _, block := range strings.Split(section, "```sh\n")[1:] {
		before := section[:strings.Index(section, block)]
		headings := stepHeading.FindAllStringSubmatch(before, -1)
		if len(headings) == 0 {
			t.Fatalf("docs/MIGRATING.md: a shell block before any numbered step:\n%s", block)
		}
		step := recipeStep{number: headings[len(headings)-1][1]}
		body, _, _ := strings.Cut(block, "```")
		body = strings.ReplaceAll(body, "\\\n", " ")
		for _, line := range strings.Split(body, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			step.commands = append(step.commands, line)
		}
		steps = append(steps, step)
	}
	return steps
}

// TestRecipe_comingFromGodoauth runs docs/MIGRATING.md's "Coming from
// godoauth" steps in order, as written, on a setup made as godoauth's README makes
// it: every command but those of step 4 (the relay's policy and token,
// an administrator's) with a token of deploy/policies/operator.hcl. The
// relay, started in step 5, must answer its very first request with a
// token: no 503 gap between the switch and the relay's own token.
func TestRecipe_comingFromGodoauth(t *testing.T) {
	steps := readRecipe(t)
	if len(steps) < 5 {
		t.Fatalf("docs/MIGRATING.md: %d shell blocks in the recipe, want at least 5", len(steps))
	}
	v := StartVault(t)
	dir := t.TempDir() // godoauth's directory: config.yml, certs/

	// godoauth's setup: a KV version 1 mount of users, a key pair, a
	// token that can read the mount, and its YAML.
	v.CLI(t, "secrets", "enable", "-path=registry", "generic")
	users := []godoauthUser{
		{"foo", "bar", "repository:linux/app:*;repository:linux/db:pull"},
		{"bar", "foo", "repository:bar/foo:*"},
	}
	for _, u := range users {
		v.CLI(t, "write", "registry/"+u.name, "password="+u.password, "access="+u.access)
	}
	if err := os.Mkdir(filepath.Join(dir, "certs"), 0o700); err != nil {
		t.Fatal(err)
	}
	openssl := exec.Command("openssl", "req", "-x509", "-nodes", "-days", "365", "-newkey", "rsa:2048",
		"-keyout", "server.key", "-out", "server.pem", "-subj", "/CN=Token")
	openssl.Dir = filepath.Join(dir, "certs")
	if out, err := openssl.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	v.CLIInput(t, "path \"registry/*\" {\n  capabilities = [\"read\"]\n}\n", "policy", "write", "godoauth", "-")
	godoauthToken := strings.TrimSpace(v.CLI(t, "token", "create", "-policy=godoauth", "-field=token"))
	relayPort := freePort(t)
	relayURL := fmt.Sprintf("http://127.0.0.1:%d", relayPort)
	config := RelayYAML(t, RelayOptions{Vault: v, Token: godoauthToken, Extra: godoauthKeyPair}, relayPort)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	// The operator, with deploy/policies/operator.hcl; deploy/ at hand.
	copyTree(t, "../deploy/policies", filepath.Join(dir, "deploy", "policies"))
	v.CLI(t, "policy", "write", "registry-operator", "../deploy/policies/operator.hcl")
	operatorToken := strings.TrimSpace(v.CLI(t, "token", "create", "-policy=registry-operator",
		"-no-default-policy", "-field=token"))
	bin := t.TempDir() // the operator's PATH: vault and godoauth-relay
	for name, target := range map[string]string{"vault": tool(t, "vault"), "godoauth-relay": bins.relay} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	env := func(token string) []string {
		e := append(baseEnv(dir), "VAULT_ADDR="+v.Addr)
		e[0] = "PATH=" + bin + ":" + os.Getenv("PATH")
		if token != "" {
			e = append(e, "VAULT_TOKEN="+token)
		}
		return e
	}

	var relay *Process
	for _, step := range steps {
		for _, cmd := range step.commands {
			switch {
			case strings.HasPrefix(cmd, "cd "):
				continue // godoauth's directory: dir here
			case strings.Contains(cmd, "godoauth-relay -config"):
				// The relay in the foreground, as godoauth ran: here in the
				// background, with no operator token in its environment.
				relay = StartProcess(t, "relay", env(""), "bash", "-c", "cd "+shellQuote(dir)+" && "+cmd)
				waitFor(t, "relay", relay, startTimeout, func() error {
					return wantStatus(relayURL+"/healthz", http.StatusOK)
				})
				code, _, body := httpGet(t, relayURL+"/auth?service=registry&scope=repository:linux/app:pull", "foo", "bar")
				if code != http.StatusOK {
					t.Fatalf("step %s: the relay's first token request: %d %s", step.number, code, truncate(body, 300))
				}
				verifyWithCertificate(t, tokenOf(t, body), readBytes(t, filepath.Join(dir, "certs", "server.pem")))
				continue
			}
			token := operatorToken
			if step.number == "4" {
				token = rootToken // an administrator: policies and the relay's token
			}
			r := RunCommand(t, env(token), dir, "", "bash", "-c", cmd)
			t.Logf("step %s: %s: exit %d", step.number, cmd, r.ExitCode)
			if !r.OK() {
				t.Fatalf("step %s: %s", step.number, r)
			}
		}
	}
	if relay == nil {
		t.Fatal("the recipe never starts the relay")
	}
	for _, u := range users {
		code, _, body := httpGet(t, relayURL+"/auth?service=registry&scope=repository:linux/app:pull", u.name, u.password)
		if code != http.StatusOK {
			t.Errorf("%s after the switch: %d %s", u.name, code, truncate(body, 200))
		}
	}
	relayState := &Relay{URL: relayURL}
	if n := relayState.Outcomes(t)[Unavailable]; n != 0 {
		t.Errorf("the relay answered 503 %.0f times", n)
	}
	if fi, err := os.Stat(filepath.Join(dir, "relay.token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("relay.token: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if strings.Contains(relay.Log(), strings.TrimSpace(string(readBytes(t, filepath.Join(dir, "relay.token"))))) {
		t.Error("the relay logged its token")
	}
}

// copyTree copies the regular files of one directory into another.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			copyFile(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
		}
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
