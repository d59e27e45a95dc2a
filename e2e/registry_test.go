//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// user is a registry user as an operator writes it into a mount.
type user struct {
	name, password, access string
}

var (
	alice = user{"alice", "alice-pw-3f9c1a", "repository:alice/**:*;repository:shared/*:pull;registry:catalog:*"}
	// bob may pull shared images and push only his own; no catalog.
	bob   = user{"bob", "bob-pw-77d2e0", "repository:shared/*:pull;repository:${user}/*:*"}
	admin = user{"admin", "admin-pw-c04b19", "repository:**:*;registry:catalog:*"}
	carol = user{"carol", "carol-pw-5a6e8d", "repository:carol/**:*;registry:catalog:*"}
)

func (s *Service) AddUsers(t testing.TB, users ...user) {
	t.Helper()
	for _, u := range users {
		s.WriteUser(t, u.name, u.password, u.access)
	}
}

// seed pushes a fresh image to reg as admin, with the client kind that will
// pull it (oras pulls files, the others images), and returns it.
func seed(t testing.TB, reg *Registry, kind ClientKind, repoTag string) *TestImage {
	t.Helper()
	img := NewTestImage(t)
	c := NewClient(t, kind)
	mustOK(t, c.Login(reg, admin.name, admin.password))
	mustOK(t, c.Push(reg, repoTag, img))
	return img
}

func mustOK(t testing.TB, r Result) {
	t.Helper()
	if !r.OK() {
		t.Fatalf("want success, got %v", r)
	}
}

// mustFail checks that a client was refused, and refused by the registry
// or the token server: it ended on its own (a client killed after
// commandTimeout hung, which is no refusal) with an error, and its output
// names the refusal (a 401 or 403, unauthorized, denied,
// insufficient_scope). A failure for another reason (no such host, a
// crash, a hang) fails the check.
func mustFail(t testing.TB, what string, r Result) {
	t.Helper()
	mustBeRefused(t, what, r, refusalWords)
}

// refusalWords are how docker, containerd, crane, oras, skopeo and regctl
// print a registry's or token server's refusal.
var refusalWords = regexp.MustCompile(`(?i)\b40[13]\b|unauthori[sz]ed|denied|insufficient_scope|forbidden|authentication required|invalid username/password|invalid_grant`)

// mustBeRefused is mustFail with the words of the expected refusal.
func mustBeRefused(t testing.TB, what string, r Result, reason *regexp.Regexp) {
	t.Helper()
	switch {
	case r.ExitCode == -1:
		t.Errorf("%s: the client was killed after %s: a hang, not a refusal: %v", what, commandTimeout, r)
	case r.OK():
		t.Errorf("%s: want a refusal, got %v", what, r)
	case !reason.MatchString(r.Stdout + r.Stderr):
		t.Errorf("%s: the client failed, but its output shows no refusal (%s): %v", what, reason, r)
	}
}

// pullSame pulls repoTag and checks the bytes are the ones pushed.
func pullSame(t testing.TB, c *Client, reg *Registry, repoTag string, img *TestImage) {
	t.Helper()
	r, got := c.Pull(reg, repoTag, img)
	mustOK(t, r)
	if !bytes.Equal(got, c.Want(img)) {
		t.Errorf("%s pull %s: got %d bytes that differ from the %d pushed", c.Kind, repoTag, len(got), len(c.Want(img)))
	}
}

// outcomesOf runs f and returns the relay's token requests during f, by
// outcome.
func outcomesOf(t testing.TB, relay *Relay, f func()) map[string]float64 {
	t.Helper()
	before := relay.Outcomes(t)
	f()
	delta := map[string]float64{}
	for outcome, n := range relay.Outcomes(t) {
		if d := n - before[outcome]; d != 0 {
			delta[outcome] = d
		}
	}
	return delta
}

// only tells whether every request had the given outcome, and there was one.
func only(delta map[string]float64, outcome string) bool {
	for o := range delta {
		if o != outcome {
			return false
		}
	}
	return delta[outcome] > 0
}

