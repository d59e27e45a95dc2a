package migrate

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

// noEnv is an empty environment: Vault's address and token come from the
// YAML file.
var noEnv = map[string]string{}

func user(password, access string) map[string]any {
	return map[string]any{"password": password, "access": access}
}

// canLogIn reports whether the plugin accepts the password: a token
// request without scope (a docker login).
func (f *fakeVault) canLogIn(name, password string) bool {
	f.t.Helper()
	code, _, _ := f.pluginCall(logical.UpdateOperation, "token", map[string]any{"username": name, "password": password})
	return code == http.StatusOK
}

func (f *fakeVault) access(name string) (string, bool) {
	f.t.Helper()
	code, resp, msg := f.pluginCall(logical.ReadOperation, "users/"+name, nil)
	switch {
	case code == http.StatusNotFound:
		return "", false
	case code != http.StatusOK:
		f.t.Fatalf("read users/%s: %d %s", name, code, msg)
	}
	return resp.Data["access"].(string), true
}

func mustContain(t *testing.T, r result, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(r.stdout+r.stderr, w) {
			t.Errorf("output lacks %q\n%s", w, r)
		}
	}
}

func TestMigrate_createsThenUpdatesOnlyWhatChanged(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("foo", user("bar", "repository:linux/app:*;repository:linux/db:pull"))
	f.putKV("alice@example.com", user("alice-pw", "repository:alice/app:push,pull"))
	f.putKV("bob", user("bob-pw", "repository:bob/app:pull"))
	cfg := f.writeConfig(t, testToken, "")

	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("first run: %s", r)
	}
	mustContain(t, r, "foo: created", "alice@example.com: created", "bob: created", "Summary: 3 created, 0 updated, 0 unchanged, 0 skipped.")
	if got, _ := f.access("foo"); got != "repository:linux/app:*;repository:linux/db:pull" {
		t.Errorf("foo's access = %q", got)
	}
	if !f.canLogIn("foo", "bar") || f.canLogIn("foo", "wrong") {
		t.Error("foo's password was not migrated")
	}

	// godoauth keeps serving meanwhile: one password and one access string change.
	f.putKV("alice@example.com", user("alice-new-pw", "repository:alice/app:push,pull"))
	f.putKV("bob", user("bob-pw", "repository:bob/app:pull;repository:bob/db:pull"))
	r = migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("second run: %s", r)
	}
	mustContain(t, r, "foo: unchanged", "alice@example.com: updated (password)", "bob: updated (access)",
		"Summary: 0 created, 2 updated, 1 unchanged, 0 skipped.")
	if !f.canLogIn("alice@example.com", "alice-new-pw") || f.canLogIn("alice@example.com", "alice-pw") {
		t.Error("alice's new password was not migrated")
	}
	if got, _ := f.access("bob"); got != "repository:bob/app:pull;repository:bob/db:pull" {
		t.Errorf("bob's access = %q", got)
	}

	r = migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	mustContain(t, r, "Summary: 0 created, 0 updated, 3 unchanged, 0 skipped.")
	if r.code != exitOK {
		t.Fatalf("third run: %s", r)
	}
}

func TestMigrate_invalidAccessSkipsTheUserAndMigratesTheRest(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("good", user("good-pw", "repository:linux/app:pull"))
	f.putKV("globby", user("globby-pw", "repository:linux/app:pull;repository:linux/*:pull"))
	f.putKV("refused", user("refused-pw", "repo:linux/app:pull"))
	f.putKV("zed", user("zed-pw", "repository:zed/app:*"))
	cfg := f.writeConfig(t, testToken, "")

	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitPartial {
		t.Fatalf("want exit 1 with users skipped: %s", r)
	}
	mustContain(t, r, "good: created", "zed: created",
		`globby: skipped: 1 access entry`, `entry 2 "repository:linux/*:pull": name "linux/*"`,
		`refused: skipped`, `entry 1 "repo:linux/app:pull": the plugin refuses it: unknown type "repo"`,
		`write it as "repository:linux/app:pull"`,
		"Summary: 2 created, 0 updated, 0 unchanged, 2 skipped.")
	for _, name := range []string{"globby", "refused"} {
		if _, ok := f.access(name); ok {
			t.Errorf("%s was migrated although skipped", name)
		}
	}
	if _, ok := f.access("zed"); !ok {
		t.Error("the user after the skipped ones was not migrated")
	}
}

