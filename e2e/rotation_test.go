//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Signing-key rotation and trust-anchor replacement with running
// registries, the way e2e/ROTATION-NOTES.md tells an operator to do them.

// rotUser pushes and pulls in the rotation tests.
var rotUser = user{"rita", "rita-pw-90ad3f", "repository:rita/**:*"}

// rotationTarget is one running registry with the repository it is
// exercised with.
type rotationTarget struct {
	name string
	reg  *Registry
	site *RegistrySite
	repo string
	img  *TestImage // the last image pushed
	c    *Client
}

// pushPull pushes a new image under tag and pulls it back.
func (rt *rotationTarget) pushPull(t testing.TB, tag string) {
	t.Helper()
	img := NewTestImage(t)
	if r := rt.c.Push(rt.reg, rt.repo+":"+tag, img); !r.OK() {
		t.Fatalf("%s: push %s:%s: %v", rt.name, rt.repo, tag, r)
	}
	pullSame(t, rt.c, rt.reg, rt.repo+":"+tag, img)
	rt.img = img
}

// tagsWith lists the repository's tags with a registry token, as a client
// does after the token exchange, and returns the status.
func (rt *rotationTarget) tagsWith(t testing.TB, token string) (int, []byte) {
	t.Helper()
	return bearerGet(t, rt.reg.URL+"/v2/"+rt.repo+"/tags/list", token)
}

func newRotationTarget(t testing.TB, name string, reg *Registry, site *RegistrySite) *rotationTarget {
	t.Helper()
	rt := &rotationTarget{name: name, reg: reg, site: site, repo: "rita/" + name, c: NewClient(t, Crane)}
	mustOK(t, rt.c.Login(reg, rotUser.name, rotUser.password))
	return rt
}

// pullToken asks the relay for a token that may pull every target's
// repository.
func pullToken(t testing.TB, relay *Relay, service string, targets []*rotationTarget) string {
	t.Helper()
	var scopes []string
	for _, rt := range targets {
		scopes = append(scopes, "repository:"+rt.repo+":pull")
	}
	code, _, body := relay.Token(t, service, rotUser.name, rotUser.password, scopes...)
	if code != http.StatusOK {
		t.Fatalf("GET /auth: %d %s", code, truncate(body, 300))
	}
	return tokenOf(t, body)
}

// keyState is what `vault read <service>/keys` says.
type keyState struct {
	Current string
	States  map[string]string // key id → next, current, retired
}

func readKeys(t testing.TB, v *Vault, service string) keyState {
	t.Helper()
	code, answer := v.RootCall(t, http.MethodGet, service+"/keys", nil)
	if code != http.StatusOK {
		t.Fatalf("read %s/keys: %d %v", service, code, answer)
	}
	ks := keyState{Current: jsonField(answer, "data", "current_key"), States: map[string]string{}}
	data, _ := answer["data"].(map[string]any)
	keys, _ := data["keys"].([]any)
	for _, k := range keys {
		m, _ := k.(map[string]any)
		id, _ := m["id"].(string)
		state, _ := m["state"].(string)
		ks.States[id] = state
	}
	if ks.Current == "" || ks.States[ks.Current] != "current" {
		t.Fatalf("%s/keys: current_key %q with states %v", service, ks.Current, ks.States)
	}
	return ks
}