// mintedOnly is only(delta, Minted) for a client that is refused by the
// registry mid-way: crane then cancels its other calls, and a token request
// it abandons counts as canceled at the relay.
func mintedOnly(delta map[string]float64) bool {
	delta = maps.Clone(delta)
	delete(delta, Canceled)
	return only(delta, Minted)
}

// TestClients: every client, against registry 2.8 and v3, logs in, pushes,
// pulls back the same bytes and lists; and is refused what it isn't granted.
func TestClients(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, alice, bob, admin)

	for _, rk := range registryKinds {
		reg := StartRegistry(t, rk, st.Relay, svc)
		for _, ck := range clientKinds {
			shared := seed(t, reg, ck, "shared/"+string(ck)+":v1")
			private := seed(t, reg, ck, "alice/private-"+string(ck)+":v1")
			t.Run(string(rk)+"/"+string(ck), func(t *testing.T) {
				testClient(t, st.Relay, reg, ck, shared, private)
			})
		}
	}
	assertLogsFree(t, []string{alice.password, bob.password, admin.password, "not-" + alice.password},
		st.Relay.Proc, st.Vault.Proc)
}

// assertLogsFree fails the test if any process log holds one of secrets.
func assertLogsFree(t testing.TB, secrets []string, procs ...*Process) {
	t.Helper()
	for _, p := range procs {
		log := p.Log()
		for _, s := range secrets {
			if strings.Contains(log, s) {
				t.Errorf("the %s log holds a secret (%.4s…)", p.Name, s)
			}
		}
	}
}

func testClient(t *testing.T, relay *Relay, reg *Registry, ck ClientKind, shared, private *TestImage) {
	sharedRef := "shared/" + string(ck) + ":v1"

	t.Run("owner pushes and pulls back the same bytes", func(t *testing.T) {
		c := NewClient(t, ck)
		img := NewTestImage(t)
		repo := "alice/" + string(ck)
		delta := outcomesOf(t, relay, func() {
			mustOK(t, c.Login(reg, alice.name, alice.password))
			mustOK(t, c.Push(reg, repo+":v1", img))
			pullSame(t, c, reg, repo+":v1", img)
		})
		if !only(delta, Minted) {
			t.Errorf("relay answers: %v, want only minted", delta)
		}
		r, tags := c.Tags(reg, repo)
		mustOK(t, r)
		if !slices.Contains(tags, "v1") {
			t.Errorf("tags of %s: %v, want v1", repo, tags)
		}
	})

	// skopeo has no command to list a catalog.
	if ck != Skopeo {
		t.Run("catalog lists repositories for a registry:catalog:* user", func(t *testing.T) {
			c := NewClient(t, ck)
			mustOK(t, c.Login(reg, alice.name, alice.password))
			r, repos := c.Catalog(reg)
			mustOK(t, r)
			if !slices.Contains(repos, "shared/"+string(ck)) {
				t.Errorf("catalog: %v, want shared/%s in it", repos, ck)
			}
		})

		t.Run("catalog refused without registry:catalog", func(t *testing.T) {
			c := NewClient(t, ck)
			mustOK(t, c.Login(reg, bob.name, bob.password))
			r, _ := c.Catalog(reg)
			mustFail(t, "catalog as bob", r)
		})
	}

	t.Run("pull-only user pulls but cannot push", func(t *testing.T) {
		c := NewClient(t, ck)
		mustOK(t, c.Login(reg, bob.name, bob.password))
		pullSame(t, c, reg, sharedRef, shared)
		ref := "shared/" + string(ck) + "-by-bob:v1"
		delta := outcomesOf(t, relay, func() {
			mustFail(t, "push by a pull-only user", c.Push(reg, ref, NewTestImage(t)))
		})
		// The relay grants what it can (pull) and the registry refuses the push.
		if !mintedOnly(delta) {
			t.Errorf("relay answers: %v, want only minted", delta)
		}
		if r, tags := NewAdmin(t, reg).Tags(reg, strings.TrimSuffix(ref, ":v1")); r.OK() && len(tags) > 0 {
			t.Errorf("the refused push left tags %v", tags)
		}
	})

	t.Run("repository not granted cannot be pulled", func(t *testing.T) {
		c := NewClient(t, ck)
		mustOK(t, c.Login(reg, bob.name, bob.password))
		delta := outcomesOf(t, relay, func() {
			r, _ := c.Pull(reg, "alice/private-"+string(ck)+":v1", private)
			mustFail(t, "bob pulls alice's image", r)
		})
		if !mintedOnly(delta) {
			t.Errorf("relay answers: %v, want only minted (a token without that repository)", delta)
		}
	})

	for _, bad := range []struct{ name, user, password string }{
		{"wrong password", alice.name, "not-" + alice.password},
		{"unknown user", "", alice.password}, // a name of its own per run, below
	} {
		t.Run(bad.name+" is refused", func(t *testing.T) {
			user := bad.user
			if user == "" {
				// Unknown names lock out like known ones: each client and
				// registry asks with its own, so that no run here adds up
				// failures another run then meets as a 429.
				user = fmt.Sprintf("mallory%08x", crc32.ChecksumIEEE([]byte(t.Name())))
			}
			c := NewClient(t, ck)
			delta := outcomesOf(t, relay, func() {
				r := c.Login(reg, user, bad.password)
				if c.LoginChecksCredentials() {
					mustFail(t, "login", r)
				} else {
					mustOK(t, r) // crane stores credentials unchecked
				}
				r, _ = c.Pull(reg, sharedRef, shared)
				mustFail(t, "pull", r)
			})
			if !only(delta, Unauthorized) {
				t.Errorf("relay answers: %v, want only unauthorized", delta)
			}
		})
	}
}

