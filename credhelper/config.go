package credhelper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// ConfigEnv names the helper's configuration file, instead of
// <user config dir>/vault-registry/config.json.
const ConfigEnv = "VAULT_REGISTRY_CONFIG"

// DefaultMount is the plugin mount used when the configuration names
// none: the service name the README's set-up gives a single registry.
const DefaultMount = "registry"

// Config maps registry hosts to the Vault mount that serves them:
//
//	{
//	  "registries": {
//	    "registry.example.com": {"vault_addr": "https://vault.example.com:8200", "mount": "registry"},
//	    "ci-cache.example.com": {"mount": "ci-cache", "token_file": "/run/vault-agent/token"}
//	  },
//	  "default": {"mount": "registry"}
//	}
//
// A host not listed uses "default"; with no file at all every host does,
// with the Vault address of VAULT_ADDR and the mount "registry": one
// registry needs no configuration beyond credHelpers in docker's file.
type Config struct {
	Registries map[string]Entry `json:"registries"`
	Default    *Entry           `json:"default"`
}

// Entry is the Vault side of one registry.
type Entry struct {
	// VaultAddr is Vault's address; empty means VAULT_ADDR, then the
	// vault CLI's default.
	VaultAddr string `json:"vault_addr"`
	// Mount is the plugin mount, the registry's service name.
	Mount string `json:"mount"`
	// TokenFile is a Vault Agent file sink holding the token (plain, not
	// wrapped or encrypted); when set it is used instead of the vault
	// CLI's token (VAULT_TOKEN still comes first).
	TokenFile string `json:"token_file"`
	// CACert is a PEM file of the CA that signed Vault's certificate;
	// empty means VAULT_CACERT.
	CACert string `json:"ca_cert"`
}

// mountRE is the plugin's service name grammar (the relay's too).
var mountRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ConfigPath is where the configuration is read from.
func ConfigPath() (string, error) {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory (set %s): %w", ConfigEnv, err)
	}
	return filepath.Join(dir, "vault-registry", "config.json"), nil
}

// LoadConfig reads the configuration file; a file that does not exist is
// the empty configuration, while one that exists and is malformed is an
// error that names it.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	norm := make(map[string]Entry, len(c.Registries))
	for host, e := range c.Registries {
		h := registryHost(host)
		if h == "" {
			return nil, fmt.Errorf("%s: registry %q is not a host name", path, host)
		}
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("%s: registry %q: %v", path, host, err)
		}
		norm[h] = e
	}
	c.Registries = norm
	if c.Default != nil {
		if err := c.Default.check(); err != nil {
			return nil, fmt.Errorf("%s: default: %v", path, err)
		}
	}
	return &c, nil
}

func (e Entry) check() error {
	if e.Mount != "" && !mountRE.MatchString(e.Mount) {
		return fmt.Errorf("mount %q is not a plugin mount name", e.Mount)
	}
	if e.VaultAddr != "" {
		if u, err := url.Parse(e.VaultAddr); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("vault_addr %q is not an http(s) URL", e.VaultAddr)
		}
	}
	return nil
}

// For returns the entry for a registry host, with the default mount
// filled in.
func (c *Config) For(host string) Entry {
	e, ok := c.Registries[registryHost(host)]
	if !ok && c.Default != nil {
		e = *c.Default
	}
	if e.Mount == "" {
		e.Mount = DefaultMount
	}
	return e
}

// Hosts lists the configured registry hosts.
func (c *Config) Hosts() []string {
	hosts := make([]string, 0, len(c.Registries))
	for h := range c.Registries {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// registryHost is the host (and port) of what a client passes as the
// server: "registry.example.com", "https://registry.example.com/v2/" or
// "localhost:5000". Empty when there is none.
func registryHost(server string) string {
	s := strings.TrimSpace(server)
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		s = s[:i]
	}
	if strings.ContainsAny(s, " \t@") {
		return ""
	}
	return strings.ToLower(s)
}
