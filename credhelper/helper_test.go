package credhelper

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/docker/docker-credential-helpers/credentials"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Vault tokens of the test Vault; rootToken has no entity.
const (
	aliceToken = "hvs.alice-token-0123456789abcdef"
	rootToken  = "hvs.root-token-0123456789abcdef"
)

// testVault is Vault's HTTP API in front of the real plugin at mount
// "registry" (plugintest.Server): aliceToken stands for entity alice,
// rootToken for none, an unknown token is Vault's 403. refuseOffline
// refuses offline_token with a 400, as a plugin older than identity
// refresh tokens does.
type testVault struct {
	*plugintest.Server
	refuseOffline atomic.Bool
}

func newTestVault(t *testing.T) *testVault {
	t.Helper()
	v := &testVault{Server: plugintest.NewServer(t, plugin.Factory, "hvs.operator-token-0123456789", "registry")}
	v.SetEntity(&logical.Entity{ID: "e-alice", Name: "alice"})
	v.AddToken(aliceToken, plugintest.Token{EntityID: "e-alice", TTL: 3600})
	v.AddToken(rootToken, plugintest.Token{})
	v.write(t, "config", map[string]any{"identity_refresh_tokens": true})
	v.write(t, "entities/alice", map[string]any{"access": "repository:alice/**:*"})
	v.SetHook(func(w http.ResponseWriter, _ *http.Request, req *plugintest.Request) bool {
		var body map[string]any
		if v.refuseOffline.Load() && json.Unmarshal(req.Body, &body) == nil && body[tokenapi.FieldOfflineToken] == true {
			plugintest.WriteError(w, http.StatusBadRequest, "identity refresh tokens are off on this mount")
			return true
		}
		return false
	})
	return v
}

func (v *testVault) write(t *testing.T, path string, data map[string]any) {
	t.Helper()
	v.MustCall("registry", logical.UpdateOperation, path, data)
}

// calls is the number of requests Vault received.
func (v *testVault) calls() int { return len(v.Requests()) }

// refresh redeems a refresh token at the plugin, as the relay does.
func (v *testVault) refresh(t *testing.T, rt string) int {
	t.Helper()
	code, _, _ := v.Call("registry", logical.UpdateOperation, tokenapi.PathRefresh,
		map[string]any{tokenapi.FieldRefreshToken: rt, tokenapi.FieldScope: []string{"repository:alice/app:pull"}})
	return code
}

// userEnv is a user's environment of the helper: a home of its own and
// the VAULT_* variables set as given (the others empty).
func userEnv(t *testing.T, vars map[string]string) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
	for _, k := range []string{"VAULT_TOKEN", "VAULT_ADDR", "VAULT_AGENT_ADDR", "VAULT_CONFIG_PATH", "VAULT_CACERT", ConfigEnv} {
		t.Setenv(k, vars[k])
	}
	return home
}

