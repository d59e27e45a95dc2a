//go:build e2e

package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// godoauthKeyPair completes the harness's relayYAML (godoauth's YAML)
// with godoauth's key pair, relative to its working directory.
const godoauthKeyPair = `  certificate: certs/server.pem
  key: certs/server.key
`

// godoauthRegistryConfig is registry 2.8 set up as godoauth's README runs
// it (REGISTRY_AUTH_TOKEN_*), as a file.
const godoauthRegistryConfig = `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: 127.0.0.1:%d
  secret: e2e-not-secret
auth:
  token:
    realm: http://localhost:%d/auth
    issuer: Token
    service: registry
    rootcertbundle: %s
`

type godoauthUser struct{ name, password, access string }

// TestMigrate_fromGodoauth follows the "Coming from godoauth" recipe on a
// setup made the way godoauth's README makes it, with a registry that is
// started before the migration and never touched again.
func TestMigrate_fromGodoauth(t *testing.T) {
	v := StartVault(t)
	dir := t.TempDir() // godoauth's working directory: config.yml, certs/

	// godoauth's README: `vault mount -path registry generic`, users with
	// plain passwords, and a key pair made with openssl.
	v.CLI(t, "secrets", "enable", "-path=registry", "generic")
	users := []godoauthUser{
		{"foo", "bar", "repository:linux/app:*;repository:linux/db:pull"},
		{"bar", "foo", "repository:bar/foo:*"},
	}
	for _, u := range users {
		v.CLI(t, "write", "registry/"+u.name, "password="+u.password, "access="+u.access)
	}
	// A stray ";": godoauth refused every login of this user.
	typo := godoauthUser{"typo", "typo-pw-1c2d9e", "repository:typo/app:*;"}
	v.CLI(t, "write", "registry/typo", "password="+typo.password, "access="+typo.access)
	serverPEM := godoauthCerts(t, dir)
	pemBefore := readBytes(t, serverPEM)

	// godoauth's token could read its mount; the YAML keeps it.
	v.CLIInput(t, "path \"registry/*\" {\n  capabilities = [\"read\"]\n}\n", "policy", "write", "godoauth", "-")
	godoauthToken := strings.TrimSpace(v.CLI(t, "token", "create", "-policy=godoauth", "-field=token"))
	relayPort := freePort(t)
	configPath := filepath.Join(dir, "config.yml")
	config := []byte(RelayYAML(t, RelayOptions{Vault: v, Token: godoauthToken, Extra: godoauthKeyPair}, relayPort))
	if err := os.WriteFile(configPath, config, 0o600); err != nil {
		t.Fatal(err)
	}

	reg, regConfigPath := startGodoauthRegistry(t, relayPort, serverPEM)
	regConfigBefore := readBytes(t, regConfigPath)

	// The recipe: the plugin at a temporary path, a dry run, the run.
	v.CLI(t, "secrets", "enable", "-path=registry-new", "-plugin-version="+pluginVersion, pluginName)
	base := []string{"migrate", "-config", "config.yml", "-from", "registry", "-to", "registry-new"}
	r := runRelayCommand(t, v, dir, append(base, "-dry-run")...)
	if r.ExitCode != 1 {
		t.Fatalf("dry run: want exit 1 (typo would be skipped): %v", r)
	}
	mustSay(t, r, "foo: would be created", "bar: would be created", `typo: skipped`, `entry 2 "": empty (a stray ";")`,
		"keys: would import certs/server.pem and certs/server.key")
	if out, _, err := v.TryCLI("", "list", "registry-new/users"); err == nil {
		t.Fatalf("the dry run wrote users: %s", out)
	}

	// The operator fixes typo in godoauth's mount, as the report says.
	v.CLI(t, "write", "registry/typo", "password="+typo.password, "access=repository:typo/app:*")
	r = runRelayCommand(t, v, dir, base...)
	if r.ExitCode != 0 {
		t.Fatalf("migration: %v", r)
	}
	mustSay(t, r, "keys: imported certs/server.pem", "foo: created", "bar: created", "typo: created",
		"Summary: 3 created, 0 updated, 0 unchanged, 0 skipped.")
	r = runRelayCommand(t, v, dir, base...)
	if r.ExitCode != 0 {
		t.Fatalf("second run: %v", r)
	}
	mustSay(t, r, "keys: unchanged", "Summary: 0 created, 0 updated, 3 unchanged, 0 skipped.")

	v.CLI(t, "secrets", "move", "registry", "registry-godoauth")
	v.CLI(t, "secrets", "move", "registry-new", "registry")

	// godoauth's binary swapped for the relay: the same YAML file, and a
	// token that may only mint registry tokens.
	relay := StartRelay(t, RelayOptions{ConfigFile: configPath, Port: relayPort, Env: []string{"VAULT_TOKEN=" + v.RelayToken(t, "registry")}})

	// godoauth's users push and pull with their old passwords, and get no more than before.
	img := NewTestImage(t)
	foo := NewClient(t, Crane)
	mustOK(t, foo.Login(reg, "foo", "bar"))
	mustOK(t, foo.Push(reg, "linux/app:v1", img))
	pullSame(t, foo, reg, "linux/app:v1", img)
	mustFail(t, "foo pushes to linux/db (pull only)", foo.Push(reg, "linux/db:v1", img))
	bar := NewClient(t, Crane)
	mustOK(t, bar.Login(reg, "bar", "foo"))
	mustOK(t, bar.Push(reg, "bar/foo:v1", img))
	pullSame(t, bar, reg, "bar/foo:v1", img)
	mustFail(t, "bar pulls linux/app", func() Result { r, _ := bar.Pull(reg, "linux/app:v1", img); return r }())
	wrong := NewClient(t, Crane)
	mustOK(t, wrong.Login(reg, "foo", "not-bar"))
	mustFail(t, "foo with a wrong password", func() Result { r, _ := wrong.Pull(reg, "linux/app:v1", img); return r }())

	// No registry change: the same process, configuration and bundle, and
	// the tokens verify against godoauth's server.pem.
	if reg.Proc.Exited() {
		t.Fatal("the registry stopped")
	}
	if !bytes.Equal(readBytes(t, regConfigPath), regConfigBefore) || !bytes.Equal(readBytes(t, serverPEM), pemBefore) {
		t.Fatal("the registry's configuration or server.pem changed")
	}
	code, _, body := httpGet(t, relay.URL+"/auth?service=registry&scope=repository:linux/app:pull", "foo", "bar")
	if code != http.StatusOK {
		t.Fatalf("token: %d %s", code, truncate(body, 300))
	}
	verifyWithCertificate(t, tokenOf(t, body), pemBefore)

	// Rollback: godoauth's mount is intact and moves back.
	if pw := strings.TrimSpace(v.CLI(t, "read", "-field=password", "registry-godoauth/foo")); pw != "bar" {
		t.Errorf("registry-godoauth/foo has password %q after the migration", pw)
	}
	relay.Proc.Stop()
	v.CLI(t, "secrets", "move", "registry", "registry-new")
	v.CLI(t, "secrets", "move", "registry-godoauth", "registry")
	if access := strings.TrimSpace(v.CLI(t, "read", "-field=access", "registry/foo")); access != users[0].access {
		t.Errorf("after the rollback registry/foo has access %q", access)
	}
}