func TestMigrate_dropInvalidEntriesMigratesTheRest(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("globby", user("globby-pw", "repository:linux/app:pull;repository:linux/*:pull;registry:catalog:*;"))
	cfg := f.writeConfig(t, testToken, "")

	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new", "-drop-invalid-entries")
	if r.code != exitOK {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, "globby: created, without 3 access entries (-drop-invalid-entries):",
		`entry 2 "repository:linux/*:pull"`, `entry 3 "registry:catalog:*"`, `entry 4 ""`,
		"3 access entries left out (-drop-invalid-entries); 0 of them granted something in godoauth")
	if got, _ := f.access("globby"); got != "repository:linux/app:pull" {
		t.Errorf("access = %q, want only the valid entry", got)
	}
}

func TestMigrate_dryRunWritesNothing(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("foo", user("bar", "repository:linux/app:*"))
	f.putKV("same", user("same-pw", "repository:same/app:pull"))
	f.putKV("changed", user("changed-pw", "repository:changed/app:pull"))
	f.putKV("globby", user("globby-pw", "repository:*:pull"))
	f.pluginOK(logical.UpdateOperation, "users/same", map[string]any{"password": "x", "access": "repository:same/app:pull"})
	f.pluginOK(logical.UpdateOperation, "users/changed", map[string]any{"password": "x", "access": "repository:old/app:pull"})
	certPath, keyPath := writeKeyPair(t, t.TempDir(), "rsa")
	cfg := f.writeConfig(t, testToken, "  issuer: Other\n  certificate: "+certPath+"\n  key: "+keyPath+"\n")
	before := len(f.writes())

	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new", "-dry-run")
	if r.code != exitPartial {
		t.Fatalf("want exit 1 (one user would be skipped): %s", r)
	}
	if w := f.writes()[before:]; len(w) != 0 {
		t.Fatalf("a dry run wrote: %v\n%s", w, r)
	}
	if n := f.countRequests("GET registry-new/ca"); n != 0 {
		t.Errorf("a dry run read registry-new/ca %d times, which makes a trust anchor on a new mount", n)
	}
	mustContain(t, r, "dry run: nothing is written", "foo: would be created", "same: exists with the same access",
		"changed: would be updated (access)", "globby: skipped", `config: would set issuer to "Other"`,
		"keys: would import "+certPath,
		"Dry run, nothing written: 1 would be created, 1 would be updated, 1 exist with the same access, 1 would be skipped.")
	if _, ok := f.access("foo"); ok {
		t.Error("foo exists after a dry run")
	}
}

