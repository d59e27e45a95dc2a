package relay

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// minimal is the least a file needs when the environment gives nothing.
const minimal = `
storage:
  vault:
    proto: http
    host: 127.0.0.1
    port: 8200
    auth_token: t
http:
  addr: ":5002"
`

func TestLoadConfig_godoauthSampleLoadsUnchanged(t *testing.T) {
	cfg, err := LoadConfig("testdata/godoauth.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Version: "0.1",
		Log:     LogConfig{Level: "info", File: "/tmp/godoauth.log", Format: "text"},
		Storage: Storage{Vault: VaultConfig{
			Proto: "http", Host: "127.0.0.1", Port: 8200,
			AuthToken: "dbXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXX",
			Timeout:   Duration(3 * time.Second), Pool: 2,
		}},
		HTTP: HTTPConfig{Addr: ":5002", Timeout: Duration(5 * time.Second),
			TLS: TLSConfig{Certificate: "certs/server.pem", Key: "certs/server.key"}},
		Token: TokenConfig{Issuer: "Token", Expiration: 800, Certificate: "certs/server.pem", Key: "certs/server.key"},
	}
	cfg.lines = nil
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got  %+v\nwant %+v", *cfg, want)
	}
	if got := cfg.VaultAddress(); got != "http://127.0.0.1:8200" {
		t.Errorf("VaultAddress = %q", got)
	}
}

func TestParseConfig_defaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"log.level", cfg.Log.Level, "info"},
		{"log.file", cfg.Log.File, ""},
		{"storage.vault.timeout", time.Duration(cfg.Storage.Vault.Timeout), 3 * time.Second},
		{"storage.vault.pool", cfg.Storage.Vault.Pool, 2},
		{"http.timeout", time.Duration(cfg.HTTP.Timeout), 5 * time.Second},
		{"http.tls", cfg.HTTP.TLS.Enabled(), false},
		{"token.expiration", cfg.Token.Expiration, int64(0)},
		{"token.issuer", cfg.Token.Issuer, ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseConfig_explicitZeroMeansDefault(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal + "  timeout: 0s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(cfg.HTTP.Timeout) != DefaultHTTPTimeout {
		t.Errorf("http.timeout = %s", time.Duration(cfg.HTTP.Timeout))
	}
}

func TestParseConfig_invalidValuesNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml, key string
		line            int
	}{
		{"version", "version: 2\n", "version", 1},
		{"log level", "log:\n  level: verbose\n", "log.level", 2},
		{"log as list", "log: [a]\n", "log", 1},
		{"proto", "storage:\n  vault:\n    proto: ftp\n", "storage.vault.proto", 3},
		{"host with path", "storage:\n  vault:\n    host: a/b\n", "storage.vault.host", 3},
		{"port text", "storage:\n  vault:\n    port: http\n", "storage.vault.port", 3},
		{"port float", "storage:\n  vault:\n    port: 82.5\n", "storage.vault.port", 3},
		{"port range", "storage:\n  vault:\n    port: 70000\n", "storage.vault.port", 3},
		{"port negative", "storage:\n  vault:\n    port: -1\n", "storage.vault.port", 3},
		{"vault timeout bare number", "storage:\n  vault:\n    timeout: 3\n", "storage.vault.timeout", 3},
		{"vault timeout garbage", "storage:\n  vault:\n    timeout: soon\n", "storage.vault.timeout", 3},
		{"vault timeout negative", "storage:\n  vault:\n    timeout: -1s\n", "storage.vault.timeout", 3},
		{"vault timeout huge", "storage:\n  vault:\n    timeout: 1h\n", "storage.vault.timeout", 3},
		{"pool negative", "storage:\n  vault:\n    pool: -2\n", "storage.vault.pool", 3},
		{"pool huge", "storage:\n  vault:\n    pool: 100000\n", "storage.vault.pool", 3},
		{"pool text", "storage:\n  vault:\n    pool: many\n", "storage.vault.pool", 3},
		{"http timeout", "http:\n  timeout: 5\n", "http.timeout", 2},
		{"http timeout list", "http:\n  timeout: [5s]\n", "http.timeout", 2},
		{"http addr", "http:\n  addr: 5002\n", "http.addr", 2},
		{"tls cert without key", "http:\n  tls:\n    certificate: a.pem\n", "http.tls.key", 0},
		{"tls key without cert", "http:\n  tls:\n    key: a.key\n", "http.tls.certificate", 0},
		{"expiration negative", "token:\n  expiration: -5\n", "token.expiration", 2},
		{"expiration huge", "token:\n  expiration: 99999999999\n", "token.expiration", 2},
		{"expiration duration", "token:\n  expiration: 5m\n", "token.expiration", 2},
		{"auth_token mapping", "storage:\n  vault:\n    auth_token: {a: b}\n", "storage.vault.auth_token", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a ConfigError", err)
			}
			if ce.Key != c.key {
				t.Errorf("key = %q, want %q (%v)", ce.Key, c.key, err)
			}
			if c.line != 0 && ce.Line != c.line {
				t.Errorf("line = %d, want %d (%v)", ce.Line, c.line, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestParseConfig_unknownKeysNameTheFullPath(t *testing.T) {
	cases := []struct{ yaml, key string }{
		{"verison: 0.1\n", "verison"},
		{"log:\n  levle: info\n", "log.levle"},
		{"storage:\n  consul: {}\n", "storage.consul"},
		{"storage:\n  vault:\n    token: x\n", "storage.vault.token"},
		{"storage:\n  vault:\n    Addr: x\n", "storage.vault.Addr"}, // environment-only fields are no keys
		{"http:\n  tls:\n    ca: x\n", "http.tls.ca"},
		{"token:\n  audience: x\n", "token.audience"},
	}
	for _, c := range cases {
		_, err := ParseConfig([]byte(c.yaml))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != c.key || !strings.Contains(ce.Msg, "unknown key") {
			t.Errorf("%q: err = %v, want unknown key %q", c.yaml, err, c.key)
		}
	}
}

func TestParseConfig_refusesRepeatedKeysMergesAndManyDocuments(t *testing.T) {
	cases := map[string]string{
		"log:\n  level: info\n  level: debug\n":    "key repeated",
		"base: &b {level: info}\nlog:\n  <<: *b\n": "unknown key", // base is unknown first
		"log:\n  <<: {level: info}\n":              "merge keys",
		"version: 0.1\n---\nversion: 0.1\n":        "more than one YAML document",
		"log: [\n":                                 "yaml",
		"- a\n- b\n":                               "want a mapping",
	}
	for in, want := range cases {
		_, err := ParseConfig([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to mention %q", in, err, want)
		}
	}
}

func TestParseConfig_aliasesToKnownKeysWork(t *testing.T) {
	in := "token:\n  certificate: &pem certs/server.pem\n  key: certs/server.key\nhttp:\n  tls:\n    certificate: *pem\n    key: certs/server.key\n"
	cfg, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.TLS.Certificate != "certs/server.pem" {
		t.Errorf("http.tls.certificate = %q", cfg.HTTP.TLS.Certificate)
	}
}

func TestParseConfig_survivesYAMLBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		b.WriteString(n + ": &" + n + " [*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev +
			",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + "]\n")
		prev = n
	}
	bomb := b.String()
	for _, in := range []string{
		bomb,                                    // unknown keys at the top
		"version: &v " + bomb[3:] + "log: *v\n", // not quite YAML, must still fail cleanly
		"log:\n  level: &x [[1,2],[3,4]]\n  file: *x\n",
	} {
		if _, err := ParseConfig([]byte(in)); err == nil {
			t.Errorf("a YAML bomb was accepted")
		}
	}
	// The bomb under a known key: refused without expanding it.
	in := strings.Replace(bomb, "i: &i", "version: &i", 1)
	_, err := ParseConfig([]byte(in))
	if err == nil {
		t.Fatal("a YAML bomb was accepted")
	}
}

func TestParseConfig_deepNestingIsRefused(t *testing.T) {
	if _, err := ParseConfig([]byte("log: " + strings.Repeat("[", 50000))); err == nil {
		t.Fatal("deep nesting accepted")
	}
}

func TestLoadConfig_refusesHugeFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	data := []byte(minimal + "#" + strings.Repeat("x", MaxConfigBytes) + "\n")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path, noEnv)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ParseConfig(data); err == nil {
		t.Fatal("ParseConfig accepted a huge input")
	}
	if _, err := LoadConfig("/dev/zero", noEnv); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("/dev/zero: err = %v", err)
	}
}

