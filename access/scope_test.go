package access

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseScope_accepts(t *testing.T) {
	cases := []struct {
		in   string
		want Scope
	}{
		{"repository:foo/bar:pull", Scope{"repository", "foo/bar", []string{"pull"}}},
		{"repository:golja/godoauth:push,pull", Scope{"repository", "golja/godoauth", []string{"push", "pull"}}},
		{"repository:localhost:5000/foo/bar:pull,push", Scope{"repository", "localhost:5000/foo/bar", []string{"pull", "push"}}},
		{"repository:[::1]:5000/foo:pull", Scope{"repository", "[::1]:5000/foo", []string{"pull"}}},
		{"repository(plugin):foo:pull", Scope{"repository", "foo", []string{"pull"}}},
		{"registry:catalog:*", Scope{"registry", "catalog", []string{"*"}}},
		{"repository:foo:pull,delete,pull,push,delete", Scope{"repository", "foo", []string{"pull", "delete", "push"}}},
		{"repository:foo:pull,frobnicate", Scope{"repository", "foo", []string{"pull", "frobnicate"}}},
		{"repository:foo:,pull,", Scope{"repository", "foo", []string{"pull"}}},
		{"repository:foo:", Scope{Type: "repository", Name: "foo"}},
		{"artifact2:x:read", Scope{"artifact2", "x", []string{"read"}}},
	}
	for _, c := range cases {
		got, err := ParseScope(c.in)
		if err != nil {
			t.Errorf("ParseScope(%q): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseScope(%q) = %#v, want %#v", c.in, got, c.want)
		}
		if again, err := ParseScope(got.String()); err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("ParseScope(%q) does not read back its String %q: %#v, %v", c.in, got.String(), again, err)
		}
	}
}