func TestMigrate_neverShowsPasswords(t *testing.T) {
	passwords := map[string]string{
		"plain":     "Sup3r-Secret-plain",
		"long":      strings.Repeat("Long-Secret-", 7), // 84 bytes: more than bcrypt takes
		"echoed":    "Sup3r-Secret-echoed",
		"zz-failed": "Sup3r-Secret-failed",
	}
	f := newFakeVault(t, "registry", "registry-new")
	for name, pw := range passwords {
		f.putKV(name, user(pw, "repository:"+name+"/app:pull"))
	}
	// A Vault (or proxy) that repeats the request body in its errors.
	f.intercept = func(w http.ResponseWriter, r *http.Request, path string) bool {
		switch path {
		case "registry-new/users/echoed":
			writeVault(w, http.StatusBadRequest, nil, "bad request: password="+passwords["echoed"])
			return true
		case "registry-new/users/zz-failed":
			writeVault(w, http.StatusForbidden, nil, "permission denied for "+passwords["zz-failed"])
			return true
		}
		return false
	}
	cfg := f.writeConfig(t, testToken, "")
	for _, args := range [][]string{
		{"-dry-run"},
		{},
		{"-drop-invalid-entries"},
	} {
		r := migrateCmd(noEnv, append([]string{"-config", cfg, "-from", "registry", "-to", "registry-new"}, args...)...)
		for name, pw := range passwords {
			if strings.Contains(r.stdout+r.stderr, pw) || strings.Contains(r.stdout+r.stderr, pw[:12]) {
				t.Errorf("%v: the output shows %s's password:\n%s", args, name, r)
			}
		}
		if len(args) == 0 {
			mustContain(t, r, "long: skipped: the password is longer than 72 bytes",
				"echoed: skipped: the plugin refused it: Vault answered 400 (its message is withheld: it contains the password)",
				"stopped at user \"zz-failed\"")
		}
	}
}

func TestMigrate_stopsWhenVaultFailsAndSaysSo(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	for _, name := range []string{"a", "b", "c"} {
		f.putKV(name, user(name+"-pw", "repository:"+name+":pull"))
	}
	f.intercept = func(w http.ResponseWriter, r *http.Request, path string) bool {
		if path == "registry-new/users/b" && r.Method != http.MethodGet {
			writeVault(w, http.StatusForbidden, nil, "permission denied")
			return true
		}
		return false
	}
	// One at a time, so that no user after b is under way when b fails.
	r := migrateCmd(noEnv, "-config", f.writeConfig(t, testToken, ""), "-from", "registry", "-to", "registry-new", "-parallel", "1")
	if r.code != exitPartial {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, "a: created", `b: FAILED: Vault answered 403: permission denied`, `stopped at user "b"`,
		"The users after it were not migrated")
	if _, ok := f.access("c"); ok || f.countRequests("GET registry/c") != 0 {
		t.Error("the run went on after Vault refused the token")
	}
}

// TestMigrate_parallelKeepsTheOrder: with -parallel 8 several users are
// in flight at once, and the report still lists them in godoauth's order
// though the first ones finish last.
func TestMigrate_parallelKeepsTheOrder(t *testing.T) {
	const n = 40
	f := newFakeVault(t, "registry", "registry-new")
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("u%02d", i))
		f.putKV(names[i], user(fmt.Sprintf("pw-%d", i), "repository:app:pull"))
	}
	var inFlight, most atomic.Int32
	f.intercept = func(_ http.ResponseWriter, r *http.Request, path string) bool {
		name, ok := strings.CutPrefix(path, "registry/u")
		if !ok || r.Method != http.MethodGet {
			return false
		}
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		i, _ := strconv.Atoi(name)
		time.Sleep(time.Duration(n-i%8) * time.Millisecond) // the first of each eight last
		return false
	}
	r := migrateCmd(noEnv, "-config", f.writeConfig(t, testToken, ""), "-from", "registry", "-to", "registry-new", "-parallel", "8")
	if r.code != exitOK {
		t.Fatalf("%s", r)
	}
	if m := most.Load(); m < 2 || m > 8 {
		t.Errorf("at most %d users read at once, want 2 to 8", m)
	}
	var reported []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if name, ok := strings.CutSuffix(strings.TrimSpace(line), ": created"); ok {
			reported = append(reported, name)
		}
	}
	if !slices.Equal(reported, names) {
		t.Errorf("users reported in the order %v, want %v", reported, names)
	}
	mustContain(t, r, fmt.Sprintf("Summary: %d created, 0 updated, 0 unchanged, 0 skipped.", n))
}

func TestMigrate_parallelOutOfRange(t *testing.T) {
	for _, p := range []string{"0", "65"} {
		r := migrateCmd(noEnv, "-config", "", "-from", "a", "-to", "b", "-parallel", p)
		if r.code != exitUsage || !strings.Contains(r.stderr, "-parallel "+p+": want 1 to 64") {
			t.Errorf("-parallel %s: %s", p, r)
		}
	}
}

