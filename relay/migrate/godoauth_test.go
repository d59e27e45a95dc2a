package migrate

import (
	"slices"
	"strings"
	"testing"

	"vault-plugin-registry/backend"
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

// godoauthGrants is godoauth's own reading (vault.go UnmarshalText, NewPriv):
// name → grant, with the last entry for a name winning. ok is false when
// godoauth refused the user. It is written here apart from translateAccess
// so the fuzz test compares two independent readings.
func godoauthGrants(access string) (grants map[string]godoauthPriv, ok bool) {
	grants = map[string]godoauthPriv{}
	ok = true
	for _, x := range strings.Split(access, ";") {
		xx := strings.Split(x, ":")
		if len(xx) != 3 {
			ok = false
			continue
		}
		switch xx[2] {
		case "push":
			grants[xx[1]] = privPush
		case "pull":
			grants[xx[1]] = privPull
		case "push,pull", "pull,push", "*":
			grants[xx[1]] = privPush | privPull
		default:
			grants[xx[1]] = 0
		}
	}
	return grants, ok
}

// pluginGrant is what the plugin grants on repository name when push and
// pull are asked for.
func pluginGrant(a backend.Access, name string) godoauthPriv {
	var p godoauthPriv
	for _, g := range backend.GrantScopes("someone", []backend.Scope{{Type: "repository", Name: name, Actions: []string{"push", "pull"}}}, a) {
		if slices.Contains(g.Actions, "push") {
			p |= privPush
		}
		if slices.Contains(g.Actions, "pull") {
			p |= privPull
		}
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
	f.Fuzz(func(t *testing.T, access string) {
		if len(access) > 4096 {
			return
		}
		tr := translateAccess(access)
		kept, err := backend.ParseAccess(tr.Access)
		if err != nil {
			t.Fatalf("kept %q, which the plugin refuses: %v", tr.Access, err)
		}
		if len(tr.Problems) == 0 && tr.Access != access {
			t.Fatalf("no problem, but %q was rewritten as %q", access, tr.Access)
		}
		godoauth, ok := godoauthGrants(access)
		if !ok && len(tr.Problems) == 0 {
			t.Fatalf("godoauth refused %q, but no problem was reported", access)
		}
		// Never more than godoauth granted: each kept entry is an exact
		// repository name that godoauth granted at least as much on.
		for _, e := range kept {
			if e.Type != "repository" || strings.ContainsAny(e.Pattern, "*?$") {
				t.Fatalf("kept %q: entry %v is not an exact repository name", tr.Access, e)
			}
			if got := pluginGrant(backend.Access{e}, e.Pattern); got&^godoauth[e.Pattern] != 0 {
				t.Fatalf("kept %q: entry %v grants %b on %q, godoauth granted %b", tr.Access, e, got, e.Pattern, godoauth[e.Pattern])
			}
		}
		// And exactly what godoauth granted when nothing is reported.
		if len(tr.Problems) == 0 {
			for name, want := range godoauth {
				if got := pluginGrant(kept, name); got != want {
					t.Fatalf("%q: the plugin grants %b on %q, godoauth granted %b", access, got, name, want)
				}
			}
		}
	})
}
