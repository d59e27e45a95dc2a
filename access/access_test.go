package access

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func mustParseAccess(t testing.TB, s string) List {
	t.Helper()
	a, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return a
}

func mustParseScopes(t testing.TB, items ...string) []Scope {
	t.Helper()
	scopes, err := ParseScopes(items)
	if err != nil {
		t.Fatalf("ParseScopes(%q): %v", items, err)
	}
	return scopes
}

// grantCase is one token request: the user, the requested scopes, and the
// claim expected in JSON.
type grantCase struct {
	name   string
	user   string
	scopes []string
	want   string
}

// checkGrants runs the cases against the given access strings, passed to
// GrantScopes in that order.
func checkGrants(t *testing.T, access []string, cases []grantCase) {
	t.Helper()
	var lists []List
	for _, s := range access {
		lists = append(lists, mustParseAccess(t, s))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(GrantScopes(c.user, netip.Addr{}, mustParseScopes(t, c.scopes...), lists...))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("access %q, user %q, scopes %q:\n got %s\nwant %s", access, c.user, c.scopes, got, c.want)
			}
		})
	}
}

func TestParseAccess_acceptsAndPrintsCanonicalForm(t *testing.T) {
	cases := []struct{ in, want string }{
		{"repository:linux/app:*;repository:linux/db:pull", "repository:linux/app:*;repository:linux/db:pull"},
		{"repository:golja/godoauth:push,pull", "repository:golja/godoauth:push,pull"},
		{"repository:golja/godoauth:pull,push", "repository:golja/godoauth:pull,push"},
		{" repository:a:pull ; ;repository:b:push ;", "repository:a:pull;repository:b:push"},
		{"repository:a:pull;\n\trepository:b:*\n", "repository:a:pull;repository:b:*"},
		{"repository:a:pull,push,pull,*,push", "repository:a:pull,push,*"},
		{"repository:a:delete", "repository:a:delete"},
		{"repository:localhost:5000/foo/bar:pull", "repository:localhost:5000/foo/bar:pull"},
		{"repository:${user}/**:*;registry:catalog:*", "repository:${user}/**:*;registry:catalog:*"},
		{"*:**:pull", "*:**:pull"},
		{"repository:team-?/*/app-${user}:push", "repository:team-?/*/app-${user}:push"},
		{"", ""},
		{" ;; ", ""},
	}
	for _, c := range cases {
		a := mustParseAccess(t, c.in)
		if got := a.String(); got != c.want {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, got, c.want)
		}
		if again := mustParseAccess(t, a.String()); !reflect.DeepEqual(again, a) {
			t.Errorf("Parse(%q) does not read back its String()", c.in)
		}
	}
}

func TestParseAccess_splitsFirstAndLastField(t *testing.T) {
	a := mustParseAccess(t, "repository:localhost:5000/foo/*:pull,push")
	want := Entry{Type: "repository", Pattern: "localhost:5000/foo/*", Actions: []string{"pull", "push"}}
	if got := a[0]; got.Type != want.Type || got.Pattern != want.Pattern || !slices.Equal(got.Actions, want.Actions) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseAccess_errorNamesEntryAndProblem(t *testing.T) {
	cases := []struct{ in, want string }{
		{"repository:foo:pul", `access entry 1 "repository:foo:pul": unknown action "pul" (want pull, push, delete or *)`},
		{"repository:a:pull;;repository:foo:pul", `access entry 2 "repository:foo:pul": unknown action "pul"`},
		{"repo:foo:pull", `access entry 1 "repo:foo:pull": unknown type "repo" (want repository, registry or *)`},
		{"Repository:foo:pull", `unknown type "Repository"`},
		{"repository:foo", `access entry 1 "repository:foo": want [!]type:pattern:actions[@networks]`},
		{"foo", `access entry 1 "foo": want [!]type:pattern:actions[@networks]`},
		{"repository::pull", `access entry 1 "repository::pull": empty pattern`},
		{"repository:foo:", `empty action in ""`},
		{"repository:foo:pull,,push", `empty action in "pull,,push"`},
		{"repository:foo:pull, push", `unknown action " push"`},
		{"repository:fo o:pull", `pattern "fo o": character ' ' not allowed`},
		{"repository:foo\x00:pull", `pattern "foo\x00": character '\x00' not allowed`},
		{"repository:f\u00f6o:pull", `pattern "föo": character 'ö' not allowed`},
		{"repository:$HOME:pull", `pattern "$HOME": "$" is allowed only in ${user}`},
		{"repository:${USER}/*:pull", `"$" is allowed only in ${user}`},
		{"repository:${user:pull", `"$" is allowed only in ${user}`},
	}
	for _, c := range cases {
		_, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q) accepted it", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) error\n %s\ndoes not contain\n %s", c.in, err, c.want)
		}
	}
}