func TestMigrate_reportsNamesThePluginCannotTake(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("team/alice", user("x-pw", "repository:a:pull"))
	f.putKV("with space", user("y-pw", "repository:a:pull"))
	f.putKV("..", user("z-pw", "repository:a:pull"))
	f.putKV("nopassword", map[string]any{"access": "repository:a:pull"})
	f.putKV("numeric", map[string]any{"password": 1234, "access": "repository:a:pull"})
	f.putKV("ok", user("ok-pw", "repository:a:pull"))
	r := migrateCmd(noEnv, "-config", f.writeConfig(t, testToken, ""), "-from", "registry", "-to", "registry-new")
	if r.code != exitPartial {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, `"team/alice": skipped: the plugin's user names`, `"with space": skipped`, `"..": skipped`,
		"nopassword: skipped: no password", "numeric: skipped: password is not a string",
		"ok: created", "Summary: 1 created, 0 updated, 0 unchanged, 5 skipped.")
	if f.countRequests("GET registry/team/alice") != 0 {
		t.Error("read a user whose name the plugin cannot take")
	}
}

func TestMigrate_notesUsersOnlyThePluginHas(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("foo", user("bar", "repository:a:pull"))
	f.pluginOK(logical.UpdateOperation, "users/extra", map[string]any{"password": "x", "access": ""})
	r := migrateCmd(noEnv, "-config", f.writeConfig(t, testToken, ""), "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, "Note: 1 users of registry-new/ are not in registry/ and were left as they are: extra.")
	if _, ok := f.access("extra"); !ok {
		t.Error("the migration removed a user of the plugin mount")
	}
}

func TestMigrate_importsTheKeyPairOnce(t *testing.T) {
	for _, kind := range []string{"rsa", "ec"} {
		t.Run(kind, func(t *testing.T) {
			f := newFakeVault(t, "registry", "registry-new")
			certPath, keyPath := writeKeyPair(t, t.TempDir(), kind)
			cfg := f.writeConfig(t, testToken, "  certificate: "+certPath+"\n  key: "+keyPath+"\n")

			r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
			if r.code != exitOK {
				t.Fatalf("%s", r)
			}
			mustContain(t, r, "keys: imported "+certPath, "users: registry/ has none")
			ca := f.pluginOK(logical.ReadOperation, "ca", nil).Data
			pemCert, _ := os.ReadFile(certPath)
			block, _ := pem.Decode(pemCert)
			if ca["imported"] != true || ca["fingerprint"] != fingerprint(block.Bytes) {
				t.Fatalf("registry-new/ca after the import: %v", ca)
			}
			mustContain(t, r, fingerprint(block.Bytes))

			r = migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
			if r.code != exitOK {
				t.Fatalf("%s", r)
			}
			mustContain(t, r, "keys: unchanged")
			if n := f.countRequests("PUT registry-new/ca/import"); n != 1 {
				t.Errorf("ca/import called %d times over two runs, want 1", n)
			}
		})
	}
}

func TestMigrate_keepsAnotherImportedCertificate(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	dir := t.TempDir()
	otherCert, otherKey := writeKeyPair(t, dir, "ec")
	c, _ := os.ReadFile(otherCert)
	k, _ := os.ReadFile(otherKey)
	f.pluginOK(logical.UpdateOperation, "ca/import", map[string]any{"certificate": string(c), "private_key": string(k)})
	before := f.pluginOK(logical.ReadOperation, "ca", nil).Data["fingerprint"]

	certPath, keyPath := writeKeyPair(t, t.TempDir(), "rsa")
	r := migrateCmd(noEnv, "-config", f.writeConfig(t, testToken, "  certificate: "+certPath+"\n  key: "+keyPath+"\n"),
		"-from", "registry", "-to", "registry-new")
	if r.code != exitPartial {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, "keys: NOT imported: registry-new/ already holds another imported certificate")
	if after := f.pluginOK(logical.ReadOperation, "ca", nil).Data["fingerprint"]; after != before {
		t.Error("the migration replaced an imported certificate that registries may trust")
	}
}

func TestMigrate_keyPathsRelativeToTheWorkingDirectory(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeKeyPair(t, filepath.Join(dir, "certs"), "rsa")
	cfg := f.writeConfig(t, testToken, "  certificate: certs/server.pem\n  key: certs/server.key\n")

	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitUsage || len(f.writes()) != 0 {
		t.Fatalf("from another directory: %s", r)
	}
	mustContain(t, r, "relative paths are read from the working directory", "Nothing was changed.")

	t.Chdir(dir)
	r = migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("from godoauth's directory: %s", r)
	}
	mustContain(t, r, "keys: imported certs/server.pem")
}

