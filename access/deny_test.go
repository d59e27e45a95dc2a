package access

import (
	"encoding/json"
	"math/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// fuzzAddrs are the client addresses the grant fuzzer and the random test
// try each case from: unknown, IPv4 inside and outside 10/8, IPv6.
var fuzzAddrs = []netip.Addr{
	{},
	netip.MustParseAddr("10.1.2.3"),
	netip.MustParseAddr("192.0.2.7"),
	netip.MustParseAddr("fd00::1"),
}

func TestParse_denyAndNetworksReadBackAsWritten(t *testing.T) {
	for in, want := range map[string]string{
		"!repository:team/release/**:push,delete":             "!repository:team/release/**:push,delete",
		"repository:mirror/**:pull@10.0.0.0/8,192.168.0.0/16": "repository:mirror/**:pull@10.0.0.0/8,192.168.0.0/16",
		"!repository:a:*@fd00::/8":                            "!repository:a:*@fd00::/8",
		"repository:a:pull@127.0.0.1":                         "repository:a:pull@127.0.0.1/32",
		"repository:a:pull@::1":                               "repository:a:pull@::1/128",
		"repository:host:5000/a:pull@10.0.0.0/8":              "repository:host:5000/a:pull@10.0.0.0/8",
		"!repository:${user}/secret:pull":                     "!repository:${user}/secret:pull",
	} {
		a, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if got := a.String(); got != want {
			t.Errorf("Parse(%q).String() = %q, want %q", in, got, want)
		}
	}
	a := mustParseAccess(t, "!repository:host:5000/a:pull@10.0.0.0/8")
	e := a[0]
	if !e.Deny || e.Pattern != "host:5000/a" || len(e.Networks) != 1 || e.Networks[0].String() != "10.0.0.0/8" {
		t.Fatalf("parsed %+v", e)
	}
}

func TestParse_badNetworksNameTheEntryAndTheProblem(t *testing.T) {
	for in, want := range map[string]string{
		"repository:a:pull@":                   `access entry 1 "repository:a:pull@": no network after "@"`,
		"repository:a:pull@10.0.0.0/33":        `network "10.0.0.0/33" is not a CIDR`,
		"repository:a:pull@10.0.0.0/8,":        `network "" is not a CIDR`,
		"repository:a:pull@fe80::1%eth0/64":    `network "fe80::1%eth0/64" is not a CIDR`,
		"repository:a:pull@example.com":        `network "example.com" is not a CIDR`,
		"repository:a@b:pull":                  `network "b:pull" is not a CIDR`,
		"repository:a@b:pull@10.0.0.0/8":       `pattern "a@b": "@" is not allowed`,
		"!repository:a:pull;!!repository:b:*":  `access entry 2 "!!repository:b:*": unknown type "!repository"`,
		"repository:a:pull;!:x:pull":           `access entry 2 "!:x:pull": unknown type ""`,
		"repository:a:pull@10.0.0.0/8 ;x:y:z:": `access entry 2`,
	} {
		_, err := Parse(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	many := "repository:a:pull@" + strings.Repeat("10.0.0.0/8,", MaxNetworks) + "10.0.0.0/8"
	if _, err := Parse(many); err == nil || !strings.Contains(err.Error(), "more than 64 networks") {
		t.Errorf("%d networks: %v", MaxNetworks+1, err)
	}
}

// grantFrom is the JSON of the claim GrantScopes gives user at from.
func grantFrom(t *testing.T, user, from string, scopes []string, access ...string) string {
	t.Helper()
	var addr netip.Addr
	if from != "" {
		addr = netip.MustParseAddr(from)
	}
	var lists []List
	for _, s := range access {
		lists = append(lists, mustParseAccess(t, s))
	}
	got, err := json.Marshal(GrantScopes(user, addr, mustParseScopes(t, scopes...), lists...))
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

func TestGrant_denyBeatsAllowFromEverySourceInAnyOrder(t *testing.T) {
	push := []string{"repository:team/release/app:pull,push"}
	const onlyPull = `[{"type":"repository","name":"team/release/app","actions":["pull"]}]`
	for name, lists := range map[string][]string{
		"deny after allow, one list":             {"repository:team/**:*;!repository:team/release/**:push,delete"},
		"deny before allow, one list":            {"!repository:team/release/**:push,delete;repository:team/**:*"},
		"deny in the anonymous list":             {"repository:team/**:*", "!repository:team/release/**:push"},
		"deny in the user's, allow in anonymous": {"!repository:team/release/**:push", "repository:team/**:pull,push"},
		"deny of type *":                         {"repository:team/**:*", "!*:team/release/*:push"},
	} {
		if got := grantFrom(t, "alice", "", push, lists...); got != onlyPull {
			t.Errorf("%s: got %s, want %s", name, got, onlyPull)
		}
	}
	// The push outside the denied tree stays.
	if got := grantFrom(t, "alice", "", []string{"repository:team/app:push"}, "repository:team/**:*;!repository:team/release/**:push"); got != `[{"type":"repository","name":"team/app","actions":["push"]}]` {
		t.Errorf("team/app push: %s", got)
	}
}

func TestGrant_denyNeverGrants(t *testing.T) {
	if got := grantFrom(t, "alice", "10.1.1.1", []string{"repository:a:pull,push"}, "!repository:a:push", "!repository:*:pull@10.0.0.0/8"); got != `[]` {
		t.Errorf("denies alone granted %s", got)
	}
}

func TestGrant_denyStarRemovesEveryAction(t *testing.T) {
	got := grantFrom(t, "u", "", []string{"repository:a:pull,push,delete,*"}, "repository:*:*", "!repository:a:*")
	if got != `[]` {
		t.Errorf("got %s", got)
	}
}

func TestGrant_requestedStarUnderADenyGetsTheRest(t *testing.T) {
	// "*" would stand for push, which is denied: the request gets the
	// actions that remain, as for an entry that grants only some.
	got := grantFrom(t, "u", "", []string{"repository:a:*"}, "repository:a:*", "!repository:a:push")
	if want := `[{"type":"repository","name":"a","actions":["pull","delete"]}]`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	got = grantFrom(t, "u", "", []string{"registry:catalog:*"}, "registry:catalog:*", "!registry:catalog:pull")
	if want := `[{"type":"registry","name":"catalog","actions":["push","delete"]}]`; got != want {
		t.Errorf("catalog: got %s, want %s", got, want)
	}
}

func TestGrant_networkConditions(t *testing.T) {
	access := "repository:mirror/**:pull@10.0.0.0/8,192.168.0.0/16,fd00::/8"
	pull := []string{"repository:mirror/debian:pull"}
	const granted = `[{"type":"repository","name":"mirror/debian","actions":["pull"]}]`
	for from, want := range map[string]string{
		"10.20.30.40":       granted,
		"192.168.1.1":       granted,
		"::ffff:10.0.0.1":   granted, // an IPv4-mapped address is the IPv4 one
		"fd00::7":           granted,
		"11.0.0.1":          `[]`,
		"fe80::1":           `[]`,
		"":                  `[]`, // unknown: a conditioned allow does not apply
		"::ffff:11.0.0.1":   `[]`,
		"2001:db8::ffff:10": `[]`,
	} {
		if got := grantFrom(t, "", from, pull, access); got != want {
			t.Errorf("from %q: got %s, want %s", from, got, want)
		}
	}
}

func TestGrant_conditionedDenyDeniesFromThereAndFromNowhereKnown(t *testing.T) {
	access := []string{"repository:app:pull,push", "!repository:app:push@192.0.2.0/24"}
	push := []string{"repository:app:push"}
	const granted = `[{"type":"repository","name":"app","actions":["push"]}]`
	for from, want := range map[string]string{
		"192.0.2.9": `[]`,
		"":          `[]`, // unknown: a conditioned deny applies
		"10.0.0.1":  granted,
		"::1":       granted,
	} {
		if got := grantFrom(t, "u", from, push, access...); got != want {
			t.Errorf("from %q: got %s, want %s", from, got, want)
		}
	}
}

func TestGrant_denyWithUserVariable(t *testing.T) {
	access := "repository:home/**:*;!repository:home/${user}/frozen:push"
	if got := grantFrom(t, "bob", "", []string{"repository:home/bob/frozen:push"}, access); got != `[]` {
		t.Errorf("bob's frozen push: %s", got)
	}
	if got := grantFrom(t, "bob", "", []string{"repository:home/alice/frozen:push"}, access); got == `[]` {
		t.Errorf("alice's frozen push was denied to bob: ${user} is the requester")
	}
	// Anonymous: ${user} matches nothing, so the deny removes nothing.
	if got := grantFrom(t, "", "", []string{"repository:home/x/frozen:push"}, access); got == `[]` {
		t.Errorf("anonymous: %s", got)
	}
}

// TestGrant_agreesWithReferenceOnRandomAccess compares GrantScopes with
// referenceGrant on random access strings with denies and networks.
func TestGrant_agreesWithReferenceOnRandomAccess(t *testing.T) {
	rnd := rand.New(rand.NewSource(26))
	patterns := []string{"a", "a/*", "a/**", "*", "**", "a/b", "${user}/*", "?/b"}
	actions := []string{"pull", "push", "delete", "*", "pull,push", "push,delete"}
	nets := []string{"", "", "@10.0.0.0/8", "@192.0.2.0/24,fd00::/8", "@fd00::/8"}
	names := []string{"a", "a/b", "a/b/c", "u/x", "b", "x/b"}
	for i := range 5000 {
		var entries []string
		for range 1 + rnd.Intn(5) {
			e := []string{"repository", "*"}[rnd.Intn(2)] + ":" + patterns[rnd.Intn(len(patterns))] + ":" +
				actions[rnd.Intn(len(actions))] + nets[rnd.Intn(len(nets))]
			if rnd.Intn(3) == 0 {
				e = "!" + e
			}
			entries = append(entries, e)
		}
		split := rnd.Intn(len(entries) + 1)
		lists := []List{mustParseAccess(t, strings.Join(entries[:split], ";")), mustParseAccess(t, strings.Join(entries[split:], ";"))}
		var scopes []string
		for range 1 + rnd.Intn(3) {
			scopes = append(scopes, "repository:"+names[rnd.Intn(len(names))]+":"+[]string{"pull", "push", "*", "pull,push,delete"}[rnd.Intn(4)])
		}
		requested := mustParseScopes(t, scopes...)
		user := []string{"", "u"}[i%2]
		for _, from := range fuzzAddrs {
			got := GrantScopes(user, from, requested, lists...)
			if want := referenceGrant(user, from, requested, lists...); !reflect.DeepEqual(got, want) {
				t.Fatalf("access %q, user %q, from %v, scopes %q:\n got %v\nwant %v", entries, user, from, scopes, got, want)
			}
		}
	}
}

func TestExplain_namesTheDecidingEntries(t *testing.T) {
	sources := []Source{
		{Name: "user alice", List: mustParseAccess(t, "repository:team/**:*;!repository:team/release/**:push,delete")},
		{Name: "group ci", List: mustParseAccess(t, "repository:team/release/**:push@10.0.0.0/8")},
		{Name: "anonymous_access", List: mustParseAccess(t, "repository:team/**:pull")},
	}
	vs := Explain("alice", netip.MustParseAddr("192.0.2.1"), "repository", "team/release/app", sources)
	got := map[string]Verdict{}
	for _, v := range vs {
		got[v.Action] = v
	}
	pull, push, star := got["pull"], got["push"], got["*"]
	if !pull.Granted || !reflect.DeepEqual(pull.AllowedBy, []string{"user alice: repository:team/**:*", "anonymous_access: repository:team/**:pull"}) || len(pull.DeniedBy) != 0 {
		t.Errorf("pull: %+v", pull)
	}
	if push.Granted || !reflect.DeepEqual(push.DeniedBy, []string{"user alice: !repository:team/release/**:push,delete"}) ||
		!reflect.DeepEqual(push.NotFromHere, []string{"group ci: repository:team/release/**:push@10.0.0.0/8"}) {
		t.Errorf("push: %+v", push)
	}
	if star.Granted || len(star.DeniedBy) != 1 {
		t.Errorf("*: %+v", star)
	}
}

func TestExplain_agreesWithGrantScopes(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	patterns := []string{"a", "a/*", "**", "${user}"}
	nets := []string{"", "@10.0.0.0/8", "@fd00::/8"}
	for range 2000 {
		var entries []string
		for range 1 + rnd.Intn(4) {
			e := "repository:" + patterns[rnd.Intn(len(patterns))] + ":" + []string{"pull", "push", "*", "delete,pull"}[rnd.Intn(4)] + nets[rnd.Intn(len(nets))]
			if rnd.Intn(3) == 0 {
				e = "!" + e
			}
			entries = append(entries, e)
		}
		src := []Source{{Name: "s", List: mustParseAccess(t, strings.Join(entries, ";"))}}
		for _, from := range fuzzAddrs {
			for _, name := range []string{"a", "a/b", "u"} {
				for _, v := range Explain("u", from, "repository", name, src) {
					g := GrantScopes("u", from, []Scope{{Type: "repository", Name: name, Actions: []string{v.Action}}}, src[0].List)
					granted := len(g) == 1 && reflect.DeepEqual(g[0].Actions, []string{v.Action})
					if granted != v.Granted {
						t.Fatalf("%q from %v on %s, %s: Explain says %v, GrantScopes %v", entries, from, name, v.Action, v.Granted, g)
					}
					if v.Granted && len(v.AllowedBy) == 0 {
						t.Fatalf("%q: %s granted with no allowing entry", entries, v.Action)
					}
				}
			}
		}
	}
}

// BenchmarkGrant_denyAndNetworks compares a warm grant over an access
// string with 20 deny and 20 conditioned entries to the same string
// without them (make bench reports the ratio).
func BenchmarkGrant_denyAndNetworks(b *testing.B) {
	base := benchAccess(40)
	var extra []string
	for i := range 20 {
		extra = append(extra, "!repository:team"+string(rune('a'+i))+"/release/**:push,delete")
		extra = append(extra, "repository:mirror"+string(rune('a'+i))+"/**:pull@10.0.0.0/8,fd00::/8")
	}
	scopes, err := ParseScopes([]string{"repository:alice/app:pull,push"})
	if err != nil {
		b.Fatal(err)
	}
	from := netip.MustParseAddr("10.1.2.3")
	for _, bc := range []struct {
		name   string
		access string
	}{{"plain", base}, {"with-20-deny-20-conditioned", base + ";" + strings.Join(extra, ";")}} {
		l, err := Parse(bc.access)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				GrantScopes("alice", from, scopes, l)
			}
		})
	}
}
