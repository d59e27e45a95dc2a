package migrate

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// How godoauth read a user's access string (its vault.go and handlers.go),
// which the migration compares entry by entry with the plugin's reading:
//
//   - the string was split on ";" and each piece on ":"; one piece without
//     exactly three fields (an empty one from a stray ";" included) made
//     every login of the user fail ("Wrong access format");
//   - the type field was ignored: every entry granted repository access;
//   - the name was compared literally, so "*" or "?" in it matched nothing;
//   - the actions had to be exactly push, pull, "push,pull", "pull,push" or
//     "*" (push and pull); anything else granted nothing;
//   - a later entry for a name replaced an earlier one.

// godoauthPriv is what godoauth granted on a repository.
type godoauthPriv uint8

const (
	privPush godoauthPriv = 1 << iota
	privPull
)

// godoauthActions is godoauth's NewPriv: the grant of an entry's actions
// field, or false where godoauth granted nothing.
func godoauthActions(s string) (godoauthPriv, bool) {
	switch s {
	case "push":
		return privPush, true
	case "pull":
		return privPull, true
	case "push,pull", "pull,push", "*":
		return privPush | privPull, true
	}
	return 0, false
}

// entryProblem is an entry of a godoauth access string that the plugin
// would read differently, so it is not carried over.
type entryProblem struct {
	Index int    // 1-based position among the ";"-separated entries
	Text  string // as written, blanks trimmed
	Why   string
	// Lost: godoauth did grant something through the entry, which the
	// user loses when it is dropped. Most such entries granted nothing.
	Lost bool
}

func (p entryProblem) String() string {
	s := fmt.Sprintf("entry %d %s: %s", p.Index, quote(p.Text), p.Why)
	if p.Lost {
		s += "; dropping it takes that access away"
	}
	return s
}

// translation is a godoauth access string as the plugin will take it.
type translation struct {
	Access   string         // the entries carried over, for users/<name>
	Problems []entryProblem // the entries left out, in order
	Star     int            // entries carried over whose actions are "*"
}

// translateAccess keeps the entries of a godoauth access string that mean
// the same to the plugin as they meant to godoauth, so a migrated user never
// gets more than godoauth granted (but for "*", which in the plugin also
// grants delete). With no problem the string is kept as written.
func translateAccess(access string) translation {
	g := readLikeGodoauth(access)
	var tr translation
	var kept []string
	for i, raw := range g.raws {
		text := strings.TrimSpace(raw)
		why, lost := g.difference(i)
		if why != "" {
			tr.Problems = append(tr.Problems, entryProblem{Index: i + 1, Text: text, Why: why, Lost: lost})
			continue
		}
		if g.fields[i][2] == "*" {
			tr.Star++
		}
		kept = append(kept, text)
	}
	if len(tr.Problems) == 0 {
		tr.Access = access
	} else {
		tr.Access = strings.Join(kept, ";")
	}
	return tr
}

// godoauthView is an access string split the way godoauth split it.
type godoauthView struct {
	raws    []string
	fields  [][]string     // each entry split on ":"
	refused bool           // an entry without three fields failed every login
	last    map[string]int // name → the entry godoauth used for it: the last
}

func readLikeGodoauth(access string) *godoauthView {
	g := &godoauthView{raws: strings.Split(access, ";"), last: map[string]int{}}
	for i, raw := range g.raws {
		f := strings.Split(raw, ":")
		g.fields = append(g.fields, f)
		if len(f) == 3 {
			g.last[f[1]] = i
		} else {
			g.refused = true
		}
	}
	return g
}

// difference says why entry i would mean something else to the plugin than
// it meant to godoauth, or "" when it means the same; lost reports that
// godoauth granted something through it.
func (g *godoauthView) difference(i int) (why string, lost bool) {
	text := strings.TrimSpace(g.raws[i])
	f := g.fields[i]
	if text == "" {
		if len(g.raws) == 1 {
			return "no access string: godoauth refused every login of this user", false
		}
		return `empty (a stray ";"): godoauth refused every login of this user because of it`, false
	}
	if len(f) != 3 {
		return fmt.Sprintf("%d fields, not type:name:actions: godoauth refused every login of this user because of it", len(f)), false
	}
	name := f[1]
	priv, known := godoauthActions(f[2])
	granted := known && !g.refused && g.last[name] == i && !strings.ContainsAny(name, "*?$")
	asRepository := quote("repository:" + name + ":" + strings.TrimSpace(f[2]))

	parsed, err := access.Parse(g.raws[i])
	switch {
	case err != nil:
		msg := "the plugin refuses it: " + entryError(err)
		if typ := strings.TrimSpace(f[0]); known && typ != "repository" && typ != "registry" && typ != "*" {
			msg += "; godoauth ignored the type, write it as " + asRepository
		}
		return msg, granted
	case len(parsed) != 1:
		return "the plugin reads it as something else", granted // cannot happen: one non-empty entry
	}
	e := parsed[0]
	switch {
	case e.Type != "repository":
		also := "instead"
		if e.Type == "*" {
			also = "as well"
		}
		return fmt.Sprintf("type %s: godoauth ignored the type and read it as repository access; the plugin would grant %s %s %s (write it as %s)",
			quote(e.Type), e.Type, quote(name), also, asRepository), granted
	case !known:
		return fmt.Sprintf(`actions %s: godoauth knew only push, pull, "push,pull", "pull,push" and "*", and granted nothing for it`, quote(f[2])), false
	case strings.ContainsAny(name, "*?$"):
		return fmt.Sprintf("name %s: godoauth compared names literally and granted nothing for it; the plugin reads * ? and ${user} as patterns", quote(name)), false
	}
	if j := g.last[name]; j != i {
		lastPriv, _ := godoauthActions(g.fields[j][2])
		if priv&^lastPriv != 0 {
			return fmt.Sprintf("godoauth used only the last entry for %s (entry %d), so this one granted nothing there", quote(name), j+1), false
		}
	}
	return "", false
}

// entryError is the plugin's reason for refusing one entry, without its
// "access entry 1 …" prefix (the caller names the entry).
func entryError(err error) string {
	if inner := errors.Unwrap(err); inner != nil {
		return inner.Error()
	}
	return err.Error()
}

// quote shows untrusted input in a message: quoted, escaped, truncated.
var quote = tokenapi.Quote