func TestMigrate_setsTheIssuerRegistriesCheck(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	path := f.writeConfig(t, testToken, "  issuer: Acme auth\n")
	r := migrateCmd(noEnv, "-config", path, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, `config: issuer set to "Acme auth" (token.issuer; was "Token")`)
	if got := f.pluginOK(logical.ReadOperation, "config", nil).Data["issuer"]; got != "Acme auth" {
		t.Errorf("issuer = %v", got)
	}
	r = migrateCmd(noEnv, "-config", path, "-from", "registry", "-to", "registry-new")
	mustContain(t, r, `config: issuer "Acme auth" already matches token.issuer`)
}

func TestMigrate_environmentOverridesTheFile(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("foo", user("bar", "repository:a:pull"))
	// godoauth's file names another Vault and godoauth's read-only token.
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte("storage:\n  vault:\n    proto: https\n    host: vault.invalid\n    port: 8200\n    auth_token: godoauth-token\nhttp:\n  addr: :5002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_ADDR": f.srv.URL, "VAULT_TOKEN": testToken}
	r := migrateCmd(env, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("%s", r)
	}
	mustContain(t, r, "at "+f.srv.URL, "foo: created", "keys: nothing to import")

	r = migrateCmd(env, "-config", "", "-from", "registry", "-to", "registry-new", "-keys=false")
	if r.code != exitOK {
		t.Fatalf("without a file: %s", r)
	}
	mustContain(t, r, "foo: unchanged", "keys: not imported (-keys=false)")
}

func TestMigrate_refusesWrongMounts(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	f.putKV("foo", user("bar", "repository:a:pull"))
	cfg := f.writeConfig(t, testToken, "")
	for _, tc := range []struct {
		name     string
		from, to string
		want     string
	}{
		{"from a missing mount", "nope", "registry-new", "nope/ at " + f.srv.URL},
		{"from the plugin (already moved)", "registry-new", "registry", `registry-new/ is a "vault-plugin-registry" mount, not godoauth's KV version 1 mount`},
		{"to a KV mount", "registry", "registry/x", "registry/x/ is not a vault-plugin-registry mount"},
		{"to a missing mount", "registry", "nope", "nope/ is not a vault-plugin-registry mount; enable one first: vault secrets enable -path=nope vault-plugin-registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.writes())
			r := migrateCmd(noEnv, "-config", cfg, "-from", tc.from, "-to", tc.to)
			if r.code != exitUsage {
				t.Fatalf("%s", r)
			}
			mustContain(t, r, tc.want, "Nothing was changed.")
			if w := f.writes()[before:]; len(w) != 0 {
				t.Errorf("wrote %v", w)
			}
		})
	}

	t.Run("with a token Vault refuses", func(t *testing.T) {
		r := migrateCmd(noEnv, "-config", f.writeConfig(t, "not-the-token", ""), "-from", "registry", "-to", "registry-new")
		if r.code != exitUsage {
			t.Fatalf("%s", r)
		}
		mustContain(t, r, "Vault answered 403: permission denied")
		if strings.Contains(r.stdout+r.stderr, "not-the-token") {
			t.Error("the output shows the Vault token")
		}
	})
}

