package migrate

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/access"
)

func TestTranslateAccess(t *testing.T) {
	type problem struct {
		index int
		why   string // part of the reason
		lost  bool
	}
	for _, tc := range []struct {
		name     string
		access   string
		kept     string
		problems []problem
		star     int
	}{
		{name: "godoauth README example is kept as written",
			access: "repository:linux/app:*;repository:linux/db:pull",
			kept:   "repository:linux/app:*;repository:linux/db:pull", star: 1},
		{name: "both orders of push and pull",
			access: "repository:a:push,pull;repository:b:pull,push;repository:c:push",
			kept:   "repository:a:push,pull;repository:b:pull,push;repository:c:push"},
		{name: "blank before the type is kept as written: godoauth ignored the type",
			access: " repository:a:pull", kept: " repository:a:pull"},
		{name: "blank after the actions granted nothing in godoauth",
			access:   "repository:a:pull ;repository:b:push",
			kept:     "repository:b:push",
			problems: []problem{{1, `actions "pull ": godoauth knew only`, false}}},
		{name: "delete and longer action lists granted nothing in godoauth",
			access: "repository:a:delete;repository:b:pull,push,delete;repository:c:pull,pull;repository:d:pull",
			kept:   "repository:d:pull",
			problems: []problem{
				{1, `actions "delete"`, false},
				{2, `actions "pull,push,delete"`, false},
				{3, `actions "pull,pull"`, false},
			}},
		{name: "actions the plugin does not know",
			access: "repository:a:PULL;repository:b:pull, push",
			problems: []problem{
				{1, `the plugin refuses it: unknown action "PULL"`, false},
				{2, `the plugin refuses it: unknown action " push"`, false},
			}},
		{name: "godoauth ignored the type: registry and * entries granted repository access",
			access: "registry:catalog:*;*:linux/app:pull",
			problems: []problem{
				{1, `type "registry": godoauth ignored the type and read it as repository access; the plugin would grant registry "catalog" instead (write it as "repository:catalog:*")`, true},
				{2, `type "*"`, true},
			}},
		{name: "unknown type: the plugin refuses it, godoauth granted it",
			access:   "repo:linux/app:pull",
			problems: []problem{{1, `the plugin refuses it: unknown type "repo" (want repository, registry or *); godoauth ignored the type, write it as "repository:linux/app:pull"`, true}}},
		{name: "names were literal in godoauth, patterns in the plugin",
			access: "repository:linux/*:pull;repository:${user}/**:*;repository:a?:pull;repository:ok:pull",
			kept:   "repository:ok:pull",
			problems: []problem{
				{1, `name "linux/*": godoauth compared names literally`, false},
				{2, `name "${user}/**"`, false},
				{3, `name "a?"`, false},
			}},
		{name: "an entry without three fields made godoauth refuse the user",
			access:   "repository:linux/app;repository:b:pull",
			kept:     "repository:b:pull",
			problems: []problem{{1, "2 fields, not type:name:actions: godoauth refused every login", false}}},
		{name: "host:port names had four fields",
			access:   "repository:localhost:5000/app:pull",
			problems: []problem{{1, "4 fields", false}}},
		{name: "a stray semicolon made godoauth refuse the user",
			access:   "repository:a:pull;",
			kept:     "repository:a:pull",
			problems: []problem{{2, `empty (a stray ";")`, false}}},
		{name: "nothing granted while godoauth refused the user",
			access:   "registry:catalog:*;;repository:a:pull",
			kept:     "repository:a:pull",
			problems: []problem{{1, `type "registry"`, false}, {2, "empty", false}}},
		{name: "empty access string",
			access:   "",
			problems: []problem{{1, "no access string: godoauth refused every login of this user", false}}},
		{name: "a later entry replaced an earlier one in godoauth",
			access:   "repository:a:*;repository:a:pull;repository:b:pull;repository:b:*;repository:c:pull;repository:c:pull",
			kept:     "repository:a:pull;repository:b:pull;repository:b:*;repository:c:pull;repository:c:pull",
			star:     1,
			problems: []problem{{1, `godoauth used only the last entry for "a" (entry 2), so this one granted nothing there`, false}}},
		{name: "a later entry that granted nothing replaced an earlier one",
			access: "repository:a:*;repository:a:delete",
			problems: []problem{
				{1, `last entry for "a" (entry 2)`, false},
				{2, `actions "delete"`, false},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := translateAccess(tc.access)
			if tr.Access != tc.kept || tr.Star != tc.star {
				t.Errorf("kept %q (star %d), want %q (star %d)", tr.Access, tr.Star, tc.kept, tc.star)
			}
			if len(tr.Problems) != len(tc.problems) {
				t.Fatalf("problems %v, want %d", tr.Problems, len(tc.problems))
			}
			for i, want := range tc.problems {
				got := tr.Problems[i]
				if got.Index != want.index || !strings.Contains(got.Why, want.why) || got.Lost != want.lost {
					t.Errorf("problem %d: %+v, want entry %d with %q (lost %v)", i, got, want.index, want.why, want.lost)
				}
			}
		})
	}
}

