package access

import (
	"fmt"
	"net/netip"
	"strings"
)

// MaxNetworks is the most networks one entry may name.
const MaxNetworks = 64

// parseNetworks reads the comma-separated networks after an entry's "@":
// CIDRs (10.0.0.0/8, fd00::/8) or single addresses, IPv4 or IPv6.
func parseNetworks(s string) ([]netip.Prefix, error) {
	if s == "" {
		return nil, fmt.Errorf("no network after \"@\" (want a CIDR such as 10.0.0.0/8)")
	}
	var out []netip.Prefix
	for text := range strings.SplitSeq(s, ",") {
		if len(out) == MaxNetworks {
			return nil, fmt.Errorf("more than %d networks", MaxNetworks)
		}
		p, err := parseNetwork(text)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parseNetwork(text string) (netip.Prefix, error) {
	if strings.Contains(text, "/") {
		p, err := netip.ParsePrefix(text)
		if err != nil || p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("network %s is not a CIDR such as 10.0.0.0/8 or fd00::/8", quote(text))
		}
		return p, nil
	}
	a, err := netip.ParseAddr(text)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("network %s is not a CIDR such as 10.0.0.0/8 or fd00::/8", quote(text))
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func formatNetworks(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// appliesFrom reports whether the entry applies to a client at from (the
// zero Addr when the address is unknown). An entry without networks
// applies from anywhere; a conditioned entry only from inside one of its
// networks, and never from an unknown address, except that a deny applies
// there too: not knowing where a client is must not lift a restriction.
func (e *Entry) appliesFrom(from netip.Addr) bool {
	if len(e.Networks) == 0 {
		return true
	}
	if !from.IsValid() {
		return e.Deny
	}
	for _, p := range e.Networks {
		if p.Contains(from) {
			return true
		}
	}
	return false
}

// ParseAddr reads a client address as the relay sends it: an IPv4 or IPv6
// address without a port or zone. An IPv4-mapped IPv6 address is the IPv4
// address. The empty string is the zero Addr: the address is unknown.
func ParseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("client address %s is not an IP address", quote(s))
	}
	return a.Unmap(), nil
}