func TestMigrate_badCommandLineOrFiles(t *testing.T) {
	f := newFakeVault(t, "registry", "registry-new")
	cfg := f.writeConfig(t, testToken, "")
	dir := t.TempDir()
	rsaCert, rsaKey := writeKeyPair(t, dir, "rsa")
	ecDir := filepath.Join(dir, "ec")
	os.Mkdir(ecDir, 0o755)
	_, ecKey := writeKeyPair(t, ecDir, "ec")
	expiredDir := filepath.Join(dir, "expired")
	os.Mkdir(expiredDir, 0o755)
	expCert, expKey := writeKeyPair(t, expiredDir, "expired")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a PEM file"), 0o600)

	base := []string{"-config", cfg, "-from", "registry", "-to", "registry-new"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no -from", []string{"-config", cfg, "-to", "registry-new"}, "-from is required"},
		{"no -to", []string{"-config", cfg, "-from", "registry"}, "-to is required"},
		{"same mount", []string{"-config", cfg, "-from", "registry/", "-to", "/registry"}, "-from and -to name the same mount"},
		{"dot segment", []string{"-config", cfg, "-from", "registry/..", "-to", "x"}, `-from "registry/..": not a mount path`},
		{"unknown flag", append(base, "-force"), "flag provided but not defined: -force"},
		{"positional argument", append(base, "extra"), `unexpected argument "extra"`},
		{"bad -keys value", append(base, "-keys=maybe"), `invalid boolean value "maybe" for -keys`},
		{"-certificate alone", append(base, "-certificate", rsaCert), "-certificate and -key go together"},
		{"-certificate with -keys=false", append(base, "-keys=false", "-certificate", rsaCert, "-key", rsaKey), "make no sense with -keys=false"},
		{"missing configuration", []string{"-config", filepath.Join(dir, "nope.yml"), "-from", "registry", "-to", "registry-new"}, "no such file"},
		{"mismatched key pair", append(base, "-certificate", rsaCert, "-key", ecKey), "does not match public key"},
		{"expired certificate", append(base, "-certificate", expCert, "-key", expKey), "expired on"},
		{"not PEM", append(base, "-certificate", garbage, "-key", rsaKey), "failed to find any PEM data in certificate input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.writes())
			r := migrateCmd(noEnv, tc.args...)
			if r.code != exitUsage {
				t.Fatalf("%s", r)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr lacks %q\n%s", tc.want, r)
			}
			if w := f.writes()[before:]; len(w) != 0 {
				t.Errorf("wrote %v", w)
			}
		})
	}
}

func TestMigrate_helpListsEveryFlag(t *testing.T) {
	r := migrateCmd(noEnv, "-h")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("%s", r)
	}
	for _, flag := range []string{"-config", "-from", "-to", "-dry-run", "-keys", "-drop-invalid-entries", "-certificate", "-key", "Exit status"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("help lacks %s", flag)
		}
	}
}

// writeKeyPair writes server.pem and server.key the way godoauth's README
// makes them with openssl (RSA 2048, self-signed, PKCS #8), or with an EC
// P-256 key in SEC1 form, or an RSA pair that has expired.
func writeKeyPair(t *testing.T, dir, kind string) (certPath, keyPath string) {
	t.Helper()
	o := testcert.Options{
		Subject:   pkix.Name{Country: []string{"AU"}, Organization: []string{"Godoauth"}, CommonName: "Token"},
		NotBefore: time.Now().Add(-2 * time.Hour),
		NotAfter:  time.Now().Add(365 * 24 * time.Hour),
	}
	switch kind {
	case "rsa", "expired":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		o.Key = k
		if kind == "expired" {
			o.NotAfter = time.Now().Add(-time.Hour)
		}
	case "ec":
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	certPath, keyPath = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	testcert.New(t, o).WriteFiles(t, certPath, keyPath, kind == "ec")
	return certPath, keyPath
}
