package relay

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// maxVaultNodes bounds storage.vault.addresses (and VAULT_ADDR's list).
const maxVaultNodes = 16

// VaultAddresses are the URLs of the Vault nodes the relay may call: the
// comma-separated VAULT_ADDR, else storage.vault.addresses (an extension
// of godoauth's format), else godoauth's proto://host:port.
func (c *Config) VaultAddresses() []string {
	v := c.Storage.Vault
	switch {
	case v.Addr != "":
		return splitAddrs(v.Addr)
	case len(v.Addresses) > 0:
		return v.Addresses
	default:
		u := url.URL{Scheme: v.Proto, Host: joinHostPort(v.Host, v.Port)}
		return []string{u.String()}
	}
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// checkVaultAddrs checks VAULT_ADDR: one URL, or several separated by commas.
func checkVaultAddrs(s string) error {
	addrs := splitAddrs(s)
	if len(addrs) == 0 {
		return checkVaultAddr(s)
	}
	if len(addrs) > maxVaultNodes {
		return fmt.Errorf("at most %d addresses, got %d", maxVaultNodes, len(addrs))
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if err := checkVaultAddr(a); err != nil {
			return err
		}
		if seen[a] {
			return fmt.Errorf("address %s given twice", quote(a))
		}
		seen[a] = true
	}
	return nil
}

// checkAddresses checks storage.vault.addresses, when given.
func (c *Config) checkAddresses() error {
	addrs := c.Storage.Vault.Addresses
	if len(addrs) == 0 {
		return nil
	}
	if err := checkVaultAddrs(strings.Join(addrs, ",")); err != nil {
		return c.errorf("storage.vault.addresses", "%s", err)
	}
	for _, a := range addrs {
		if strings.Contains(a, ",") || strings.TrimSpace(a) != a {
			return c.errorf("storage.vault.addresses", "want one URL per item, got %s", quote(a))
		}
	}
	return nil
}

// probeTimeout bounds one mount probe. With a cluster the probe may have
// to ride out an election, like the token request it serves, so it gets
// the request's http.timeout; with one address, one call's timeout.
func (c *Config) probeTimeout() time.Duration {
	t := time.Duration(c.Storage.Vault.Timeout)
	if len(c.VaultAddresses()) > 1 {
		t = max(t, time.Duration(c.HTTP.Timeout))
	}
	return t
}