// startGodoauthRegistry starts registry 2.8 trusting godoauth's server.pem
// and sending clients to the realm on relayPort.
func startGodoauthRegistry(t *testing.T, relayPort int, rootCertBundle string) (*Registry, string) {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	configPath := filepath.Join(dir, "config.yml")
	config := fmt.Sprintf(godoauthRegistryConfig, filepath.Join(dir, "storage"), port, relayPort, rootCertBundle)
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := &Registry{
		Kind: Registry28,
		Host: fmt.Sprintf("localhost:%d", port),
		URL:  fmt.Sprintf("http://127.0.0.1:%d", port),
	}
	reg.Proc = StartProcess(t, "registry-2.8-godoauth", baseEnv(dir), tool(t, "docker-registry"), "serve", configPath)
	waitFor(t, "registry", reg.Proc, startTimeout, func() error { return wantStatus(reg.URL+"/v2/", http.StatusUnauthorized) })
	return reg, configPath
}

// godoauthCerts makes godoauth's key pair as its README does, in
// dir/certs (godoauthKeyPair names them), and returns the certificate's path.
func godoauthCerts(t testing.TB, dir string) string {
	t.Helper()
	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	openssl := exec.Command("openssl", "req", "-x509", "-nodes", "-days", "365", "-newkey", "rsa:2048",
		"-keyout", "server.key", "-out", "server.pem", "-subj", "/C=AU/ST=NSW/L=Sydney/O=Godoauth/CN=Token")
	openssl.Dir = certs
	if out, err := openssl.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	return filepath.Join(certs, "server.pem")
}

// runRelayCommand runs `godoauth-relay args…` in dir as an operator: with
// the root token in VAULT_TOKEN.
func runRelayCommand(t *testing.T, v *Vault, dir string, args ...string) Result {
	t.Helper()
	r := RunCommand(t, append(baseEnv(dir), "VAULT_TOKEN="+rootToken), dir, "", bins.relay, args...)
	if strings.Contains(r.Stdout+r.Stderr, "typo-pw-1c2d9e") {
		t.Errorf("the output shows a password: %v", r)
	}
	return r
}

func mustSay(t *testing.T, r Result, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(r.Stdout+r.Stderr, w) {
			t.Errorf("output lacks %q:\n%s\n%s", w, r.Stdout, r.Stderr)
		}
	}
}

func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verifyWithCertificate checks a token the way a registry trusting only
// certPEM does: signed by that certificate's key, which x5c carries.
func verifyWithCertificate(t *testing.T, token string, certPEM []byte) {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("server.pem holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse(token, func(tok *jwt.Token) (any, error) {
		x5c, _ := tok.Header["x5c"].([]any)
		if len(x5c) == 0 {
			return nil, errors.New("no x5c header")
		}
		first, _ := x5c[0].(string)
		der, err := base64.StdEncoding.DecodeString(first)
		if err != nil || !bytes.Equal(der, cert.Raw) {
			return nil, errors.New("x5c[0] is not server.pem")
		}
		return cert.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer("Token"), jwt.WithAudience("registry"))
	if err != nil || !parsed.Valid {
		t.Fatalf("the token does not verify against godoauth's server.pem: %v", err)
	}
}