func TestParseAccess_errorTruncatesLongEntry(t *testing.T) {
	entry := "repository:" + strings.Repeat("x", 5000) + ":pul"
	_, err := Parse(entry)
	if err == nil {
		t.Fatal("accepted an unknown action")
	}
	if len(err.Error()) > 200 || !strings.Contains(err.Error(), `…`) || !strings.Contains(err.Error(), `unknown action "pul"`) {
		t.Errorf("error not truncated or not naming the problem: %s", err)
	}
}

func TestParseAccess_limits(t *testing.T) {
	entries := strings.Repeat("repository:a:pull;", MaxAccessEntries)
	if a, err := Parse(entries); err != nil || len(a) != MaxAccessEntries {
		t.Fatalf("%d entries: %d parsed, error %v", MaxAccessEntries, len(a), err)
	}
	if _, err := Parse(entries + "repository:b:pull"); err == nil || !strings.Contains(err.Error(), "more than 10000 entries") {
		t.Errorf("%d entries: error %v", MaxAccessEntries+1, err)
	}
	long := "repository:" + strings.Repeat("x", MaxAccessLen) + ":pull"
	if _, err := Parse(long); err == nil || !strings.Contains(err.Error(), "more than the limit of 1048576") {
		t.Errorf("%d bytes: error %v", len(long), err)
	}
	// Blanks and empty entries count towards the byte limit, not the entry limit.
	padded := strings.Repeat(" ;", 100000) + "repository:a:pull"
	if a, err := Parse(padded); err != nil || len(a) != 1 {
		t.Errorf("padded access: %d parsed, error %v", len(a), err)
	}
}

func TestGrant_godoauthAccessStrings(t *testing.T) {
	access := "repository:linux/app:*;repository:linux/db:pull;repository:linux/ci:push;" +
		"repository:golja/godoauth:push,pull;repository:golja/other:pull,push"
	checkGrants(t, []string{access}, []grantCase{
		{"starGrantsPullAndPush", "alice", []string{"repository:linux/app:pull,push"},
			`[{"type":"repository","name":"linux/app","actions":["pull","push"]}]`},
		{"pullOnlyGrantsPull", "alice", []string{"repository:linux/db:pull"},
			`[{"type":"repository","name":"linux/db","actions":["pull"]}]`},
		{"pullOnlyRefusesPush", "alice", []string{"repository:linux/db:push"}, `[]`},
		{"pushOnlyGrantsPushNotPull", "alice", []string{"repository:linux/ci:pull,push"},
			`[{"type":"repository","name":"linux/ci","actions":["push"]}]`},
		{"pushPullGrantsBoth", "alice", []string{"repository:golja/godoauth:push,pull"},
			`[{"type":"repository","name":"golja/godoauth","actions":["push","pull"]}]`},
		{"pullPushGrantsBoth", "alice", []string{"repository:golja/other:pull,push"},
			`[{"type":"repository","name":"golja/other","actions":["pull","push"]}]`},
		{"unlistedRepositoryGetsNothing", "alice", []string{"repository:zala/srot:pull,push"}, `[]`},
		{"exactNameIsNotAPrefix", "alice", []string{"repository:linux/app2:pull", "repository:linux:pull"}, `[]`},
		{"noScopeGrantsNothing", "alice", nil, `[]`},
	})
}

