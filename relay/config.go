package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// MaxConfigBytes bounds the YAML file: godoauth's files are a few hundred bytes.
const MaxConfigBytes = 1 << 20

// Defaults, as godoauth had them.
const (
	DefaultVaultTimeout = 3 * time.Second
	DefaultVaultPool    = 2
	DefaultHTTPTimeout  = 5 * time.Second
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
)

// Bounds on values that make no sense beyond them.
const (
	maxTimeout    = 10 * time.Minute
	maxExpiration = 365 * 24 * 60 * 60 // seconds
	maxPool       = 4096
)

// Config is godoauth's YAML file, read unchanged. Fields tagged `yaml:"-"`
// come from the environment, never from the file.
type Config struct {
	Version string      `yaml:"version"`
	Log     LogConfig   `yaml:"log"`
	Storage Storage     `yaml:"storage"`
	HTTP    HTTPConfig  `yaml:"http"`
	Token   TokenConfig `yaml:"token"`
	// Identity is this relay's extension: Vault identities as registry
	// users (identity_config.go). godoauth's files have no such key.
	Identity IdentityConfig `yaml:"identity"`

	lines map[string]int // key path → line in the file, for errors
}

// LogConfig is the `log` section.
type LogConfig struct {
	Level string `yaml:"level"` // error, warn, info (default), debug
	File  string `yaml:"file"`  // empty: standard error
	// Format, an extension: text (default) or json (hclog's JSON, one
	// object a line, as the plugin logs inside Vault).
	Format string `yaml:"format"`
}

// Storage is the `storage` section; only Vault is supported, as in godoauth.
type Storage struct {
	Vault VaultConfig `yaml:"vault"`
}

// VaultConfig is `storage.vault`.
type VaultConfig struct {
	Proto     string   `yaml:"proto"` // http or https
	Host      string   `yaml:"host"`
	Port      int      `yaml:"port"`
	AuthToken string   `yaml:"auth_token"`
	Timeout   Duration `yaml:"timeout"` // per Vault call; default 3s
	Pool      int      `yaml:"pool"`    // idle connections kept to Vault, at least; default 2
	// Addresses is an extension of godoauth's format: the URLs of the
	// nodes of a Vault cluster, in place of proto, host and port
	// (relay/nodes_config.go).
	Addresses []string `yaml:"addresses"`

	// Extensions to godoauth's file, instead of auth_token
	// (vaulttoken_config.go).
	AuthTokenFile string           `yaml:"auth_token_file"` // kept fresh by Vault Agent
	AppRole       AppRoleConfig    `yaml:"approle"`
	Kubernetes    KubernetesConfig `yaml:"kubernetes"`
	// Batch, an extension: false sends every token request in a Vault
	// call of its own (batch.go), for one audit entry per token at the
	// price of Vault's per-request work. Default true.
	Batch *bool `yaml:"batch"`

	// Addr is VAULT_ADDR; when set it replaces proto, host and port.
	Addr string `yaml:"-"`
	// CACert is VAULT_CACERT: a PEM file of CA certificates to verify Vault with.
	CACert string `yaml:"-"`
}

// HTTPConfig is the `http` section: the relay's listener.
type HTTPConfig struct {
	Addr    string    `yaml:"addr"`
	Timeout Duration  `yaml:"timeout"` // read and write timeout; default 5s
	TLS     TLSConfig `yaml:"tls"`
	// Extensions to godoauth's file. MetricsAddr, when set, serves
	// /metrics on a listener of its own (plain HTTP, e.g. 127.0.0.1:9102)
	// and no longer on addr. TrustedProxies are the addresses or CIDRs of
	// the proxies whose X-Forwarded-For the relay believes (clientaddr.go).
	MetricsAddr    string   `yaml:"metrics_addr"`
	TrustedProxies []string `yaml:"trusted_proxies"`

	proxies []netip.Prefix // TrustedProxies, parsed by checkValues
}

// TLSConfig is `http.tls`: when both files are named, the relay serves HTTPS.
type TLSConfig struct {
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.Certificate != "" || t.Key != "" }