// godoauth's rules, as its source states them (github.com/dgolja/godoauth,
// the last commit; read to learn them, restated here in a few lines and
// never shared with the code under test). Each rule names where it comes
// from; TestGodoauthRules_ownTestCases holds godoauth's own test cases
// for them.
//
//   - vault.go UnmarshalText: the access string is split on ";" and each
//     piece on ":"; a piece without exactly three fields fails the whole
//     user ("Wrong access format"); name → NewPriv(actions), so a later
//     entry for a name replaces an earlier one; the type is not looked at.
//   - handlers.go NewPriv: "push", "pull", "push,pull", "pull,push" and "*"
//     (push and pull); anything else is PrivIllegal, which grants nothing.
//   - handlers.go Scope.UnmarshalText (a requested scope): exactly three
//     fields, type "repository", actions accepted by NewPriv; anything else
//     is a 400.
//   - handlers.go actionAllowed: the grant is the user's entry for the name
//     intersected with the requested actions; nothing when they share none.

// godoauthGrants is godoauth's reading of an access string (vault.go
// UnmarshalText with NewPriv): name → grant. ok is false when godoauth
// refused the user. It is written apart from translateAccess so the fuzz
// test compares two independent readings.
func godoauthGrants(access string) (grants map[string]godoauthPriv, ok bool) {
	grants = map[string]godoauthPriv{}
	ok = true
	for _, x := range strings.Split(access, ";") {
		xx := strings.Split(x, ":")
		if len(xx) != 3 {
			ok = false // UnmarshalText: "Wrong access format"
			continue
		}
		grants[xx[1]] = godoauthPrivOf(xx[2]) // the last entry for a name wins
	}
	return grants, ok
}

// godoauthPrivOf is NewPriv; PrivIllegal grants nothing, so it is 0 here.
func godoauthPrivOf(actions string) godoauthPriv {
	switch actions {
	case "push":
		return privPush
	case "pull":
		return privPull
	case "push,pull", "pull,push", "*":
		return privPush | privPull
	}
	return 0
}

// godoauthScope is Scope.UnmarshalText of a requested scope: the name and
// the asked actions, or false for a scope godoauth answered 400.
func godoauthScope(scope string) (name string, asked godoauthPriv, ok bool) {
	f := strings.Split(scope, ":")
	if len(f) != 3 || f[0] != "repository" {
		return "", 0, false
	}
	asked = godoauthPrivOf(f[2])
	return f[1], asked, asked != 0
}

// godoauthAllowed is actionAllowed: the entry's grant intersected with the
// asked actions.
func godoauthAllowed(grants map[string]godoauthPriv, name string, asked godoauthPriv) godoauthPriv {
	return grants[name] & asked
}

// TestGodoauthRules_ownTestCases checks the restatement above against
// godoauth's own test cases (handlers_test.go TestUnmarshalScopeText,
// TestPrivileges, TestActionAllowed; vault_test.go TestUnmarshalText),
// so that the property tests below rest on godoauth's behaviour, not on a
// reading of it that could drift.
func TestGodoauthRules_ownTestCases(t *testing.T) {
	// TestUnmarshalScopeText.
	for _, s := range []string{"something", "repository:namespace", "repository:namespace:wrong",
		"something:bla/bla:push", "push:alpine/master:pull"} {
		if _, _, ok := godoauthScope(s); ok {
			t.Errorf("scope %q: godoauth refuses it, the restatement accepts it", s)
		}
	}
	for _, s := range []string{"repository:golja/godoauth:push,pull", "repository:golja/godoauth:pull",
		"repository:golja/godoauth:pull,push", "repository:golja/godoauth:push"} {
		if _, _, ok := godoauthScope(s); !ok {
			t.Errorf("scope %q: godoauth accepts it, the restatement refuses it", s)
		}
	}
	// TestPrivileges: push,pull has push and pull; pull and push only themselves.
	if godoauthPrivOf("push,pull") != privPush|privPull || godoauthPrivOf("pull") != privPull || godoauthPrivOf("push") != privPush {
		t.Error("NewPriv of push,pull, pull or push differs from godoauth's TestPrivileges")
	}
	// vault_test.go TestUnmarshalText: "repository:foo/bar:*" is foo/bar
	// with PrivAll; "foo/bar:*" (two fields) is an error.
	if g, ok := godoauthGrants("repository:foo/bar:*"); !ok || len(g) != 1 || g["foo/bar"] != privPush|privPull {
		t.Errorf("repository:foo/bar:* read as %v (ok %v), want foo/bar push and pull", g, ok)
	}
	if _, ok := godoauthGrants("foo/bar:*"); ok {
		t.Error("foo/bar:* accepted; godoauth refuses it")
	}
	// TestActionAllowed: a user with foo/bar PrivAll gets nothing on
	// zala/srot, all on foo/bar when asking all, push when asking push.
	g, _ := godoauthGrants("repository:foo/bar:*")
	if godoauthAllowed(g, "zala/srot", privPush|privPull) != 0 ||
		godoauthAllowed(g, "foo/bar", privPush|privPull) != privPush|privPull ||
		godoauthAllowed(g, "foo/bar", privPush) != privPush {
		t.Error("actionAllowed restated differs from godoauth's TestActionAllowed")
	}
}

