//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dev may do anything under team/ except push and delete under
// team/release/ (the release job's).
var dev = user{"dev", "dev-pw-6b1f0e", "repository:team/**:*;!repository:team/release/**:push,delete"}

// TestAccess_denyAndNetworks: deny entries and network conditions, with
// real registries and clients. A deny takes push away under team/release/
// while team/ stays open; an anonymous pull conditioned on 127.0.0.1 works
// from there and not from 127.0.0.2 (curl binds the source address, so the
// relay sees it as the peer), and through a proxy only when the relay
// trusts that proxy's X-Forwarded-For.
func TestAccess_denyAndNetworks(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, admin, dev)
	svc.WriteConfig(t, "anonymous_access=repository:mirror/**:pull@127.0.0.1/32")
	curl := tool(t, "curl")

	// A proxy on 127.0.0.3 in front of a relay that trusts it, and in front
	// of the stack's relay, which does not.
	trusting := StartRelay(t, RelayOptions{Vault: st.Vault, Services: []string{"registry"}, TrustedProxies: []string{"127.0.0.3"}})
	viaTrusting := startProxy(t, "127.0.0.3", trusting.URL)
	viaUntrusted := startProxy(t, "127.0.0.3", st.Relay.URL)

	for _, rk := range registryKinds {
		reg := StartRegistry(t, rk, st.Relay, svc)
		base := seed(t, reg, Crane, "mirror/base:v1")
		release := seed(t, reg, Crane, "team/release/app:v1")
		t.Run(string(rk), func(t *testing.T) {
			for _, ck := range []ClientKind{Crane, Skopeo} {
				c := NewClient(t, ck)
				mustOK(t, c.Login(reg, dev.name, dev.password))
				mustOK(t, c.Push(reg, "team/app:"+string(ck), NewTestImage(t)))
				mustFail(t, string(ck)+" push to team/release/ (denied)", c.Push(reg, "team/release/app:"+string(ck), NewTestImage(t)))
				pullSame(t, c, reg, "team/release/app:v1", release)
			}

			// The token never lists a denied action, and the registry
			// refuses that action with it.
			code, _, body := st.Relay.Token(t, "registry", dev.name, dev.password, "repository:team/release/app:pull,push,delete")
			if code != http.StatusOK {
				t.Fatalf("token: %d %s", code, body)
			}
			if got := grantedActions(tokenClaims(t, body), "team/release/app"); !slices.Equal(got, []string{"pull"}) {
				t.Errorf("dev's token on team/release/app grants %v, want [pull]", got)
			}
			tok := tokenOf(t, body)
			if st := registryStatus(t, curl, "127.0.0.1", "GET", reg.URL+"/v2/team/release/app/manifests/v1", tok); st != http.StatusOK {
				t.Errorf("pull with dev's token: %d", st)
			}
			if st := registryStatus(t, curl, "127.0.0.1", "POST", reg.URL+"/v2/team/release/app/blobs/uploads/", tok); st != http.StatusUnauthorized {
				t.Errorf("push with dev's token (denied): registry answers %d, want 401", st)
			}

			// Anonymous pulls of mirror/ from 127.0.0.1 only: crane pulls
			// from there; curl from 127.0.0.1 and 127.0.0.2 directly,
			// and through the proxy.
			pullSame(t, NewClient(t, Crane), reg, "mirror/base:v1", base)
			scope := "repository:mirror/base:pull"
			for _, c := range []struct {
				name, from, relay string
				pulls             bool
			}{
				{"from 127.0.0.1", "127.0.0.1", st.Relay.URL, true},
				{"from 127.0.0.2", "127.0.0.2", st.Relay.URL, false},
				{"from 127.0.0.1 through a trusted proxy", "127.0.0.1", viaTrusting, true},
				{"from 127.0.0.2 through a trusted proxy", "127.0.0.2", viaTrusting, false},
				{"from 127.0.0.1 through a proxy the relay does not trust", "127.0.0.1", viaUntrusted, false},
			} {
				claims := tokenClaims(t, anonymousAnswer(t, curl, c.from, c.relay, scope))
				granted := slices.Equal(grantedActions(claims, "mirror/base"), []string{"pull"})
				if granted != c.pulls {
					t.Errorf("%s: the token grants pull: %v, want %v (%v)", c.name, granted, c.pulls, claims.Access)
				}
			}
			// The registry agrees: the token got from 127.0.0.2 does not
			// pull, the one from 127.0.0.1 does.
			for from, want := range map[string]int{"127.0.0.1": http.StatusOK, "127.0.0.2": http.StatusUnauthorized} {
				tok := tokenOf(t, anonymousAnswer(t, curl, from, st.Relay.URL, scope))
				if got := registryStatus(t, curl, from, "GET", reg.URL+"/v2/mirror/base/manifests/v1", tok); got != want {
					t.Errorf("anonymous pull from %s: registry answers %d, want %d", from, got, want)
				}
			}
		})
	}
}

// grantedActions are the actions the token grants on a repository.
func grantedActions(c claimSet, repo string) []string {
	for _, a := range c.Access {
		if a.Type == "repository" && a.Name == repo {
			out := slices.Clone(a.Actions)
			slices.Sort(out)
			return out
		}
	}
	return nil
}