// NewAdmin returns a crane client logged in as admin, for checking what a
// test left in a registry.
func NewAdmin(t testing.TB, reg *Registry) *Client {
	t.Helper()
	c := NewClient(t, Crane)
	mustOK(t, c.Login(reg, admin.name, admin.password))
	return c
}

// TestRelay_tokenGrantsOnlyWhatAccessAllows checks the token itself for a
// push request by a pull-only user.
func TestRelay_tokenGrantsOnlyWhatAccessAllows(t *testing.T) {
	st := NewStack(t, "registry")
	st.Services["registry"].AddUsers(t, bob)
	code, _, body := st.Relay.Token(t, "registry", bob.name, bob.password,
		"repository:shared/app:pull,push", "repository:bob/app:pull,push", "repository:alice/app:pull")
	if code != http.StatusOK {
		t.Fatalf("GET /auth: %d %s", code, body)
	}
	claims := tokenClaims(t, body)
	want := map[string][]string{"shared/app": {"pull"}, "bob/app": {"pull", "push"}}
	got := map[string][]string{}
	for _, a := range claims.Access {
		if a.Type != "repository" {
			t.Errorf("access entry of type %q", a.Type)
		}
		slices.Sort(a.Actions)
		got[a.Name] = a.Actions
	}
	if len(got) != len(want) || !slices.Equal(got["shared/app"], want["shared/app"]) || !slices.Equal(got["bob/app"], want["bob/app"]) {
		t.Errorf("access = %v, want %v", got, want)
	}
	if claims.Aud != "registry" || claims.Sub != bob.name || claims.Iss != tokenIssuer {
		t.Errorf("aud %q sub %q iss %q, want registry, bob, %s", claims.Aud, claims.Sub, claims.Iss, tokenIssuer)
	}
	assertLogsFree(t, []string{bob.password, tokenOf(t, body)}, st.Relay.Proc, st.Vault.Proc)
}

type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type claimSet struct {
	Iss    string        `json:"iss"`
	Sub    string        `json:"sub"`
	Aud    string        `json:"aud"` // a string: registry 2.8 rejects an array
	Access []accessEntry `json:"access"`
}

// tokenOf returns the JWT from the relay's JSON answer.
func tokenOf(t testing.TB, body []byte) string {
	t.Helper()
	var out struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
		t.Fatalf("relay answer without a token: %v %q", err, truncate(body, 200))
	}
	if out.AccessToken != out.Token {
		t.Errorf("access_token differs from token")
	}
	return out.Token
}