// TokenConfig is the `token` section. Only issuer and expiration matter to
// the relay: the signing key lives in Vault.
type TokenConfig struct {
	Issuer      string `yaml:"issuer"`
	Expiration  int64  `yaml:"expiration"` // seconds; sent to the plugin as ttl
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// Duration is a YAML duration such as "5s" or "1m30s". A bare number is
// refused: godoauth read it as nanoseconds, which never worked.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError, so that the decoder reports it with its line.
	bad := func(format string, args ...any) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
	}
	if n.Kind != yaml.ScalarNode {
		return bad("want a duration such as 5s")
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		return bad("want a duration with a unit such as %ss, got the bare number %s", n.Value, quote(n.Value))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return bad("want a duration such as 5s, got %s", quote(n.Value))
	}
	*d = Duration(v)
	return nil
}

// ConfigError names the key (and, from a file, the line) of a bad setting.
type ConfigError struct {
	Line int    // 0 when unknown
	Key  string // dotted path such as "log.level"; empty for the whole file
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadConfig reads a godoauth YAML file, applies the environment overrides
// (getenv is usually os.Getenv) and checks that the result is complete.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes; is this the right file?", path, MaxConfigBytes)
	}
	cfg, err := ParseConfig(data)
	if err == nil {
		err = cfg.ApplyEnv(getenv)
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes godoauth's YAML. Unknown keys, repeated keys and
// values of the wrong type or out of range are errors naming the key.
// Settings that the environment may still supply (the Vault address and
// token) are checked by Validate.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, &ConfigError{Msg: fmt.Sprintf("larger than %d bytes", MaxConfigBytes)}
	}
	cfg := &Config{lines: map[string]int{}}
	var doc yaml.Node
	switch err := yaml.Unmarshal(data, &doc); {
	case err != nil:
		return nil, &ConfigError{Msg: oneLine(err.Error())}
	case len(doc.Content) == 0:
		// An empty file: every setting from defaults and the environment.
		cfg.setDefaults()
		return cfg, nil
	}
	keys, err := cfg.readKeys(doc.Content[0])
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, keys.explain(err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, &ConfigError{Line: next.Line, Msg: "more than one YAML document"}
	}
	if keys.merge != nil {
		return nil, &ConfigError{Line: keys.merge.Line, Key: keys.mergePath, Msg: "YAML merge keys (<<) are not supported"}
	}
	// yaml.v3 truncates a fraction into an int field (82.5 becomes 82).
	for _, key := range wholeNumberKeys {
		if n := keys.values[key]; n != nil && n.Kind == yaml.ScalarNode && n.Tag == "!!float" {
			return nil, &ConfigError{Line: n.Line, Key: key, Msg: "want a whole number, got " + quote(n.Value)}
		}
	}
	if err := cfg.checkValues(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return cfg, nil
}

// ApplyEnv lets VAULT_ADDR, VAULT_TOKEN and VAULT_CACERT override the file,
// as they do for every Vault client.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	if getenv == nil {
		return nil
	}
	if v := getenv("VAULT_ADDR"); v != "" {
		if err := checkVaultAddrs(v); err != nil {
			return &ConfigError{Key: "VAULT_ADDR", Msg: err.Error()}
		}
		c.Storage.Vault.Addr = v
	}
	if v := getenv("VAULT_TOKEN"); v != "" {
		c.Storage.Vault.AuthToken = v
	}
	if v := getenv("VAULT_CACERT"); v != "" {
		c.Storage.Vault.CACert = v
	}
	return nil
}

// Validate checks a complete configuration: every value in range and the
// Vault address and token known, from the file or the environment. It also
// fills in defaults, so a Config built in code can be passed to New.
func (c *Config) Validate() error {
	if err := c.checkValues(); err != nil {
		return err
	}
	c.setDefaults()
	v := &c.Storage.Vault
	if v.Addr == "" && len(v.Addresses) == 0 {
		if v.Proto == "" || v.Host == "" || v.Port == 0 {
			return c.errorf("storage.vault", "proto, host and port are required (or set VAULT_ADDR)")
		}
	}
	if err := c.checkTokenSource(); err != nil {
		return err
	}
	if c.HTTP.Addr == "" {
		return c.errorf("http.addr", `required, for example ":5002"`)
	}
	return nil
}

