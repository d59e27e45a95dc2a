package relay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The client's address is the peer of the connection, unless that peer is
// one of http.trusted_proxies: then it is the last address in
// X-Forwarded-For that is not itself a trusted proxy (each proxy appends
// the address it got the request from, so only the entries that trusted
// proxies wrote can be believed; whatever a client put before them can be
// made up). Without trusted_proxies the header is ignored.
//
// The address is worked out once, when the request arrives, and kept in
// the request's context (clientAddr): the access log and every decision
// per client read it from there.

// maxTrustedProxies bounds http.trusted_proxies.
const maxTrustedProxies = 256

// parseTrustedProxies reads http.trusted_proxies: addresses or CIDRs.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	if len(list) > maxTrustedProxies {
		return nil, fmt.Errorf("at most %d entries, got %d", maxTrustedProxies, len(list))
	}
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			if p != p.Masked() {
				return nil, fmt.Errorf("%s has host bits set; did you mean %s?", quote(s), p.Masked())
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("want an IP address or CIDR such as 10.0.0.0/8, got %s", quote(s))
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientAddrKey is the context key of the client's address.
type clientAddrKey struct{}

// clientAddr is the client's address as withClientAddr found it: an IP
// address, or the connection's RemoteAddr as is when it has none.
func clientAddr(r *http.Request) string {
	if a, ok := r.Context().Value(clientAddrKey{}).(string); ok {
		return a
	}
	return r.RemoteAddr
}

// withClientAddr works out each request's client address once.
func withClientAddr(proxies []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := clientAddress(proxies, r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, a)))
	})
}

// clientAddress is the client's address of a request from remoteAddr
// carrying the X-Forwarded-For headers xff.
func clientAddress(proxies []netip.Prefix, remoteAddr string, xff []string) string {
	peer, ok := hostAddr(remoteAddr)
	if !ok {
		return remoteAddr
	}
	if !trusted(proxies, peer) {
		return peer.String()
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := hostAddr(strings.TrimSpace(hops[i]))
		if !ok {
			return peer.String() // a hop that is no address: believe nothing before it
		}
		if !trusted(proxies, hop) {
			return hop.String()
		}
		peer = hop
	}
	return peer.String() // every hop a trusted proxy: the first one is the client
}

// hostAddr reads an IP address, with or without a port.
func hostAddr(s string) (netip.Addr, bool) {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

func trusted(proxies []netip.Prefix, a netip.Addr) bool {
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// pluginClientAddr is the client's address as the plugin takes it: a bare
// IP address (an IPv4-mapped one as IPv4), or "" when the connection had
// none (a Unix socket, a test's made-up RemoteAddr).
func pluginClientAddr(a string) string {
	ip, err := netip.ParseAddr(a)
	if err != nil || ip.Zone() != "" {
		return ""
	}
	return ip.Unmap().String()
}