func TestParseScope_errorNamesScopeAndProblem(t *testing.T) {
	cases := []struct{ in, want string }{
		{"something", `scope "something": want type:name:actions`},
		{"repository:namespace", `scope "repository:namespace": want type:name:actions`},
		{":foo:pull", `scope ":foo:pull": empty type`},
		{"(plugin):foo:pull", `empty type`},
		{"repository::pull", `scope "repository::pull": empty name`},
		{"Repository:foo:pull", `type "Repository" is not lower-case letters and digits`},
		{"repo-sitory:foo:pull", `type "repo-sitory" is not lower-case letters and digits`},
		{"repository(:foo:pull", `bad resource class in "repository("`},
		{"repository():foo:pull", `bad resource class in "repository()"`},
		{"repository(plugin:foo:pull", `bad resource class in "repository(plugin"`},
		{"repository(Plugin):foo:pull", `bad resource class`},
		{"repository(a)(b):foo:pull", `bad resource class`},
		{"repository(a)x:foo:pull", `bad resource class`},
		{"repository:foo\tbar:pull", `scope "repository:foo\tbar:pull": blank U+0009 inside the scope`},
		{"repository:foo\u00a0bar:pull", `blank U+00A0`},
		{"repository:foo\x00:pull", `control or invisible character U+0000`},
		{"repository:foo\u200b:pull", `control or invisible character U+200B`},
		{"repository:foo\x7f:pull", `control or invisible character U+007F`},
		{"repository:\xff:pull", `scope "repository:\xff:pull": not valid UTF-8`},
	}
	for _, c := range cases {
		_, err := ParseScope(c.in)
		if err == nil {
			t.Errorf("ParseScope(%q) accepted it", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseScope(%q) error\n %s\ndoes not contain\n %s", c.in, err, c.want)
		}
	}
}

func TestParseScope_lengthLimit(t *testing.T) {
	fits := "repository:" + strings.Repeat("a", MaxScopeLen-len("repository::pull")) + ":pull"
	if _, err := ParseScope(fits); err != nil {
		t.Errorf("%d bytes refused: %v", len(fits), err)
	}
	long := "repository:" + strings.Repeat("a", MaxScopeLen) + ":pull"
	_, err := ParseScope(long)
	if err == nil || !strings.Contains(err.Error(), "more than the limit of 1024") {
		t.Fatalf("%d bytes: error %v", len(long), err)
	}
	if len(err.Error()) > 200 || !strings.Contains(err.Error(), `"repository:aaa`) {
		t.Errorf("error does not name the scope, truncated: %s", err)
	}
}

func TestParseScopes_readsItemsAndOAuth2Form(t *testing.T) {
	got, err := ParseScopes([]string{
		"repository:a:pull repository:b:push",
		"",
		"  registry:catalog:*  ",
		"repository:a:pull",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Scope{
		{"repository", "a", []string{"pull"}},
		{"repository", "b", []string{"push"}},
		{"registry", "catalog", []string{"*"}},
		{"repository", "a", []string{"pull"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, err := ParseScopes(nil); err != nil || len(got) != 0 {
		t.Errorf("no items: %v, %v", got, err)
	}
}

func TestParseScopes_errorNamesTheBadScope(t *testing.T) {
	_, err := ParseScopes([]string{"repository:a:pull", "repository:b:pull repository:c"})
	if err == nil || err.Error() != `scope "repository:c": want type:name:actions` {
		t.Errorf("error %v", err)
	}
	// Blanks other than the space separator stay inside the scope.
	_, err = ParseScopes([]string{"repository:a:pull\trepository:b:pull"})
	if err == nil || !strings.Contains(err.Error(), "blank U+0009") {
		t.Errorf("error %v", err)
	}
}

func TestParseScopes_countLimit(t *testing.T) {
	items := make([]string, MaxScopes)
	for i := range items {
		items[i] = fmt.Sprintf("repository:r%d:pull", i)
	}
	if got, err := ParseScopes(items); err != nil || len(got) != MaxScopes {
		t.Fatalf("%d scopes: %d parsed, error %v", MaxScopes, len(got), err)
	}
	if _, err := ParseScopes(append(items, "repository:one:pull")); err == nil || err.Error() != "more than 256 scopes requested" {
		t.Errorf("%d scopes: error %v", MaxScopes+1, err)
	}
	joined := strings.Join(items, " ") + " repository:one:pull"
	if _, err := ParseScopes([]string{joined}); err == nil {
		t.Errorf("%d scopes in one item accepted", MaxScopes+1)
	}
}

func TestParseScope_manyActionsStayLinear(t *testing.T) {
	var acts []string
	for i := range 240 {
		acts = append(acts, fmt.Sprintf("a%d", i%120))
	}
	sc, err := ParseScope("x:y:" + strings.Join(acts, ","))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Actions) != 120 || sc.Actions[0] != "a0" || sc.Actions[119] != "a119" {
		t.Errorf("got %d actions: %v", len(sc.Actions), sc.Actions)
	}
}

func FuzzParseScope(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if _, errs := ParseScopes([]string{s}); err == nil && errs != nil && !strings.Contains(s, " ") {
			t.Errorf("ParseScope(%q) accepts what ParseScopes refuses: %v", s, errs)
		}
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Errorf("error is not valid UTF-8: %q", err)
			}
			return
		}
		printed := sc.String()
		again, err := ParseScope(printed)
		if err != nil {
			t.Fatalf("ParseScope(%q) accepted, its String %q is refused: %v", s, printed, err)
		}
		if !reflect.DeepEqual(again, sc) {
			t.Fatalf("ParseScope(%q) = %#v, read back from %q as %#v", s, sc, printed, again)
		}
	})
}

func BenchmarkParseScopes(b *testing.B) {
	items := []string{
		"repository:library/alpine:pull",
		"repository:team/app:pull,push",
		"repository:localhost:5000/team/cache:pull,push repository(plugin):tools/lint:pull",
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseScopes(items); err != nil {
			b.Fatal(err)
		}
	}
}