// tokenClaims decodes (without verifying: the registries do that) the claims
// of the relay's token.
func tokenClaims(t testing.TB, body []byte) claimSet {
	t.Helper()
	parts := strings.Split(tokenOf(t, body), ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token claims: %v", err)
	}
	var c claimSet
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("token claims %s: %v", raw, err)
	}
	return c
}

// TestAnonymousAccess: with anonymous_access set, anyone pulls public
// repositories, and nothing else; a service without it refuses anonymous
// requests.
func TestAnonymousAccess(t *testing.T) {
	st := NewStack(t, "registry", "second")
	open, closed := st.Services["registry"], st.Services["second"]
	open.AddUsers(t, admin)
	closed.AddUsers(t, admin)
	open.WriteConfig(t, "anonymous_access=repository:public/*:pull")

	for _, rk := range registryKinds {
		openReg := StartRegistry(t, rk, st.Relay, open)
		closedReg := StartRegistry(t, rk, st.Relay, closed)
		for _, ck := range clientKinds {
			public := seed(t, openReg, ck, "public/"+string(ck)+":v1")
			private := seed(t, openReg, ck, "private/"+string(ck)+":v1")
			closedPublic := seed(t, closedReg, ck, "public/"+string(ck)+":v1")
			t.Run(string(rk)+"/"+string(ck), func(t *testing.T) {
				c := NewClient(t, ck) // never logs in
				delta := outcomesOf(t, st.Relay, func() {
					pullSame(t, c, openReg, "public/"+string(ck)+":v1", public)
				})
				if !only(delta, Minted) {
					t.Errorf("anonymous pull of a public repository: relay answers %v, want only minted", delta)
				}
				r, _ := c.Pull(openReg, "private/"+string(ck)+":v1", private)
				mustFail(t, "anonymous pull of a private repository", r)
				mustFail(t, "anonymous push to a public repository", c.Push(openReg, "public/"+string(ck)+"-anon:v1", NewTestImage(t)))
				delta = outcomesOf(t, st.Relay, func() {
					r, _ := c.Pull(closedReg, "public/"+string(ck)+":v1", closedPublic)
					mustFail(t, "anonymous pull where anonymous_access is empty", r)
				})
				if !only(delta, Unauthorized) {
					t.Errorf("anonymous pull without anonymous_access: relay answers %v, want only unauthorized", delta)
				}
			})
		}
	}
}

// TestRelay_sealedVault: while Vault is sealed the relay answers 503 and is
// not healthy; once unsealed it serves again, without a restart.
func TestRelay_sealedVault(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, alice)
	reg := StartRegistry(t, Registry28, st.Relay, svc)
	c := NewClient(t, Crane)
	mustOK(t, c.Login(reg, alice.name, alice.password))
	img := NewTestImage(t)
	mustOK(t, c.Push(reg, "alice/app:v1", img))

	scope := "repository:alice/app:pull"
	if code, _, body := st.Relay.Token(t, "registry", alice.name, alice.password, scope); code != http.StatusOK {
		t.Fatalf("before sealing: GET /auth %d %s", code, body)
	}

	st.Vault.Seal(t)
	var code int
	var hdr http.Header
	var body []byte
	delta := outcomesOf(t, st.Relay, func() {
		code, hdr, body = st.Relay.Token(t, "registry", alice.name, alice.password, scope)
	})
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("sealed: GET /auth %d (Retry-After %q) %s, want 503 with Retry-After", code, hdr.Get("Retry-After"), body)
	}
	// Unavailable, and because of Vault (a cancelled request is no Vault error).
	vaultErrors := delta[VaultErrors]
	delete(delta, VaultErrors)
	if !only(delta, Unavailable) || vaultErrors < 1 {
		t.Errorf("sealed: relay answers %v and %v Vault errors, want only unavailable, with a Vault error", delta, vaultErrors)
	}
	if bytes.Contains(body, []byte(alice.password)) {
		t.Errorf("the 503 body holds the password")
	}
	// The relay may remember Vault's health for a moment.
	waitFor(t, "relay unhealthy while sealed", st.Relay.Proc, 30*time.Second, func() error {
		return wantStatus(st.Relay.URL+"/healthz", http.StatusServiceUnavailable)
	})
	r, _ := c.Pull(reg, "alice/app:v1", img)
	// The client shows the relay's 503 (its status, or the code of its
	// body, as crane prints it), not a refusal of alice.
	mustBeRefused(t, "pull while Vault is sealed", r, regexp.MustCompile(`\b503\b|Service Unavailable|\bUNAVAILABLE: token service temporarily unavailable`))

	st.Vault.Unseal(t)
	waitFor(t, "relay healthy after unseal", st.Relay.Proc, 60*time.Second, func() error {
		return wantStatus(st.Relay.URL+"/healthz", http.StatusOK)
	})
	if code, _, body := st.Relay.Token(t, "registry", alice.name, alice.password, scope); code != http.StatusOK {
		t.Errorf("unsealed: GET /auth %d %s, want 200", code, body)
	}
	pullSame(t, c, reg, "alice/app:v1", img)
}