// run runs one verb of the helper as docker does.
func run(t *testing.T, verb, stdin string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main([]string{verb}, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func getCreds(t *testing.T, host string) credentials.Credentials {
	t.Helper()
	code, out, errOut := run(t, "get", host+"\n")
	if code != 0 {
		t.Fatalf("get %s: exit %d: %s %s", host, code, out, errOut)
	}
	var c credentials.Credentials
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("get %s: not the protocol's JSON: %q", host, out)
	}
	return c
}

func TestGet_answersAnIdentityRefreshToken(t *testing.T) {
	v := newTestVault(t)
	userEnv(t, map[string]string{"VAULT_ADDR": v.URL, "VAULT_TOKEN": aliceToken})
	code, out, errOut := run(t, "get", "registry.example.com\n")
	if code != 0 {
		t.Fatalf("get: exit %d: %s %s", code, out, errOut)
	}
	var c credentials.Credentials
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	if c.Username != "<token>" || !isIdentityRefreshToken(c.Secret) || c.ServerURL != "registry.example.com" {
		t.Fatalf("get answered %+v, want user <token> and an identity refresh token", c)
	}
	if strings.Contains(out+errOut, aliceToken) || errOut != "" {
		t.Errorf("the Vault token or a notice in the output: stdout %q stderr %q", out, errOut)
	}
	if code := v.refresh(t, c.Secret); code != http.StatusOK {
		t.Errorf("the plugin refused the helper's refresh token: %d", code)
	}
}

// TestGet_findsTheTokenLikeTheVaultCLI: VAULT_TOKEN first, then a Vault
// Agent sink named in the configuration, then the CLI's token helper from
// its configuration file, then ~/.vault-token.
func TestGet_findsTheTokenLikeTheVaultCLI(t *testing.T) {
	v := newTestVault(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, home string) map[string]string
	}{
		{"VAULT_TOKEN", func(t *testing.T, home string) map[string]string {
			writeFile(t, filepath.Join(home, ".vault-token"), "hvs.someone-else")
			return map[string]string{"VAULT_TOKEN": aliceToken}
		}},
		{"~/.vault-token", func(t *testing.T, home string) map[string]string {
			writeFile(t, filepath.Join(home, ".vault-token"), aliceToken+"\n")
			return nil
		}},
		{"token_helper in ~/.vault", func(t *testing.T, home string) map[string]string {
			helper := filepath.Join(home, "token-helper")
			writeFile(t, helper, "#!/bin/sh\n[ \"$1\" = get ] && printf %s "+aliceToken+"\n")
			if err := os.Chmod(helper, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(home, ".vault"), "token_helper = \""+helper+"\"\n")
			writeFile(t, filepath.Join(home, ".vault-token"), "hvs.stale")
			return nil
		}},
		{"VAULT_CONFIG_PATH", func(t *testing.T, home string) map[string]string {
			helper := filepath.Join(home, "bin", "th")
			writeFile(t, helper, "#!/bin/sh\nprintf %s "+aliceToken+"\n")
			if err := os.Chmod(helper, 0o755); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(home, "vault.hcl")
			writeFile(t, cfg, "token_helper = \""+helper+"\"\n")
			return map[string]string{"VAULT_CONFIG_PATH": cfg}
		}},
		{"Vault Agent sink in the helper's configuration", func(t *testing.T, home string) map[string]string {
			sink := filepath.Join(home, "agent", "token")
			writeFile(t, sink, aliceToken)
			writeFile(t, filepath.Join(home, ".vault-token"), "hvs.stale")
			writeFile(t, filepath.Join(home, ".config", "vault-registry", "config.json"),
				`{"registries": {"registry.example.com": {"mount": "registry", "token_file": "`+sink+`"}}}`)
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := userEnv(t, nil)
			vars := tc.setup(t, home)
			vars = mapWith(vars, "VAULT_ADDR", v.URL)
			userEnvKeep(t, vars)
			if c := getCreds(t, "registry.example.com"); c.Username != "<token>" || !isIdentityRefreshToken(c.Secret) {
				t.Errorf("get answered user %q", c.Username)
			}
		})
	}
}

// TestGet_refusalsSayWhatToDo: each failure exits non-zero with one line
// that says what to do, and never shows a token.
func TestGet_refusalsSayWhatToDo(t *testing.T) {
	v := newTestVault(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"no token anywhere", map[string]string{"VAULT_ADDR": v.URL}, "no Vault token: run `vault login`"},
		{"an expired or revoked token", map[string]string{"VAULT_ADDR": v.URL, "VAULT_TOKEN": "hvs.revoked-0123456789"},
			"Vault refused the token from VAULT_TOKEN: it expired or was revoked, or its policies lack update on registry/token/identity: run `vault login`"},
		{"a token without an identity", map[string]string{"VAULT_ADDR": v.URL, "VAULT_TOKEN": rootToken}, "run `vault login` with your own login method"},
		{"a Vault that does not answer", map[string]string{"VAULT_ADDR": deadURL, "VAULT_TOKEN": aliceToken}, "does not answer (connection refused): check vault_addr or VAULT_ADDR, then `vault login`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			userEnv(t, tc.vars)
			t.Setenv("VAULT_MAX_RETRIES", "0")
			code, out, errOut := run(t, "get", "registry.example.com\n")
			if code == 0 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("exit %d, stdout %q; want a failure, one line with %q", code, out, tc.want)
			}
			for _, secret := range []string{aliceToken, rootToken, "hvs.revoked"} {
				if strings.Contains(out+errOut, secret) {
					t.Errorf("the output shows a token: %q %q", out, errOut)
				}
			}
		})
	}
}