func TestGrant_partialCoverageGetsTheCoveredPart(t *testing.T) {
	checkGrants(t, []string{"repository:a:pull;repository:b:push,pull"}, []grantCase{
		{"pullOfPullPush", "u", []string{"repository:a:pull,push"}, `[{"type":"repository","name":"a","actions":["pull"]}]`},
		{"deleteNotInList", "u", []string{"repository:b:delete,push"}, `[{"type":"repository","name":"b","actions":["push"]}]`},
		{"requestedOrderKept", "u", []string{"repository:b:push,pull"}, `[{"type":"repository","name":"b","actions":["push","pull"]}]`},
	})
}

func TestGrant_delete(t *testing.T) {
	checkGrants(t, []string{"repository:star:*;repository:del:delete;repository:rw:pull,push"}, []grantCase{
		{"starGrantsDelete", "u", []string{"repository:star:pull,push,delete"},
			`[{"type":"repository","name":"star","actions":["pull","push","delete"]}]`},
		{"deleteGrantsOnlyDelete", "u", []string{"repository:del:pull,delete"},
			`[{"type":"repository","name":"del","actions":["delete"]}]`},
		{"pullPushDoesNotGrantDelete", "u", []string{"repository:rw:delete"}, `[]`},
	})
}

func TestGrant_unknownActionsAreNeverGranted(t *testing.T) {
	checkGrants(t, []string{"*:**:*"}, []grantCase{
		{"keptOutOfAnAllowedScope", "u", []string{"repository:a:pull,frobnicate,PULL"}, `[{"type":"repository","name":"a","actions":["pull"]}]`},
		{"onlyUnknownGrantsNothing", "u", []string{"repository:a:frobnicate"}, `[]`},
		{"noActionGrantsNothing", "u", []string{"repository:a:"}, `[]`},
	})
}

func TestGrant_catalogAndResourceClass(t *testing.T) {
	checkGrants(t, []string{"registry:catalog:*;repository:plug/*:pull"}, []grantCase{
		{"catalogStar", "u", []string{"registry:catalog:*"}, `[{"type":"registry","name":"catalog","actions":["*"]}]`},
		{"classDropped", "u", []string{"repository(plugin):plug/in:pull"}, `[{"type":"repository","name":"plug/in","actions":["pull"]}]`},
		{"typeMustMatch", "u", []string{"repository:catalog:pull", "registry:plug/in:pull"}, `[]`},
	})
	checkGrants(t, []string{"registry:catalog:pull,push,delete"}, []grantCase{
		// The registry lists the catalog only for "*": the covered
		// actions are granted and the catalog stays closed.
		{"onlyStarGrantsStar", "u", []string{"registry:catalog:*"}, `[{"type":"registry","name":"catalog","actions":["pull","push","delete"]}]`},
	})
}

// A requested "*" asks for every action; a user whose entry grants some of
// them gets those (godoauth: `repository:R:*` asked by a user with
// `repository:R:pull` got [pull]), and an entry's "*" grants "*".
func TestGrant_requestedStarGetsTheCoveredActions(t *testing.T) {
	checkGrants(t, []string{"repository:pull:pull;repository:push:push;repository:pp:push,pull;repository:star:*;" +
		"repository:del:delete;repository:all3:pull,push,delete;repository:split:pull;repository:split:push"}, []grantCase{
		{"pullEntry", "u", []string{"repository:pull:*"}, `[{"type":"repository","name":"pull","actions":["pull"]}]`},
		{"pushEntry", "u", []string{"repository:push:*"}, `[{"type":"repository","name":"push","actions":["push"]}]`},
		{"pushPullEntry", "u", []string{"repository:pp:*"}, `[{"type":"repository","name":"pp","actions":["pull","push"]}]`},
		{"starEntryGrantsStar", "u", []string{"repository:star:*"}, `[{"type":"repository","name":"star","actions":["*"]}]`},
		{"deleteEntry", "u", []string{"repository:del:*"}, `[{"type":"repository","name":"del","actions":["delete"]}]`},
		{"everyActionButNotStar", "u", []string{"repository:all3:*"}, `[{"type":"repository","name":"all3","actions":["pull","push","delete"]}]`},
		{"unitedEntries", "u", []string{"repository:split:*"}, `[{"type":"repository","name":"split","actions":["pull","push"]}]`},
		{"explicitActionFirst", "u", []string{"repository:pp:push,*"}, `[{"type":"repository","name":"pp","actions":["push","pull"]}]`},
		{"mergedWithAnExplicitScope", "u", []string{"repository:pull:pull", "repository:pull:*"}, `[{"type":"repository","name":"pull","actions":["pull"]}]`},
		{"unlisted", "u", []string{"repository:other:*"}, `[]`},
	})
}