// TestGrant_sameAsGodoauth: for access strings godoauth and the plugin
// read alike (its README example, the entries of its tests), every scope
// godoauth accepts (every action field NewPriv knows, "*" included) gets
// the same grant from the plugin as from godoauth's actionAllowed. A
// requested "*" by a user whose entry grants only some actions gets those
// actions in both.
func TestGrant_sameAsGodoauth(t *testing.T) {
	accesses := []string{
		"repository:linux/app:*;repository:linux/db:pull", // godoauth README
		"repository:foo/bar:*",                            // vault_test.go
		"repository:golja/godoauth:push,pull",             // handlers_test.go
		"repository:golja/godoauth:pull,push",
		"repository:golja/godoauth:pull",
		"repository:golja/godoauth:push",
	}
	names := []string{"linux/app", "linux/db", "foo/bar", "golja/godoauth", "zala/srot"}
	for _, text := range accesses {
		tr := translateAccess(text)
		if len(tr.Problems) != 0 || tr.Access != text {
			t.Fatalf("%q: the migration changes it (%v); pick one both read alike", text, tr.Problems)
		}
		kept, err := access.Parse(tr.Access)
		if err != nil {
			t.Fatal(err)
		}
		godoauth, _ := godoauthGrants(text)
		for _, name := range names {
			for _, actions := range []string{"push", "pull", "push,pull", "pull,push", "*"} {
				scope := "repository:" + name + ":" + actions
				n, asked, ok := godoauthScope(scope)
				if !ok {
					t.Fatalf("godoauth refuses %q", scope)
				}
				want := godoauthAllowed(godoauth, n, asked)
				got := privOfGrants(access.GrantScopes("someone", netip.Addr{}, []access.Scope{{Type: "repository", Name: name, Actions: strings.Split(actions, ",")}}, kept))
				if got != want {
					t.Errorf("access %q, scope %q: the plugin grants %s, godoauth %s", text, scope, got, want)
				}
			}
		}
	}
}

// privOfGrants reads a claim as godoauth's push and pull; a granted "*"
// is both.
func privOfGrants(grants []access.Grant) godoauthPriv {
	var p godoauthPriv
	for _, g := range grants {
		for _, a := range g.Actions {
			switch a {
			case "push":
				p |= privPush
			case "pull":
				p |= privPull
			case "*":
				p |= privPush | privPull
			}
		}
	}
	return p
}

func (p godoauthPriv) String() string {
	var s []string
	if p&privPush != 0 {
		s = append(s, "push")
	}
	if p&privPull != 0 {
		s = append(s, "pull")
	}
	return "[" + strings.Join(s, ",") + "]"
}

// pluginGrant is what the plugin grants on repository name when push and
// pull, or "*", are asked for.
func pluginGrant(a access.List, name string) godoauthPriv {
	var p godoauthPriv
	for _, asked := range [][]string{{"push", "pull"}, {"*"}} {
		p |= privOfGrants(access.GrantScopes("someone", netip.Addr{}, []access.Scope{{Type: "repository", Name: name, Actions: asked}}, a))
	}
	return p
}

func FuzzTranslateAccess(f *testing.F) {
	for _, s := range []string{
		"repository:linux/app:*;repository:linux/db:pull",
		"repository:a:*;repository:a:pull;registry:catalog:*;",
		" repository:a:pull ; repo:b:push;*:c:pull,push",
		"repository:linux/*:pull;repository:${user}/**:*;repository:a?:delete",
		"repository:localhost:5000/app:pull",
		"",
		";;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 4096 {
			return
		}
		tr := translateAccess(text)
		kept, err := access.Parse(tr.Access)
		if err != nil {
			t.Fatalf("kept %q, which the plugin refuses: %v", tr.Access, err)
		}
		if len(tr.Problems) == 0 && tr.Access != text {
			t.Fatalf("no problem, but %q was rewritten as %q", text, tr.Access)
		}
		godoauth, ok := godoauthGrants(text)
		if !ok && len(tr.Problems) == 0 {
			t.Fatalf("godoauth refused %q, but no problem was reported", text)
		}
		// Never more than godoauth granted: each kept entry is an exact
		// repository name that godoauth granted at least as much on.
		for _, e := range kept {
			if e.Type != "repository" || strings.ContainsAny(e.Pattern, "*?$") {
				t.Fatalf("kept %q: entry %v is not an exact repository name", tr.Access, e)
			}
			if got := pluginGrant(access.List{e}, e.Pattern); got&^godoauth[e.Pattern] != 0 {
				t.Fatalf("kept %q: entry %v grants %b on %q, godoauth granted %b", tr.Access, e, got, e.Pattern, godoauth[e.Pattern])
			}
		}
		// And exactly what godoauth granted when nothing is reported.
		if len(tr.Problems) == 0 {
			for name, want := range godoauth {
				if got := pluginGrant(kept, name); got != want {
					t.Fatalf("%q: the plugin grants %b on %q, godoauth granted %b", text, got, name, want)
				}
			}
		}
	})
}