// TestGet_withoutIdentityRefreshTokensSendsTheVaultToken: a mount that
// refuses offline_token, or answers no refresh token, gets user "vault"
// and the Vault token, with a notice on stderr the first time only.
func TestGet_withoutIdentityRefreshTokensSendsTheVaultToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, v *testVault)
	}{
		{"offline_token refused", func(t *testing.T, v *testVault) { v.refuseOffline.Store(true) }},
		{"identity refresh tokens off", func(t *testing.T, v *testVault) {
			v.write(t, "config", map[string]any{"identity_refresh_tokens": false})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVault(t)
			tc.setup(t, v)
			userEnv(t, map[string]string{"VAULT_ADDR": v.URL, "VAULT_TOKEN": aliceToken})
			var notices []string
			for range 3 {
				code, out, errOut := run(t, "get", "registry.example.com\n")
				var c credentials.Credentials
				if code != 0 || json.Unmarshal([]byte(out), &c) != nil || c.Username != "vault" || c.Secret != aliceToken {
					t.Fatalf("get: exit %d %q, want user vault and the Vault token", code, out)
				}
				if errOut != "" {
					notices = append(notices, errOut)
				}
			}
			if len(notices) != 1 || !strings.Contains(notices[0], "your Vault token is sent to the registry's token server") ||
				strings.Contains(notices[0], aliceToken) {
				t.Errorf("notices on stderr %q, want one, without the token", notices)
			}
		})
	}
	// A token that may not mint at all is refused, not passed on.
	v := newTestVault(t)
	v.refuseOffline.Store(true)
	userEnv(t, map[string]string{"VAULT_ADDR": v.URL, "VAULT_TOKEN": "hvs.revoked-0123456789"})
	if code, out, _ := run(t, "get", "registry.example.com\n"); code == 0 || !strings.Contains(out, "vault login") {
		t.Errorf("a refused token was passed on: exit %d %q", code, out)
	}
}

// TestStoreEraseList: docker login and logout succeed and store nothing;
// list shows the configured hosts; a host not configured (with no
// default) is docker's "not found", so docker goes on anonymously.
func TestStoreEraseList(t *testing.T) {
	v := newTestVault(t)
	home := userEnv(t, map[string]string{"VAULT_TOKEN": aliceToken})
	writeFile(t, filepath.Join(home, ".config", "vault-registry", "config.json"), `{"registries": {
		"Registry.Example.com": {"vault_addr": "`+v.URL+`", "mount": "registry"},
		"https://other.example.com:5000/v2/": {"vault_addr": "`+v.URL+`", "mount": "other"}}}`)
	before := v.calls()
	for _, verb := range []struct{ verb, stdin string }{
		{"store", `{"ServerURL":"registry.example.com","Username":"alice","Secret":"typed-password"}`},
		{"erase", "registry.example.com\n"},
	} {
		if code, out, errOut := run(t, verb.verb, verb.stdin); code != 0 || out != "" || errOut != "" {
			t.Errorf("%s: exit %d %q %q", verb.verb, code, out, errOut)
		}
	}
	if n := v.calls() - before; n != 0 {
		t.Errorf("store and erase called Vault %d times", n)
	}
	if files := filesUnder(t, home); strings.Contains(files, "typed-password") {
		t.Errorf("store kept the password: %s", files)
	}
	code, out, _ := run(t, "list", "")
	var hosts map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &hosts) != nil || len(hosts) != 2 || hosts["registry.example.com"] == "" || hosts["other.example.com:5000"] == "" {
		t.Errorf("list: exit %d %q", code, out)
	}
	if c := getCreds(t, "https://registry.example.com/v2/"); c.Username != "<token>" {
		t.Errorf("get by URL answered user %q", c.Username)
	}
	code, out, _ = run(t, "get", "docker.io\n")
	if code == 0 || !credentials.IsErrCredentialsNotFoundMessage(out) {
		t.Errorf("get of a host not configured: exit %d %q, want docker's not-found", code, out)
	}
}

func TestLoadConfig_refusesMalformedFiles(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"unknown key", `{"registries": {}, "vault": "x"}`, `unknown field "vault"`},
		{"bad mount", `{"registries": {"r.example.com": {"mount": "../sys"}}}`, `mount "../sys"`},
		{"bad address", `{"default": {"vault_addr": "vault.example.com:8200"}}`, `vault_addr "vault.example.com:8200"`},
		{"bad host", `{"registries": {"a b": {}}}`, `registry "a b"`},
		{"not JSON", `registries: {}`, "invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.json")
			writeFile(t, p, tc.body)
			if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("LoadConfig: %v, want an error naming the file and %s", err, tc.want)
			}
		})
	}
	c, err := LoadConfig(filepath.Join(t.TempDir(), "absent.json"))
	if err != nil || c.For("any.example.com").Mount != DefaultMount {
		t.Errorf("no file: %v %+v, want the default mount for every host", err, c)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mapWith(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for kk, vv := range m {
		out[kk] = vv
	}
	return out
}

// userEnvKeep sets the VAULT_* variables of vars and keeps the home.
func userEnvKeep(t *testing.T, vars map[string]string) {
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

// filesUnder returns the contents of every file under dir.
func filesUnder(t *testing.T, dir string) string {
	t.Helper()
	var all strings.Builder
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if f, err := os.Open(p); err == nil {
				_, _ = io.Copy(&all, f)
				f.Close()
			}
		}
		return nil
	})
	return all.String()
}

// isIdentityRefreshToken tells an identity's refresh token by its visible
// form (the plugin's "vpri." prefix).
func isIdentityRefreshToken(s string) bool { return strings.HasPrefix(s, "vpri.") }