func TestGrant_typeStarMatchesEveryType(t *testing.T) {
	checkGrants(t, []string{"*:**:pull;*:catalog:*"}, []grantCase{
		{"repository", "u", []string{"repository:a/b/c:pull,push"}, `[{"type":"repository","name":"a/b/c","actions":["pull"]}]`},
		{"registry", "u", []string{"registry:catalog:*"}, `[{"type":"registry","name":"catalog","actions":["*"]}]`},
		{"unknownType", "u", []string{"artifact:x:pull"}, `[{"type":"artifact","name":"x","actions":["pull"]}]`},
	})
}

func TestGrant_globDoesNotCrossSlash(t *testing.T) {
	checkGrants(t, []string{"repository:team/*:pull;repository:img-?:pull;repository:deep/**:push;repository:mid/*/app:delete"}, []grantCase{
		{"starMatchesOneComponent", "u", []string{"repository:team/app:pull"}, `[{"type":"repository","name":"team/app","actions":["pull"]}]`},
		{"starStopsAtSlash", "u", []string{"repository:team/a/b:pull"}, `[]`},
		{"starNeedsTheSlash", "u", []string{"repository:team:pull"}, `[]`},
		{"questionMarkOneCharacter", "u", []string{"repository:img-1:pull", "repository:img-12:pull", "repository:img-:pull"},
			`[{"type":"repository","name":"img-1","actions":["pull"]}]`},
		{"questionMarkNotSlash", "u", []string{"repository:img-/:pull"}, `[]`},
		{"doubleStarCrossesSlash", "u", []string{"repository:deep/a/b/c:push"}, `[{"type":"repository","name":"deep/a/b/c","actions":["push"]}]`},
		{"starInTheMiddle", "u", []string{"repository:mid/x/app:delete", "repository:mid/x/y/app:delete"},
			`[{"type":"repository","name":"mid/x/app","actions":["delete"]}]`},
	})
}

func TestGrant_hostPortNames(t *testing.T) {
	checkGrants(t, []string{"repository:localhost:5000/foo/bar:pull;repository:registry.example.com:443/**:push"}, []grantCase{
		{"exact", "u", []string{"repository:localhost:5000/foo/bar:pull,push"},
			`[{"type":"repository","name":"localhost:5000/foo/bar","actions":["pull"]}]`},
		{"glob", "u", []string{"repository:registry.example.com:443/a/b:push"},
			`[{"type":"repository","name":"registry.example.com:443/a/b","actions":["push"]}]`},
		{"otherPort", "u", []string{"repository:localhost:5001/foo/bar:pull"}, `[]`},
		{"withoutHost", "u", []string{"repository:foo/bar:pull"}, `[]`},
	})
}

func TestGrant_userPattern(t *testing.T) {
	checkGrants(t, []string{"repository:${user}/**:*;repository:${user}:pull;repository:team-${user}-?:push"}, []grantCase{
		{"ownNamespace", "alice", []string{"repository:alice/app:pull,push"},
			`[{"type":"repository","name":"alice/app","actions":["pull","push"]}]`},
		{"ownNamespaceDeep", "alice", []string{"repository:alice/a/b:delete"},
			`[{"type":"repository","name":"alice/a/b","actions":["delete"]}]`},
		{"otherUsersNamespace", "alice", []string{"repository:bob/app:pull", "repository:alice2/app:pull", "repository:alic/app:pull"}, `[]`},
		{"exactUserName", "alice", []string{"repository:alice:pull,push"}, `[{"type":"repository","name":"alice","actions":["pull"]}]`},
		{"userInTheMiddle", "alice", []string{"repository:team-alice-1:push", "repository:team-bob-1:push"},
			`[{"type":"repository","name":"team-alice-1","actions":["push"]}]`},
		{"anonymousMatchesNoUserPattern", "", []string{"repository:/app:pull", "repository:team--1:push"}, `[]`},
		{"nameIsLiteralNotGlob", "a.c", []string{"repository:abc/x:pull", "repository:a.c/x:pull"},
			`[{"type":"repository","name":"a.c/x","actions":["pull"]}]`},
	})
}