// curlFrom runs curl with its source address bound to from, and returns
// its output: the body, then the status code on a line of its own.
func curlFrom(t *testing.T, curl, from string, args ...string) (int, string) {
	t.Helper()
	r := RunCommand(t, baseEnv(t.TempDir()), "", "", curl,
		append([]string{"-sS", "--interface", from, "-w", "\n%{http_code}"}, args...)...)
	mustOK(t, r)
	i := strings.LastIndexByte(r.Stdout, '\n')
	code, err := strconv.Atoi(strings.TrimSpace(r.Stdout[i+1:]))
	if err != nil {
		t.Fatalf("curl %v: no status in %q", args, r.Stdout)
	}
	return code, r.Stdout[:i]
}

// anonymousAnswer is the relay's answer to an anonymous token request
// sent from the given source address.
func anonymousAnswer(t *testing.T, curl, from, relayURL, scope string) []byte {
	t.Helper()
	q := url.Values{"service": {"registry"}, "scope": {scope}}
	code, body := curlFrom(t, curl, from, relayURL+"/auth?"+q.Encode())
	if code != http.StatusOK {
		t.Fatalf("anonymous token from %s: %d %s", from, code, body)
	}
	return []byte(body)
}

// registryStatus is the registry's status for one request with a bearer
// token, sent from the given source address.
func registryStatus(t *testing.T, curl, from, method, rawURL, token string) int {
	t.Helper()
	code, _ := curlFrom(t, curl, from, "-o", "/dev/null", "-X", method,
		"-H", "Authorization: Bearer "+token,
		"-H", "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
		rawURL)
	return code
}

// startProxy serves a reverse proxy to target on addr (a loopback
// address), connecting to target from addr too, and returns its URL. Go's
// reverse proxy appends the peer's address to X-Forwarded-For, as
// load balancers do.
func startProxy(t *testing.T, addr, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}, Timeout: 5 * time.Second}
	p.Transport = &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, a)
	}}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("http://%s", l.Addr())
}

// TestAccess_rollingUpgradeEitherOrder: deny entries and networks during a
// rolling upgrade from the last release (v0.1.0), in either order. A relay
// upgraded first sends client_addr to the old plugin, which cannot store
// the new forms (400) and still mints; a plugin upgraded first gets no
// address from the old relay, so a conditioned allow does not apply and a
// conditioned deny does.
func TestAccess_rollingUpgradeEitherOrder(t *testing.T) {
	v := StartVault(t)
	oldPlugin := buildLastRelease(t)
	oldRelayBin := lastReleaseRelay(t)
	const oldName = pluginName + "-old"
	sum := copyFile(t, oldPlugin, filepath.Join(v.pluginDir, oldName))
	v.CLI(t, "plugin", "register", "-sha256="+sum, "-version="+pluginVersion, "-command="+oldName, "secret", oldName)
	v.CLI(t, "secrets", "enable", "-path=old", "-plugin-version="+pluginVersion, oldName)
	if code, _, _ := httpGet(t, v.Addr+"/v1/old/ca/pem", "", ""); code != http.StatusOK {
		v.CLI(t, "write", "-f", "old/ca/generate")
	}
	svc := v.EnableService(t, "registry")

	t.Run("relay first: the old plugin refuses the forms and still mints", func(t *testing.T) {
		for _, args := range [][]string{
			{"write", "old/users/dev", "password=pw", "access=repository:team/**:*;!repository:team/release/**:push"},
			{"write", "old/config", "anonymous_access=repository:mirror/**:pull@127.0.0.1/32"},
		} {
			if _, stderr, err := v.TryCLI("", args...); err == nil || !strings.Contains(stderr, "400") {
				t.Errorf("vault %s on the old plugin: err %v, %s; want a 400", strings.Join(args, " "), err, stderr)
			}
		}
		v.CLI(t, "write", "old/users/dev", "password=pw", "access=repository:team/**:*")
		relay := StartRelay(t, RelayOptions{Vault: v, Services: []string{"old"}})
		code, _, body := relay.Token(t, "old", "dev", "pw", "repository:team/app:push")
		if code != http.StatusOK {
			t.Fatalf("new relay, old plugin: %d %s", code, body)
		}
		if got := grantedActions(tokenClaims(t, body), "team/app"); !slices.Equal(got, []string{"push"}) {
			t.Errorf("new relay, old plugin: grants %v, want [push]", got)
		}
	})

	t.Run("plugin first: the old relay sends no address", func(t *testing.T) {
		svc.WriteConfig(t, "anonymous_access=repository:mirror/**:pull@127.0.0.1/32;repository:pub/**:pull")
		svc.WriteUser(t, "dev", "pw", "repository:team/**:*;!repository:team/secret/**:pull@127.0.0.0/8")
		relay := StartRelay(t, RelayOptions{Vault: v, Services: []string{"registry"}, Binary: oldRelayBin})
		for _, c := range []struct {
			user, password, scope, repo string
			want                        []string
		}{
			{"", "", "repository:mirror/base:pull", "mirror/base", nil},          // conditioned allow: not without an address
			{"", "", "repository:pub/base:pull", "pub/base", []string{"pull"}},   // unconditioned: as before
			{"dev", "pw", "repository:team/secret/x:pull", "team/secret/x", nil}, // conditioned deny: applies
			{"dev", "pw", "repository:team/app:pull", "team/app", []string{"pull"}},
		} {
			code, _, body := relay.Token(t, "registry", c.user, c.password, c.scope)
			if code != http.StatusOK {
				t.Fatalf("old relay, %s %s: %d %s", c.user, c.scope, code, body)
			}
			if got := grantedActions(tokenClaims(t, body), c.repo); !slices.Equal(got, c.want) {
				t.Errorf("old relay, user %q, %s: grants %v, want %v", c.user, c.scope, got, c.want)
			}
		}
	})
}