// TestServices_stayApart: two mounts are two registry services with their
// own users and keys; nothing of one works on the other.
func TestServices_stayApart(t *testing.T) {
	st := NewStack(t, "registry", "second")
	a, b := st.Services["registry"], st.Services["second"]
	a.AddUsers(t, alice)
	b.AddUsers(t, carol)
	dave := user{"dave", "dave-pw-in-a", "repository:dave/*:*"}
	a.AddUsers(t, dave)
	b.AddUsers(t, user{dave.name, "dave-pw-in-b", dave.access})

	if bytes.Equal(a.CAPEM(t), b.CAPEM(t)) {
		t.Error("both services have the same CA bundle")
	}

	for _, c := range []struct {
		service, user, password string
		want                    int
	}{
		{"registry", alice.name, alice.password, http.StatusOK},
		{"second", alice.name, alice.password, http.StatusUnauthorized},
		{"second", carol.name, carol.password, http.StatusOK},
		{"registry", carol.name, carol.password, http.StatusUnauthorized},
		{"registry", dave.name, "dave-pw-in-a", http.StatusOK},
		{"second", dave.name, "dave-pw-in-a", http.StatusUnauthorized},
		{"second", dave.name, "dave-pw-in-b", http.StatusOK},
	} {
		if code, _, body := st.Relay.Token(t, c.service, c.user, c.password); code != c.want {
			t.Errorf("%s on service %s: %d %s, want %d", c.user, c.service, code, truncate(body, 200), c.want)
		}
	}

	tokens := map[string]string{}
	for svc, u := range map[string]user{"registry": alice, "second": carol} {
		code, _, body := st.Relay.Token(t, svc, u.name, u.password)
		if code != http.StatusOK {
			t.Fatalf("login token for %s on %s: %d %s", u.name, svc, code, body)
		}
		if aud := tokenClaims(t, body).Aud; aud != svc {
			t.Errorf("token of %s: aud %q", svc, aud)
		}
		tokens[svc] = tokenOf(t, body)
	}

	for _, rk := range registryKinds {
		regs := map[string]*Registry{}
		for _, svc := range []*Service{a, b} {
			reg := StartRegistry(t, rk, st.Relay, svc)
			regs[svc.Name] = reg
			for tokenSvc, token := range tokens {
				want := http.StatusUnauthorized
				if tokenSvc == svc.Name {
					want = http.StatusOK
				}
				req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				if code, _, body := doHTTP(t, req); code != want {
					t.Errorf("%s of %s with a token of %s: %d %s, want %d", rk, svc.Name, tokenSvc, code, truncate(body, 200), want)
				}
			}
		}
		c := NewClient(t, Crane)
		mustOK(t, c.Login(regs["second"], carol.name, carol.password))
		mustOK(t, c.Push(regs["second"], "carol/app:v1", NewTestImage(t)))
		mustOK(t, c.Login(regs["registry"], carol.name, carol.password))
		mustFail(t, "carol pushes to the other service's registry", c.Push(regs["registry"], "carol/app:v1", NewTestImage(t)))
	}
}