func TestGrant_mergesDuplicateScopes(t *testing.T) {
	checkGrants(t, []string{"repository:a:*;repository:b:pull"}, []grantCase{
		{"unionInFirstOrder", "u", []string{"repository:a:pull", "repository:b:pull", "repository:a:push,pull", "repository:a:delete"},
			`[{"type":"repository","name":"a","actions":["pull","push","delete"]},{"type":"repository","name":"b","actions":["pull"]}]`},
		{"oauth2FormToo", "u", []string{"repository:a:push repository:a:pull"},
			`[{"type":"repository","name":"a","actions":["push","pull"]}]`},
		{"classVariantsMerge", "u", []string{"repository(plugin):a:pull", "repository:a:pull"},
			`[{"type":"repository","name":"a","actions":["pull"]}]`},
		{"sameNameOtherTypeNotMerged", "u", []string{"repository:b:pull", "registry:b:pull"},
			`[{"type":"repository","name":"b","actions":["pull"]}]`},
	})
}

func TestGrant_anonymousAndUserAccessAreUnited(t *testing.T) {
	user := "repository:team/app:push;repository:${user}/**:*"
	anon := "repository:team/app:pull;repository:public/*:pull"
	checkGrants(t, []string{user, anon}, []grantCase{
		{"unionOnOneScope", "alice", []string{"repository:team/app:pull,push"},
			`[{"type":"repository","name":"team/app","actions":["pull","push"]}]`},
		{"anonymousOnly", "alice", []string{"repository:public/x:pull,push"},
			`[{"type":"repository","name":"public/x","actions":["pull"]}]`},
		{"userOnly", "alice", []string{"repository:alice/x:push"},
			`[{"type":"repository","name":"alice/x","actions":["push"]}]`},
	})
	checkGrants(t, []string{anon}, []grantCase{
		{"anonymousRequest", "", []string{"repository:team/app:pull,push", "repository:alice/x:pull"},
			`[{"type":"repository","name":"team/app","actions":["pull"]}]`},
	})
}

func TestGrant_emptyResultEncodesAsEmptyArray(t *testing.T) {
	for _, g := range [][]Grant{
		GrantScopes("", netip.Addr{}, nil),
		GrantScopes("u", netip.Addr{}, mustParseScopes(t, "repository:a:pull")),
		GrantScopes("u", netip.Addr{}, mustParseScopes(t, "repository:a:pull"), nil, List{}),
	} {
		if got, _ := json.Marshal(g); string(got) != "[]" {
			t.Errorf("claim encodes as %s, want []", got)
		}
	}
}

func TestGrant_entryNotMadeByParseAccessGrantsNothing(t *testing.T) {
	hand := List{{Type: "repository", Pattern: "a", Actions: []string{"pull"}}}
	if g := GrantScopes("u", netip.Addr{}, mustParseScopes(t, "repository:a:pull"), hand); len(g) != 0 {
		t.Errorf("hand-made entry granted %v", g)
	}
}

// The patterns of this test take exponential time with a backtracking
// matcher; here they finish at once.
func TestGrant_pathologicalGlobsStayLinear(t *testing.T) {
	name := strings.Repeat("a", 1000)
	access := mustParseAccess(t, "repository:**a**a**a**a**a**a**a**a**b:pull;repository:*a*a*a*a*a*a*a*a*b:pull;repository:"+strings.Repeat("?*", 300)+"b:pull")
	scopes := []Scope{{Type: "repository", Name: name, Actions: []string{"pull"}}}
	for range 100 {
		if g := GrantScopes("u", netip.Addr{}, scopes, access); len(g) != 0 {
			t.Fatalf("granted %v", g)
		}
	}
	access = mustParseAccess(t, "repository:**a**a**a**a**a**a**a**a**a:pull")
	if g := GrantScopes("u", netip.Addr{}, scopes, access); len(g) != 1 {
		t.Fatalf("granted %v", g)
	}
}

