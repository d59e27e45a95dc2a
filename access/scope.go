package access

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Limits on the scopes of one token request, shared with the relay.
const (
	MaxScopes   = tokenapi.MaxScopes
	MaxScopeLen = tokenapi.MaxScopeBytes
)

// Scope is one scope requested by a client: type[(class)]:name:actions.
type Scope struct {
	Type    string   // e.g. "repository", "registry" (class dropped)
	Name    string   // may start with host[:port]/
	Actions []string // as requested, deduplicated, order kept; unknown actions kept (they are never granted)
}

// String prints the scope as type:name:actions; ParseScope reads it back to
// an equal Scope.
func (s Scope) String() string {
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

// ParseScopes parses the `scope` items of a token request. An item may hold
// several scopes separated by spaces (the OAuth2 form); empty items are
// ignored.
func ParseScopes(items []string) ([]Scope, error) {
	var scopes []Scope
	for _, item := range items {
		for s := range strings.SplitSeq(item, " ") {
			if s == "" {
				continue
			}
			if len(scopes) == MaxScopes {
				return nil, fmt.Errorf("more than %d scopes requested", MaxScopes)
			}
			sc, err := ParseScope(s)
			if err != nil {
				return nil, err
			}
			scopes = append(scopes, sc)
		}
	}
	return scopes, nil
}

// ParseScope parses one scope in the registry's grammar. The name may start
// with host:port/, so the first field is the type and the last the actions;
// the rest is the name. A resource class, as in repository(plugin), is
// accepted and dropped. Empty actions are dropped.
func ParseScope(s string) (Scope, error) {
	if err := checkScopeText(s); err != nil {
		return Scope{}, fmt.Errorf("scope %s: %w", quote(s), err)
	}
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 {
		return Scope{}, fmt.Errorf("scope %s: want type:name:actions", quote(s))
	}
	name, actions := rest[:i], rest[i+1:]
	typ, err := scopeType(typ)
	if err != nil {
		return Scope{}, fmt.Errorf("scope %s: %w", quote(s), err)
	}
	if name == "" {
		return Scope{}, fmt.Errorf("scope %s: empty name", quote(s))
	}
	sc := Scope{Type: typ, Name: name}
	var seen map[string]bool // only for long lists, to stay linear
	for a := range strings.SplitSeq(actions, ",") {
		if a == "" {
			continue
		}
		if seen == nil && len(sc.Actions) >= 8 {
			seen = make(map[string]bool, 2*len(sc.Actions))
			for _, b := range sc.Actions {
				seen[b] = true
			}
		}
		switch {
		case seen != nil && seen[a]:
			continue
		case seen != nil:
			seen[a] = true
		case slices.Contains(sc.Actions, a):
			continue
		}
		sc.Actions = append(sc.Actions, a)
	}
	return sc, nil
}

func checkScopeText(s string) error {
	if len(s) > MaxScopeLen {
		return fmt.Errorf("%d bytes, more than the limit of %d", len(s), MaxScopeLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			return fmt.Errorf("blank %U inside the scope", r)
		case !unicode.IsGraphic(r):
			return fmt.Errorf("control or invisible character %U", r)
		}
	}
	return nil
}

// scopeType checks type[(class)], both [a-z0-9]+ as in the registry's
// scope grammar, and returns the type without the class.
func scopeType(t string) (string, error) {
	base, class, hasClass := strings.Cut(t, "(")
	if base == "" {
		return "", errors.New("empty type")
	}
	if !lowerAlnum(base) {
		return "", fmt.Errorf("type %s is not lower-case letters and digits", quote(base))
	}
	if hasClass {
		class, ok := strings.CutSuffix(class, ")")
		if !ok || !lowerAlnum(class) {
			return "", fmt.Errorf("bad resource class in %s (want type(class), letters and digits)", quote(t))
		}
	}
	return base, nil
}

func lowerAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
