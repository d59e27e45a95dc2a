package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// MaxConfigBytes bounds the YAML file: godoauth's files are a few hundred bytes.
const MaxConfigBytes = 1 << 20

// Defaults, as godoauth had them.
const (
	DefaultVaultTimeout = 3 * time.Second
	DefaultVaultPool    = 2
	DefaultHTTPTimeout  = 5 * time.Second
	DefaultLogLevel     = "info"
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
	// users (identity.go). godoauth's files have no such key.
	Identity IdentityConfig `yaml:"identity"`

	lines map[string]int // key path → line in the file, for errors
}

// LogConfig is the `log` section.
type LogConfig struct {
	Level string `yaml:"level"` // error, warn, info (default), debug
	File  string `yaml:"file"`  // empty: standard error
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

	// Extensions to godoauth's file, instead of auth_token (vaulttoken.go).
	AuthTokenFile string        `yaml:"auth_token_file"` // kept fresh by Vault Agent
	AppRole       AppRoleConfig `yaml:"approle"`

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
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 5s")
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		return fmt.Errorf("want a duration with a unit such as %ss, got the bare number %s", n.Value, quote(n.Value))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("want a duration such as 5s, got %s", quote(n.Value))
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
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	cfg := &Config{lines: map[string]int{}}
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// An empty file: every setting from defaults and the environment.
	case err != nil:
		return nil, &ConfigError{Msg: oneLine(err.Error())}
	default:
		var next yaml.Node
		if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
			return nil, &ConfigError{Line: next.Line, Msg: "more than one YAML document"}
		}
		if len(doc.Content) > 0 {
			if err := cfg.decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), "", 0); err != nil {
				return nil, err
			}
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
	if err := c.checkAddresses(); err != nil {
		return err
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
	return c.checkIdentity()
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

var durationType = reflect.TypeFor[Duration]()

// decode walks the YAML tree along the Config struct, so every unknown key,
// repeated key and wrong value is reported with its full path and line.
// It visits only keys the struct knows, so aliases cannot make it expand
// anything large.
func (c *Config) decode(n *yaml.Node, v reflect.Value, path string, depth int) error {
	if n.Kind == yaml.AliasNode {
		if depth > 8 || n.Alias == nil {
			return &ConfigError{Line: n.Line, Key: path, Msg: "alias nested too deeply"}
		}
		return c.decode(n.Alias, v, path, depth+1)
	}
	if path != "" {
		c.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "key:" with nothing: keep the zero value
	}
	bad := func(msg string) error { return &ConfigError{Line: n.Line, Key: path, Msg: msg} }

	if v.Kind() == reflect.Struct && v.Type() != durationType {
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping of settings, got " + describe(n))
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return &ConfigError{Line: k.Line, Key: path, Msg: "keys must be plain names"}
			}
			key := joinKey(path, k.Value)
			if k.Tag == "!!merge" {
				return &ConfigError{Line: k.Line, Key: path, Msg: "YAML merge keys (<<) are not supported"}
			}
			if seen[k.Value] {
				return &ConfigError{Line: k.Line, Key: key, Msg: "key repeated"}
			}
			seen[k.Value] = true
			field, ok := fieldByTag(v.Type(), k.Value)
			if !ok {
				return &ConfigError{Line: k.Line, Key: key, Msg: "unknown key" + knownKeys(v.Type())}
			}
			if err := c.decode(val, v.FieldByIndex(field.Index), key, depth); err != nil {
				return err
			}
		}
		return nil
	}

	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String {
		if n.Kind != yaml.SequenceNode {
			return bad("want a list of names, got " + describe(n))
		}
		list := reflect.MakeSlice(v.Type(), 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode || item.Tag != "!!str" {
				return &ConfigError{Line: item.Line, Key: path, Msg: "want a list of names, got an item " + describe(item)}
			}
			list = reflect.Append(list, reflect.ValueOf(item.Value))
		}
		v.Set(list)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return bad("want " + want(v.Type()) + ", got " + describe(n))
	}
	switch {
	case v.Type() == durationType:
		var d Duration
		if err := d.UnmarshalYAML(n); err != nil {
			return bad(err.Error())
		}
		v.Set(reflect.ValueOf(d))
	case v.Kind() == reflect.String:
		v.SetString(n.Value)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		var i int64
		if n.Tag != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			return bad("want a whole number, got " + quote(n.Value))
		}
		v.SetInt(i)
	default:
		return bad("unsupported setting type") // a programming error
	}
	return nil
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && tag != "-" && tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func knownKeys(t reflect.Type) string {
	var names []string
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if t.Field(i).IsExported() && tag != "-" && tag != "" {
			names = append(names, tag)
		}
	}
	return " (known here: " + strings.Join(names, ", ") + ")"
}

func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 5s"
	case t.Kind() == reflect.String:
		return "a string"
	default:
		return "a whole number"
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return quote(n.Value)
	}
}

func joinKey(path, key string) string {
	if strings.IndexFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 || len(key) > 64 {
		key = quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// quote shows untrusted input in a message: quoted, escaped, truncated.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