func TestPattern_matchDoesNotAllocate(t *testing.T) {
	a := mustParseAccess(t, "repository:${user}/**/*-?:pull")
	name := "alice/" + strings.Repeat("x/", 400) + "app-1"
	if !a[0].match.matches(name, "alice") {
		t.Fatalf("%q does not match", name)
	}
	if n := testing.AllocsPerRun(100, func() { a[0].match.matches(name, "alice") }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
}

// referenceRegexp translates an access pattern into a regular expression:
// the matcher must agree with it on every name.
func referenceRegexp(pattern, user string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for i := 0; i < len(pattern); {
		switch {
		case strings.HasPrefix(pattern[i:], "**"):
			b.WriteString(`.*`)
			for i < len(pattern) && pattern[i] == '*' {
				i++
			}
			continue
		case pattern[i] == '*':
			b.WriteString(`[^/]*`)
		case pattern[i] == '?':
			b.WriteString(`[^/]`)
		case strings.HasPrefix(pattern[i:], userVar):
			if user == "" {
				b.WriteString(`[^\x00-\x{10FFFF}]`) // matches nothing
			} else {
				b.WriteString(regexp.QuoteMeta(user))
			}
			i += len(userVar)
			continue
		default:
			b.WriteString(regexp.QuoteMeta(pattern[i : i+1]))
		}
		i++
	}
	b.WriteString(`)$`)
	return regexp.MustCompile(b.String())
}

// referenceGrant is GrantScopes written the plain way, with regexps,
// straight from the rules of README's access strings: an allow applies
// when its networks hold the client's address (or it has none), a deny
// when they hold it, it has none, or the address is unknown; an action is
// granted when an allow that applies grants it and no deny that applies
// removes it; "*" is granted as such only when no deny removes any action.
func referenceGrant(user string, from netip.Addr, requested []Scope, lists ...List) []Grant {
	// applies reads the networks back from the entry's text with package
	// net, apart from the code under test.
	applies := func(e Entry) bool {
		text := e.String()
		at := strings.LastIndex(text, "@")
		if at < 0 {
			return true
		}
		if !from.IsValid() {
			return strings.HasPrefix(text, "!")
		}
		ip := net.ParseIP(from.String())
		for _, cidr := range strings.Split(text[at+1:], ",") {
			if _, n, err := net.ParseCIDR(cidr); err == nil && n.Contains(ip) {
				return true
			}
		}
		return false
	}
	grants := []Grant{}
	done := map[[2]string]bool{}
	for _, sc := range requested {
		key := [2]string{sc.Type, sc.Name}
		if done[key] {
			continue
		}
		done[key] = true
		var actions []string
		for _, r := range requested {
			if r.Type != sc.Type || r.Name != sc.Name {
				continue
			}
			// has: some entry of the given kind that applies names the
			// action (or "*").
			has := func(deny bool, action string) bool {
				for _, l := range lists {
					for _, e := range l {
						if e.Deny == deny && (e.Type == "*" || e.Type == sc.Type) &&
							(slices.Contains(e.Actions, "*") || slices.Contains(e.Actions, action)) &&
							applies(e) && referenceRegexp(e.Pattern, user).MatchString(sc.Name) {
							return true
						}
					}
				}
				return false
			}
			grants := func(action string) bool {
				if action == "*" {
					for _, a := range []string{"pull", "push", "delete", "*"} {
						if has(true, a) {
							return false
						}
					}
				}
				return has(false, action) && !has(true, action)
			}
			for _, want := range r.Actions {
				if slices.Contains(actions, want) || actionBit(want) == 0 {
					continue
				}
				// A requested "*" that no entry grants as such is
				// granted as the actions the entries cover.
				if want == "*" && !grants("*") {
					for _, each := range []string{"pull", "push", "delete"} {
						if !slices.Contains(actions, each) && grants(each) {
							actions = append(actions, each)
						}
					}
					continue
				}
				if grants(want) {
					actions = append(actions, want)
				}
			}
		}
		if len(actions) > 0 {
			grants = append(grants, Grant{Type: sc.Type, Name: sc.Name, Actions: actions})
		}
	}
	return grants
}

func TestPattern_agreesWithRegexpOnRandomPatterns(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	patternParts := []string{"a", "b", "/", "*", "**", "?", "${user}", "ab", ":"}
	nameParts := []string{"a", "b", "/", "ab", "u", "é", ":", "aa"}
	pick := func(parts []string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(parts[rnd.Intn(len(parts))])
		}
		return b.String()
	}
	for i := range 20000 {
		pattern := pick(patternParts, 1+rnd.Intn(6))
		name := pick(nameParts, rnd.Intn(8))
		user := []string{"", "u", "ab"}[i%3]
		if name == "" {
			continue
		}
		a, err := Parse("repository:" + pattern + ":pull")
		if err != nil {
			t.Fatalf("pattern %q: %v", pattern, err)
		}
		got := a[0].match.matches(name, user)
		if want := referenceRegexp(pattern, user).MatchString(name); got != want {
			t.Fatalf("pattern %q, name %q, user %q: match %v, want %v", pattern, name, user, got, want)
		}
	}
}