func TestLoadConfig_errorsNameTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("log:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path, noEnv)
	want := path + ": line 2: log.level: want error, warn, info or debug, got \"loud\""
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"), noEnv); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestConfig_environmentOverridesTheFile(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.ApplyEnv(envOf(map[string]string{
		"VAULT_ADDR":   "https://vault.example.com:8200",
		"VAULT_TOKEN":  "from-env",
		"VAULT_CACERT": "/etc/vault/ca.pem",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.VaultAddress() != "https://vault.example.com:8200" || cfg.Storage.Vault.AuthToken != "from-env" ||
		cfg.Storage.Vault.CACert != "/etc/vault/ca.pem" {
		t.Errorf("overrides not applied: %+v", cfg.Storage.Vault)
	}
}

func TestConfig_environmentCompletesTheFile(t *testing.T) {
	cfg, err := ParseConfig([]byte("http:\n  addr: \":5002\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "VAULT_ADDR") {
		t.Fatalf("without env: err = %v", err)
	}
	if err := cfg.ApplyEnv(envOf(map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200"})); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "storage.vault.auth_token") {
		t.Fatalf("without token: err = %v", err)
	}
	if err := cfg.ApplyEnv(envOf(map[string]string{"VAULT_TOKEN": "t"})); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfig_badVaultAddrIsRefused(t *testing.T) {
	for _, addr := range []string{"vault:8200", "ftp://vault", "http://", "://x"} {
		cfg, _ := ParseConfig([]byte(minimal))
		err := cfg.ApplyEnv(envOf(map[string]string{"VAULT_ADDR": addr}))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "VAULT_ADDR" {
			t.Errorf("VAULT_ADDR=%q: err = %v", addr, err)
		}
	}
}

func TestConfig_httpAddrIsRequired(t *testing.T) {
	cfg, err := ParseConfig([]byte(strings.Replace(minimal, "http:\n  addr: \":5002\"\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "http.addr") {
		t.Fatalf("err = %v", err)
	}
}

func TestConfig_emptyFileNeedsTheEnvironment(t *testing.T) {
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil {
		t.Fatal("an empty configuration validated")
	}
}

func TestConfig_vaultAddressBracketsIPv6(t *testing.T) {
	cfg, err := ParseConfig([]byte("storage:\n  vault:\n    proto: https\n    host: \"::1\"\n    port: 8200\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VaultAddress(); got != "https://[::1]:8200" {
		t.Errorf("VaultAddress = %q", got)
	}
}

func TestConfig_tokenWithANewlineIsRefused(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ApplyEnv(envOf(map[string]string{"VAULT_TOKEN": "hvs.abc\n"})); err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "storage.vault.auth_token") || strings.Contains(err.Error(), "hvs.abc") {
		t.Fatalf("err = %v", err)
	}
}