// tokenHeader decodes a JWT's JOSE header.
func tokenHeader(t testing.TB, token string) (kid string, x5c []string) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct {
		Kid string   `json:"kid"`
		X5c []string `json:"x5c"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("token header %s: %v", raw, err)
	}
	return h.Kid, h.X5c
}

// fetchJWKS saves <service>/jwks, read without a Vault token, for a v3
// registry's jwks option.
func fetchJWKS(t testing.TB, svc *Service) string {
	t.Helper()
	code, hdr, body := httpGet(t, svc.Vault.Addr+"/v1/"+svc.Name+"/jwks", "", "")
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &set) != nil || len(set.Keys) == 0 {
		t.Fatalf("GET %s/jwks: %d %s %q", svc.Name, code, hdr.Get("Content-Type"), truncate(body, 300))
	}
	path := filepath.Join(t.TempDir(), svc.Name+"-jwks.json")
	mustWrite(t, path, body)
	return path
}

// rotationStack starts Vault, the relay and a registry of each kind
// (restartable with the same storage and port), with rita's image v0
// pushed to each.
func rotationStack(t testing.TB) (*Stack, *Service, []*rotationTarget) {
	t.Helper()
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, rotUser)
	var targets []*rotationTarget
	for _, rk := range registryKinds {
		site := NewRegistrySite(t, rk)
		targets = append(targets, newRotationTarget(t, string(rk), site.Start(t, st.Relay, svc, nil), site))
	}
	for _, rt := range targets {
		rt.pushPull(t, "v0")
	}
	return st, svc, targets
}

// TestRotation_keysRotateUnderRunningRegistries: registries started once
// from the CA bundle keep accepting pushes and pulls across several key
// rotations, with no restart; a token minted before the rotations stays
// valid.
func TestRotation_keysRotateUnderRunningRegistries(t *testing.T) {
	st, svc, targets := rotationStack(t)
	before := readKeys(t, st.Vault, svc.Name)
	first := pullToken(t, st.Relay, svc.Name, targets)
	if kid, x5c := tokenHeader(t, first); kid != before.Current || len(x5c) == 0 {
		t.Errorf("token header: kid %q and %d x5c certificates, want kid %q (the current key) and x5c", kid, len(x5c), before.Current)
	}

	seen := map[string]bool{before.Current: true}
	prev := before
	const rotations = 3
	for i := 1; i <= rotations; i++ {
		st.Vault.CLI(t, "write", "-f", svc.Name+"/keys/rotate")
		now := readKeys(t, st.Vault, svc.Name)
		if seen[now.Current] {
			t.Fatalf("rotation %d: current key %s was current before", i, now.Current)
		}
		seen[now.Current] = true
		if now.States[prev.Current] != "retired" {
			t.Errorf("rotation %d: the previous key %s is %q, want retired", i, prev.Current, now.States[prev.Current])
		}
		fresh := pullToken(t, st.Relay, svc.Name, targets)
		if kid, _ := tokenHeader(t, fresh); kid != now.Current {
			t.Errorf("rotation %d: new token signed by %q, want the current key %q", i, kid, now.Current)
		}
		for _, rt := range targets {
			rt.pushPull(t, fmt.Sprintf("v%d", i))
			for name, token := range map[string]string{"minted before the rotations": first, "fresh": fresh} {
				if code, body := rt.tagsWith(t, token); code != http.StatusOK {
					t.Errorf("rotation %d: %s tags/list with the token %s: %d %s", i, rt.name, name, code, truncate(body, 200))
				}
			}
		}
		prev = now
	}
	t.Logf("MEASURE rotation manual rotations=%d registries=%d restarts=0", rotations, len(targets))
}

// TestRotation_jwksOption: distribution v3 started with its jwks option
// (auth.token.jwks, the file from <service>/jwks) and no rootcertbundle.
// v3 checks a token's x5c against rootcertbundle whenever it carries one,
// so such a registry's service is configured with x5c=false: tokens carry
// only kid.
func TestRotation_jwksOption(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, rotUser)
	svc.WriteConfig(t, "x5c=false")
	site := NewRegistrySite(t, RegistryV3)
	jwks := fetchJWKS(t, svc)
	reg := site.Start(t, st.Relay, svc, func(config string) string {
		config = replaceOnce(t, config, "rootcertbundle: "+svc.BundlePath, "jwks: "+jwks)
		return replaceOnce(t, config, "level: warn", "level: info") // the reason a token is refused
	})
	rt := newRotationTarget(t, "v3-jwks", reg, site)
	rt.pushPull(t, "v0")
	token := pullToken(t, st.Relay, svc.Name, []*rotationTarget{rt})
	if code, body := rt.tagsWith(t, token); code != http.StatusOK {
		var why []string
		for line := range strings.SplitSeq(reg.Proc.Log(), "\n") {
			if strings.Contains(line, "failed to verify token") {
				why = append(why, line)
			}
		}
		t.Fatalf("registry v3 with only the jwks option (auth.token.jwks = %s/jwks) refuses the plugin's token: %d %s\n"+
			"registry log: %s\n"+
			"(v3 checks x5c against rootcertbundle whenever the header has x5c; this service has x5c=false)",
			svc.Name, code, strings.TrimSpace(truncate(body, 200)), strings.Join(why, "\n"))
	}
	// The file holds the current key and the next one: one rotation needs
	// no new file.
	st.Vault.CLI(t, "write", "-f", svc.Name+"/keys/rotate")
	rt.pushPull(t, "v1")
}

// TestRotation_period: with rotation_period set, the key changes by itself
// (Vault runs the plugin's periodic task about once a minute) while clients
// keep working; a token minted before stays valid until it expires.
func TestRotation_period(t *testing.T) {
	st, svc, targets := rotationStack(t)
	svc.WriteConfig(t, "rotation_period=1m")
	start := time.Now()
	k0 := readKeys(t, st.Vault, svc.Name)
	before := pullToken(t, st.Relay, svc.Name, targets)
	// A token of 5 seconds, straight from Vault: it must stop working 60s
	// (the registries' leeway) after it expires.
	short, shortExp := shortToken(t, st.Vault, svc.Name, targets, 5*time.Second)
	for _, rt := range targets {
		if code, body := rt.tagsWith(t, short); code != http.StatusOK {
			t.Fatalf("%s: the 5s token before it expires: %d %s", rt.name, code, truncate(body, 200))
		}
	}

	var k1 keyState
	rounds := 0
	for deadline := start.Add(4 * time.Minute); ; {
		if k1 = readKeys(t, st.Vault, svc.Name); k1.Current != k0.Current {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation_period=1m: the current key is still %s after %s", k0.Current, time.Since(start).Round(time.Second))
		}
		rounds++
		for _, rt := range targets {
			r, got := rt.c.Pull(rt.reg, rt.repo+":v0", rt.img)
			if !r.OK() || string(got) != string(rt.c.Want(rt.img)) {
				t.Errorf("%s: pull while waiting for the rotation: %v", rt.name, r)
			}
		}
		time.Sleep(10 * time.Second)
	}
	took := time.Since(start)
	if k1.States[k0.Current] != "retired" {
		t.Errorf("after the automatic rotation the old key %s is %q, want retired", k0.Current, k1.States[k0.Current])
	}
	fresh := pullToken(t, st.Relay, svc.Name, targets)
	if kid, _ := tokenHeader(t, fresh); kid != k1.Current {
		t.Errorf("token after the automatic rotation signed by %q, want %q", kid, k1.Current)
	}
	for _, rt := range targets {
		rt.pushPull(t, "v1")
		for name, token := range map[string]string{"minted before the rotation": before, "fresh": fresh} {
			if code, body := rt.tagsWith(t, token); code != http.StatusOK {
				t.Errorf("%s: tags/list with the token %s: %d %s", rt.name, name, code, truncate(body, 200))
			}
		}
	}
	t.Logf("MEASURE rotation period=1m automatic_rotation_after=%s pull_rounds_while_waiting=%d", took.Round(time.Second), rounds)

	// The expired token: refused once exp + 60s leeway have passed.
	time.Sleep(time.Until(shortExp.Add(61 * time.Second)))
	for _, rt := range targets {
		if code, body := rt.tagsWith(t, short); code != http.StatusUnauthorized {
			t.Errorf("%s: the 5s token 61s after it expired: %d %s, want 401", rt.name, code, truncate(body, 200))
		}
	}
}

// shortToken mints a token of the given lifetime with the plugin's token
// path, as the relay does, and returns it with its expiry.
func shortToken(t testing.TB, v *Vault, service string, targets []*rotationTarget, ttl time.Duration) (string, time.Time) {
	t.Helper()
	var scopes []string
	for _, rt := range targets {
		scopes = append(scopes, "repository:"+rt.repo+":pull")
	}
	code, answer := v.RootCall(t, http.MethodPost, service+"/token", map[string]any{
		"username": rotUser.name, "password": rotUser.password, "scope": scopes, "ttl": int(ttl.Seconds()),
	})
	token := jsonField(answer, "data", "token")
	if code != http.StatusOK || token == "" {
		t.Fatalf("write %s/token ttl=%s: %d %v", service, ttl, code, answer)
	}
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Exp int64 `json:"exp"`
	}
	if err != nil || json.Unmarshal(raw, &c) != nil || c.Exp == 0 {
		t.Fatalf("claims of the short token: %v %s", err, raw)
	}
	if left := time.Until(time.Unix(c.Exp, 0)); left > ttl+time.Second {
		t.Fatalf("asked for %s, got a token valid for %s", ttl, left)
	}
	return token, time.Unix(c.Exp, 0)
}

// TestRotation_caReplacement: after ca/generate a registry still holding
// the old bundle refuses new tokens; re-fetching ca/pem (old and new CA)
// and restarting it fixes that, and tokens minted before still verify.
func TestRotation_caReplacement(t *testing.T) {
	st, svc, targets := rotationStack(t)
	oldBundle := svc.CAPEM(t)
	old := pullToken(t, st.Relay, svc.Name, targets)

	st.Vault.CLI(t, "write", "-f", svc.Name+"/ca/generate")
	fresh := pullToken(t, st.Relay, svc.Name, targets)
	for _, rt := range targets {
		if code, body := rt.tagsWith(t, fresh); code != http.StatusUnauthorized {
			t.Errorf("%s with the old bundle: a token of the new CA answers %d %s, want 401", rt.name, code, truncate(body, 200))
		}
		if code, body := rt.tagsWith(t, old); code != http.StatusOK {
			t.Errorf("%s with the old bundle: a token of the old CA answers %d %s, want 200", rt.name, code, truncate(body, 200))
		}
		r, _ := rt.c.Pull(rt.reg, rt.repo+":v0", rt.img)
		mustFail(t, rt.name+": pull with the old bundle after ca/generate", r)
	}

	// The operator's fix: fetch ca/pem again, restart each registry.
	bundle := svc.CAPEM(t)
	if n := countCertificates(bundle); n != 2 || !strings.Contains(string(bundle), strings.TrimSpace(string(oldBundle))) {
		t.Fatalf("ca/pem after ca/generate: %d certificates (want 2: new and old), old one included: %v",
			n, strings.Contains(string(bundle), strings.TrimSpace(string(oldBundle))))
	}
	mustWrite(t, svc.BundlePath, bundle)
	for _, rt := range targets {
		rt.reg.Proc.Stop()
		rt.reg = rt.site.Start(t, st.Relay, svc, nil)
		for name, token := range map[string]string{"minted before ca/generate": old, "of the new CA": fresh} {
			if code, body := rt.tagsWith(t, token); code != http.StatusOK {
				t.Errorf("%s restarted with the new bundle: the token %s answers %d %s, want 200", rt.name, name, code, truncate(body, 200))
			}
		}
		pullSame(t, rt.c, rt.reg, rt.repo+":v0", rt.img)
		rt.pushPull(t, "v1")
	}
}

func countCertificates(bundle []byte) int {
	n := 0
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return n
		}
		if b.Type == "CERTIFICATE" {
			n++
		}
	}
}

// TestRotation_stagedCAReplacement: the CA replaced with no refused token.
// ca/generate stage=true only adds the new CA to ca/pem; each registry is
// restarted with the new bundle while tokens are still signed under the old
// CA; then keys/rotate activates the new one.
func TestRotation_stagedCAReplacement(t *testing.T) {
	st, svc, targets := rotationStack(t)
	old := pullToken(t, st.Relay, svc.Name, targets)

	st.Vault.CLI(t, "write", svc.Name+"/ca/generate", "stage=true")
	for _, rt := range targets {
		// Not restarted yet: everything still works.
		pullSame(t, rt.c, rt.reg, rt.repo+":v0", rt.img)
	}
	bundle := svc.CAPEM(t)
	if n := countCertificates(bundle); n != 2 {
		t.Fatalf("ca/pem after ca/generate stage=true: %d certificates, want 2", n)
	}
	mustWrite(t, svc.BundlePath, bundle)
	for _, rt := range targets {
		rt.reg.Proc.Stop()
		rt.reg = rt.site.Start(t, st.Relay, svc, nil)
		pullSame(t, rt.c, rt.reg, rt.repo+":v0", rt.img)
	}

	st.Vault.CLI(t, "write", "-f", svc.Name+"/keys/rotate")
	fresh := pullToken(t, st.Relay, svc.Name, targets)
	for _, rt := range targets {
		for name, token := range map[string]string{"minted before": old, "of the new CA": fresh} {
			if code, body := rt.tagsWith(t, token); code != http.StatusOK {
				t.Errorf("%s: the token %s answers %d %s, want 200", rt.name, name, code, truncate(body, 200))
			}
		}
		rt.pushPull(t, "v1")
	}
	t.Logf("MEASURE rotation staged_ca_replacement registries=%d refused_tokens=0", len(targets))
}