var validUserName = regexp.MustCompile(`^[A-Za-z0-9_.@-]*$`)

func FuzzParseAccess(f *testing.F) {
	for _, seed := range []string{"repository:team/**:*;!repository:team/release/**:push,delete",
		"repository:mirror/**:pull@10.0.0.0/8,fd00::/8", "!*:a:*@::1", "repository:a:pull@", "repository:a@b:pull"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Errorf("error is not valid UTF-8: %q", err)
			}
			return
		}
		printed := a.String()
		b, err := Parse(printed)
		if err != nil {
			t.Fatalf("Parse(%q) accepted, its String %q is refused: %v", s, printed, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("Parse(%q) = %+v, read back from %q as %+v", s, a, printed, b)
		}
		if b.String() != printed {
			t.Fatalf("String is not canonical: %q then %q", printed, b.String())
		}
	})
}

func FuzzGrant(f *testing.F) {
	f.Add("repository:a/**:*;!repository:a/b:push@10.0.0.0/8", "u", "repository:a/b:*")
	f.Add("repository:${user}/*:pull@fd00::/8;!repository:*/x:pull", "u", "repository:u/x:pull")
	f.Fuzz(func(t *testing.T, access, user, scopes string) {
		a, err := Parse(access)
		if err != nil || len(a) > 20 || !validUserName.MatchString(user) {
			return
		}
		requested, err := ParseScopes([]string{scopes})
		if err != nil || len(requested) > 20 {
			return
		}
		for _, from := range fuzzAddrs {
			got := GrantScopes(user, from, requested, a)
			if got == nil {
				t.Fatal("GrantScopes returned nil")
			}
			if want := referenceGrant(user, from, requested, a); !reflect.DeepEqual(got, want) {
				t.Fatalf("access %q, user %q, from %v, scopes %q:\n got %v\nwant %v", access, user, from, scopes, got, want)
			}
		}
	})
}

// benchAccess is a large access string: exact names, globs and ${user}
// patterns, with the entries a request needs near the end.
func benchAccess(n int) string {
	var entries []string
	for i := range n - 3 {
		switch i % 4 {
		case 0, 1:
			entries = append(entries, fmt.Sprintf("repository:team%d/app%d:pull,push", i, i))
		case 2:
			entries = append(entries, fmt.Sprintf("repository:team%d/*:pull", i))
		default:
			entries = append(entries, fmt.Sprintf("repository:team%d/**/cache-?:*", i))
		}
	}
	entries = append(entries, "repository:${user}/**:*", "repository:linux/app:*", "registry:catalog:*")
	return strings.Join(entries, ";")
}

func BenchmarkGrant_1000Entries(b *testing.B) {
	access := mustParseAccess(b, benchAccess(1000))
	anon := mustParseAccess(b, "repository:public/**:pull")
	scopes := mustParseScopes(b, "repository:linux/app:pull,push", "repository:alice/tools/build:pull", "repository:nobody/here:pull")
	if got := GrantScopes("alice", netip.Addr{}, scopes, access, anon); len(got) != 2 {
		b.Fatalf("granted %v", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		GrantScopes("alice", netip.Addr{}, scopes, access, anon)
	}
}

func BenchmarkParseAccess(b *testing.B) {
	s := benchAccess(1000)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}