// VaultAddress is the Vault server's URL (VAULT_ADDR, else proto://host:port),
// or the cluster's node URLs separated by commas.
func (c *Config) VaultAddress() string {
	return strings.Join(c.VaultAddresses(), ",")
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// checkValues checks every value that is set; empty values are left to
// defaults and to Validate.
func (c *Config) checkValues() error {
	if c.Version != "" && c.Version != "0.1" {
		return c.errorf("version", "want 0.1 (godoauth's only version), got %s", quote(c.Version))
	}
	switch strings.ToLower(c.Log.Level) {
	case "", "error", "warn", "info", "debug":
	default:
		return c.errorf("log.level", "want error, warn, info or debug, got %s", quote(c.Log.Level))
	}
	switch strings.ToLower(c.Log.Format) {
	case "", "text", "json":
	default:
		return c.errorf("log.format", "want text or json, got %s", quote(c.Log.Format))
	}
	v := c.Storage.Vault
	switch v.Proto {
	case "", "http", "https":
	default:
		return c.errorf("storage.vault.proto", "want http or https, got %s", quote(v.Proto))
	}
	if v.Host != "" {
		if strings.ContainsAny(v.Host, "/?#@ \t") {
			return c.errorf("storage.vault.host", "want a host name or address, got %s", quote(v.Host))
		}
	}
	if v.Port < 0 || v.Port > 65535 {
		return c.errorf("storage.vault.port", "want 1 to 65535, got %d", v.Port)
	}
	if err := checkTimeout(time.Duration(v.Timeout)); err != nil {
		return c.errorf("storage.vault.timeout", "%s", err)
	}
	if v.Pool < 0 || v.Pool > maxPool {
		return c.errorf("storage.vault.pool", "want 1 to %d, got %d", maxPool, v.Pool)
	}
	if err := checkTimeout(time.Duration(c.HTTP.Timeout)); err != nil {
		return c.errorf("http.timeout", "%s", err)
	}
	if c.HTTP.Addr != "" {
		if _, port, err := net.SplitHostPort(c.HTTP.Addr); err != nil || port == "" {
			return c.errorf("http.addr", `want host:port or :port, for example ":5002", got %s`, quote(c.HTTP.Addr))
		}
	}
	if a := c.HTTP.MetricsAddr; a != "" {
		_, port, err := net.SplitHostPort(a)
		if err != nil || port == "" {
			return c.errorf("http.metrics_addr", `want host:port, for example "127.0.0.1:9102", got %s`, quote(a))
		}
		if a == c.HTTP.Addr && port != "0" {
			return c.errorf("http.metrics_addr", "must differ from http.addr (%s): leave it out to serve /metrics there", quote(a))
		}
	}
	proxies, err := parseTrustedProxies(c.HTTP.TrustedProxies)
	if err != nil {
		return c.errorf("http.trusted_proxies", "%s", err)
	}
	c.HTTP.proxies = proxies
	tls := c.HTTP.TLS
	if tls.Certificate != "" && tls.Key == "" {
		return c.errorf("http.tls.key", "required when http.tls.certificate is set")
	}
	if tls.Key != "" && tls.Certificate == "" {
		return c.errorf("http.tls.certificate", "required when http.tls.key is set")
	}
	if c.Token.Expiration < 0 || c.Token.Expiration > maxExpiration {
		return c.errorf("token.expiration", "want 0 to %d seconds, got %d", maxExpiration, c.Token.Expiration)
	}
	for _, check := range sectionChecks {
		if err := check(c); err != nil {
			return err
		}
	}
	return nil
}

// sectionChecks check the settings whose types and checks live beside the
// feature they configure: storage.vault.addresses (nodes_config.go) and
// identity (identity_config.go). The relay's own token, which the
// environment may still supply, is checked by Validate
// (vaulttoken_config.go).
var sectionChecks = []func(*Config) error{
	(*Config).checkAddresses,
	(*Config).checkIdentity,
}

func checkTimeout(d time.Duration) error {
	if d < 0 || d > maxTimeout {
		return fmt.Errorf("want a duration between 0s (the default) and %s, got %s", maxTimeout, d)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	c.Log.Level = strings.ToLower(c.Log.Level)
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
	c.Log.Format = strings.ToLower(c.Log.Format)
	if c.Storage.Vault.Timeout == 0 {
		c.Storage.Vault.Timeout = Duration(DefaultVaultTimeout)
	}
	if c.Storage.Vault.Pool == 0 {
		c.Storage.Vault.Pool = DefaultVaultPool
	}
	if c.HTTP.Timeout == 0 {
		c.HTTP.Timeout = Duration(DefaultHTTPTimeout)
	}
}

func checkVaultAddr(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want a URL such as https://vault.example.com:8200, got %s", quote(s))
	}
	return nil
}

func (c *Config) errorf(key, format string, args ...any) error {
	// The line of the key, else of the nearest section that holds it.
	line := 0
	for k := key; line == 0 && k != ""; {
		line = c.lines[k]
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return &ConfigError{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// fileKeys is what the YAML tree says about the keys of a file: the line
// of each dotted key path, so that an error names the key and its line.
type fileKeys struct {
	atLine    map[int][]string      // line → key paths on it, outermost first
	values    map[string]*yaml.Node // key path → its value
	merge     *yaml.Node            // the first merge key (<<), refused
	mergePath string
}

// wholeNumberKeys are the settings that are whole numbers.
var wholeNumberKeys = []string{"storage.vault.port", "storage.vault.pool", "token.expiration"}

// maxKeyDepth is the deepest key of the file (storage.vault.approle.role_id).
const maxKeyDepth = 4

// readKeys records the line of every key up to maxKeyDepth and refuses a
// top level that is not a mapping and repeated keys. It does not follow
// aliases, so an alias bomb costs nothing here; the decoder refuses a
// list or mapping where a setting is a string or a number without
// expanding it.
func (c *Config) readKeys(top *yaml.Node) (*fileKeys, error) {
	if top.Kind != yaml.MappingNode {
		return nil, &ConfigError{Line: top.Line, Msg: "want a mapping of settings at the top"}
	}
	k := &fileKeys{atLine: map[int][]string{}, values: map[string]*yaml.Node{}}
	var walk func(n *yaml.Node, path string, depth int) error
	walk = func(n *yaml.Node, path string, depth int) error {
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			name := joinKey(path, key.Value)
			if key.Tag == "!!merge" && k.merge == nil {
				k.merge, k.mergePath = key, path
			}
			if seen[key.Value] {
				return &ConfigError{Line: key.Line, Key: name, Msg: "key repeated"}
			}
			seen[key.Value] = true
			c.lines[name] = key.Line
			k.atLine[key.Line] = append(k.atLine[key.Line], name)
			k.values[name] = val
			if val.Kind == yaml.MappingNode && depth < maxKeyDepth {
				if err := walk(val, name, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return k, walk(top, "", 1)
}

// explain turns the decoder's error into one line naming the key and its
// line. yaml.v3 reports each problem as "line N: …"; the key is the one on
// that line (for an unknown field, the one with that name).
func (k *fileKeys) explain(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return &ConfigError{Msg: oneLine(err.Error())}
	}
	first := te.Errors[0]
	lineText, msg, _ := strings.Cut(strings.TrimPrefix(first, "line "), ": ")
	line, _ := strconv.Atoi(lineText)
	keys := k.atLine[line]
	if field, ok := strings.CutPrefix(msg, "field "); ok {
		field, _, _ = strings.Cut(field, " not found")
		for _, key := range keys {
			if key == field || strings.HasSuffix(key, "."+field) {
				return &ConfigError{Line: line, Key: key, Msg: "unknown key"}
			}
		}
		return &ConfigError{Line: line, Key: field, Msg: "unknown key"}
	}
	ce := &ConfigError{Line: line, Msg: oneLine(msg)}
	if m := cannotDecode.FindStringSubmatch(msg); m != nil {
		got := kinds["!!"+m[1]]
		if m[2] != "" {
			got = quote(m[2])
		}
		if kinds[m[3]] != "" && got != "" {
			ce.Msg = "want " + kinds[m[3]] + ", got " + got
		}
	}
	// The key on that line; for an item of a list on a line of its own,
	// the nearest key above it, which holds the list.
	for l := line; l > 0 && ce.Key == ""; l-- {
		if keys := k.atLine[l]; len(keys) > 0 {
			ce.Key = keys[0]
			if l != line {
				ce.Key = keys[len(keys)-1]
			}
		}
	}
	return ce
}

// cannotDecode is yaml.v3's message for a value of the wrong kind.
var cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+) (?:`(.*)` )?into (\\S+)$")

// kinds names the types of settings and YAML's kinds of values in errors.
var kinds = map[string]string{
	"[]string": "a list of names", "string": "a string", "int": "a whole number", "int64": "a whole number", "bool": "true or false",
	"!!seq": "a list", "!!map": "a mapping", "!!str": "a string", "!!int": "a number", "!!float": "a number", "!!bool": "a boolean",
}

// joinKey is a dotted key path; a key that is not printable or is long is
// quoted.
func joinKey(path, key string) string {
	if strings.IndexFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 || len(key) > 64 {
		key = quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// quote shows untrusted input in a message: quoted, escaped, truncated.
var quote = tokenapi.Quote

// oneLine folds a message into one line.
var oneLine = tokenapi.OneLine
