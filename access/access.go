package access

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Action names known to the plugin.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
	ActionAll    = "*"
)

// Limits on an access string, checked before any parsing work.
const (
	MaxAccessEntries = 10000
	MaxAccessLen     = 1 << 20
)

// actionSet is a set of known actions. The action named "*" has its own bit
// because a client may request it (registry:catalog:*); an entry's "*"
// grants every bit, that one included.
type actionSet uint8

const (
	actPull actionSet = 1 << iota
	actPush
	actDelete
	actStar
	actEvery = actPull | actPush | actDelete | actStar
)

// actionBit is the bit of a known action name, 0 for any other name.
func actionBit(a string) actionSet {
	switch a {
	case ActionPull:
		return actPull
	case ActionPush:
		return actPush
	case ActionDelete:
		return actDelete
	case ActionAll:
		return actStar
	}
	return 0
}

// Entry is one `[!]type:pattern:actions[@networks]` entry of an access
// string. Only entries made by Parse grant or deny anything: the matcher
// and the action set are compiled there.
//
// An entry that starts with "!" is a deny: it removes its actions from
// whatever any allow grants, in any list and in any order. An entry that
// ends with "@" and a comma-separated list of networks (CIDRs, or single
// addresses) applies only to a client whose address is in one of them.
// A request whose client address is unknown matches no network: a
// conditioned allow then grants nothing, a conditioned deny still denies.
type Entry struct {
	Deny     bool           // written with a leading "!"
	Type     string         // "repository", "registry" or "*"
	Pattern  string         // as written (exact name, glob with * ** ?, ${user})
	Actions  []string       // subset of pull, push, delete, * (deduplicated, in written order)
	Networks []netip.Prefix // the entry applies only from these; none: from anywhere

	grants actionSet
	match  pattern
}

// List is a parsed access string: its entries, in written order.
type List []Entry

// Parse parses a godoauth access string. Blanks around entries and
// empty entries are ignored. The error names the offending entry (counting
// non-empty entries from 1) and what is wrong with it.
func Parse(s string) (List, error) {
	if len(s) > MaxAccessLen {
		return nil, fmt.Errorf("access string is %d bytes, more than the limit of %d", len(s), MaxAccessLen)
	}
	var a List
	for raw := range strings.SplitSeq(s, ";") {
		text := strings.TrimSpace(raw)
		if text == "" {
			continue
		}
		if len(a) == MaxAccessEntries {
			return nil, fmt.Errorf("access string has more than %d entries", MaxAccessEntries)
		}
		e, err := parseAccessEntry(text)
		if err != nil {
			return nil, fmt.Errorf("access entry %d %s: %w", len(a)+1, quote(text), err)
		}
		a = append(a, e)
	}
	return a, nil
}

func parseAccessEntry(s string) (Entry, error) {
	deny := strings.HasPrefix(s, "!")
	s = strings.TrimPrefix(s, "!")
	// Networks come after the last "@": no name, action or network holds
	// one (repository names cannot), so the split is unambiguous.
	var networks []netip.Prefix
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		var err error
		if networks, err = parseNetworks(s[at+1:]); err != nil {
			return Entry{}, err
		}
		s = s[:at]
	}
	// The pattern may hold ":" (host:port/name), the type and the actions
	// cannot: split off the first and the last field.
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 {
		return Entry{}, errors.New("want [!]type:pattern:actions[@networks]")
	}
	pat, acts := rest[:i], rest[i+1:]
	switch typ {
	case "repository", "registry", "*":
	default:
		return Entry{}, fmt.Errorf("unknown type %s (want repository, registry or *)", quote(typ))
	}
	m, err := compilePattern(pat)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Deny: deny, Type: typ, Pattern: pat, Networks: networks, match: m}
	var seen actionSet
	for a := range strings.SplitSeq(acts, ",") {
		bit := actionBit(a)
		switch {
		case a == "":
			return Entry{}, fmt.Errorf("empty action in %s", quote(acts))
		case bit == 0:
			return Entry{}, fmt.Errorf("unknown action %s (want pull, push, delete or *)", quote(a))
		case seen&bit != 0:
			continue
		}
		seen |= bit
		e.Actions = append(e.Actions, a)
		if bit == actStar {
			e.grants = actEvery
		} else {
			e.grants |= bit
		}
	}
	return e, nil
}

// String prints the access string back in canonical form: entries joined by
// ";", without blanks. Parse reads it back to an equal List.
func (a List) String() string {
	entries := make([]string, len(a))
	for i, e := range a {
		entries[i] = e.String()
	}
	return strings.Join(entries, ";")
}

// String prints the entry as [!]type:pattern:actions[@networks].
func (e Entry) String() string {
	s := e.Type + ":" + e.Pattern + ":" + strings.Join(e.Actions, ",")
	if e.Deny {
		s = "!" + s
	}
	if len(e.Networks) > 0 {
		s += "@" + formatNetworks(e.Networks)
	}
	return s
}

// Grant is one element of the token's `access` claim.
type Grant struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// GrantScopes computes the token's access claim. For each requested scope
// (scopes of the same type and name merged) it grants the union of the
// actions of every matching entry of every list, intersected with the
// requested actions, in requested order; scopes left with no action are
// dropped. A requested "*" asks for every action: it is granted as "*"
// when an entry grants "*", else as the actions the entries cover (pull,
// push, delete, in that order), as godoauth granted `repository:R:*` to an
// entry `repository:R:pull`. The result is never nil, so the claim encodes
// as [] rather than null. user is the authenticated user name, "" for
// anonymous: then ${user} matches nothing. from is the client's address,
// the zero Addr when unknown. The user's and the anonymous access are
// passed together: a deny in any list removes actions that any list
// allows.
func GrantScopes(user string, from netip.Addr, requested []Scope, lists ...List) []Grant {
	from = from.Unmap()
	grants := make([]Grant, 0, len(requested))
	for i, sc := range requested {
		if mergedEarlier(requested[:i], sc) {
			continue
		}
		var want actionSet
		for _, r := range requested[i:] {
			if r.Type == sc.Type && r.Name == sc.Name {
				for _, a := range r.Actions {
					want |= requestedBits(a)
				}
			}
		}
		if want == 0 {
			continue
		}
		have := allowed(user, from, sc.Type, sc.Name, want, lists)
		if have == 0 {
			continue
		}
		actions := make([]string, 0, bits.OnesCount8(uint8(have)))
		var added actionSet
		for _, r := range requested[i:] {
			if r.Type != sc.Type || r.Name != sc.Name {
				continue
			}
			for _, a := range r.Actions {
				bit := actionBit(a)
				if bit == actStar && have&actStar == 0 {
					for _, each := range coveredByStar {
						if b := actionBit(each); b&have != 0 && b&added == 0 {
							added |= b
							actions = append(actions, each)
						}
					}
					continue
				}
				if bit&have != 0 && bit&added == 0 {
					added |= bit
					actions = append(actions, a)
				}
			}
		}
		grants = append(grants, Grant{Type: sc.Type, Name: sc.Name, Actions: actions})
	}
	return grants
}

// coveredByStar are the actions a requested "*" stands for when no entry
// grants "*" itself, in the order they are granted.
var coveredByStar = []string{ActionPull, ActionPush, ActionDelete}

// requestedBits is what a requested action asks for: "*" asks for every
// action, so that an entry granting only some of them grants those.
func requestedBits(a string) actionSet {
	if bit := actionBit(a); bit != actStar {
		return bit
	}
	return actEvery
}

func mergedEarlier(earlier []Scope, sc Scope) bool {
	for _, e := range earlier {
		if e.Type == sc.Type && e.Name == sc.Name {
			return true
		}
	}
	return false
}

// allowed is the part of want that the entries of lists grant on typ:name
// to user from the address from, less what their denies remove.
func allowed(user string, from netip.Addr, typ, name string, want actionSet, lists []List) actionSet {
	want &^= denied(user, from, typ, name, want, lists)
	if want == 0 {
		return 0
	}
	var have actionSet
	for _, l := range lists {
		for i := range l {
			e := &l[i]
			// Entries that could add nothing are skipped before the match.
			if e.Deny || e.grants&want&^have == 0 || (e.Type != typ && e.Type != "*") {
				continue
			}
			if e.appliesFrom(from) && e.match.matches(name, user) {
				have |= e.grants & want
				if have == want {
					return have
				}
			}
		}
	}
	return have
}

// denied is the part of want that the deny entries of lists remove on
// typ:name. Removing any of pull, push or delete removes "*" as well: a
// granted "*" would stand for the removed action.
func denied(user string, from netip.Addr, typ, name string, want actionSet, lists []List) actionSet {
	var out actionSet
	for _, l := range lists {
		for i := range l {
			e := &l[i]
			if !e.Deny || e.grants&want&^out == 0 || (e.Type != typ && e.Type != "*") {
				continue
			}
			if e.appliesFrom(from) && e.match.matches(name, user) {
				out |= e.grants
			}
		}
	}
	if out&(actPull|actPush|actDelete) != 0 {
		out |= actStar
	}
	return out
}

// pattern is a compiled access pattern. A pattern without wildcards is an
// exact name: the name must equal prefix. Otherwise the name must start
// with prefix, end with suffix, and the rest must match the tokens of
// middle, which begins and ends with a wildcard or ${user}.
type pattern struct {
	glob    bool
	prefix  string
	suffix  string
	middle  []token
	minLen  int  // bytes any match needs besides the user names
	hasUser bool // middle holds ${user}
}

type tokenKind uint8

const (
	tokLiteral tokenKind = iota
	tokUser              // ${user}
	tokOne               // ?: one character but '/'
	tokStar              // *: a run of characters but '/'
	tokAny               // ** (or more stars): a run of any characters
)

type token struct {
	kind tokenKind
	lit  string // for tokLiteral
}

const userVar = "${user}"

// compilePattern checks an access pattern and compiles it into tokens.
func compilePattern(p string) (pattern, error) {
	if p == "" {
		return pattern{}, errors.New("empty pattern")
	}
	var toks []token
	lit := -1 // start of the literal being read
	flush := func(end int) {
		if lit >= 0 {
			toks = append(toks, token{kind: tokLiteral, lit: p[lit:end]})
			lit = -1
		}
	}
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '*':
			flush(i)
			j := i
			for j < len(p) && p[j] == '*' {
				j++
			}
			kind := tokStar
			if j-i > 1 {
				kind = tokAny
			}
			toks = append(toks, token{kind: kind})
			i = j
		case c == '?':
			flush(i)
			toks = append(toks, token{kind: tokOne})
			i++
		case c == '$':
			if !strings.HasPrefix(p[i:], userVar) {
				return pattern{}, fmt.Errorf("pattern %s: \"$\" is allowed only in %s", quote(p), userVar)
			}
			flush(i)
			toks = append(toks, token{kind: tokUser})
			i += len(userVar)
		case c == '@':
			return pattern{}, fmt.Errorf("pattern %s: \"@\" is not allowed: repository names cannot hold it, and it starts an entry's networks (type:pattern:actions@10.0.0.0/8)", quote(p))
		case c <= ' ' || c >= 0x7f || c == ';':
			r, _ := utf8.DecodeRuneInString(p[i:])
			return pattern{}, fmt.Errorf("pattern %s: character %q not allowed (printable ASCII without blanks or \";\")", quote(p), r)
		default:
			if lit < 0 {
				lit = i
			}
			i++
		}
	}
	flush(len(p))

	var m pattern
	if len(toks) == 1 && toks[0].kind == tokLiteral {
		m.prefix, m.minLen = p, len(p)
		return m, nil
	}
	m.glob = true
	if toks[0].kind == tokLiteral {
		m.prefix, toks = toks[0].lit, toks[1:]
	}
	if last := len(toks) - 1; toks[last].kind == tokLiteral {
		m.suffix, toks = toks[last].lit, toks[:last]
	}
	m.middle = toks
	m.minLen = len(m.prefix) + len(m.suffix)
	for _, t := range toks {
		switch t.kind {
		case tokLiteral:
			m.minLen += len(t.lit)
		case tokOne:
			m.minLen++
		case tokUser:
			m.hasUser = true
		}
	}
	return m, nil
}

func (m *pattern) matches(name, user string) bool {
	if !m.glob {
		return name == m.prefix
	}
	if len(name) < m.minLen || (m.hasUser && user == "") ||
		!strings.HasPrefix(name, m.prefix) || !strings.HasSuffix(name, m.suffix) {
		return false
	}
	return matchTokens(m.middle, name[len(m.prefix):len(name)-len(m.suffix)], user)
}

// matchTokens reports whether toks match all of s. It follows the set of
// positions of s that the tokens read so far can reach, one token at a time:
// O(len(toks)·len(s)) at worst, never exponential, and without allocation
// for names up to 1 KiB. A position is a byte offset; '?' and '*' step over
// whole UTF-8 characters, so every reachable position starts a character.
func matchTokens(toks []token, s, user string) bool {
	n := len(s)
	var buf [17]uint64
	var set positions
	if words := n/64 + 1; words <= len(buf) {
		set = buf[:words]
	} else {
		set = make(positions, words)
	}
	set.add(0)
	lo, hi := 0, 0 // every reachable position is in [lo, hi]
	for _, t := range toks {
		switch t.kind {
		case tokAny:
			for p := lo; p < n; {
				p += charLen(s, p)
				set.add(p)
			}
			hi = n
		case tokStar:
			for p := lo; p < n && p <= hi; p++ {
				if set.has(p) && s[p] != '/' {
					q := p + charLen(s, p)
					set.add(q)
					hi = max(hi, q)
				}
			}
		default:
			// Fixed-length steps. Going down, each position is read and
			// cleared before any lower one can step onto it.
			newLo, newHi := -1, -1
			for p := hi; p >= lo; p-- {
				if !set.has(p) {
					continue
				}
				set.remove(p)
				q := step(t, s, p, user)
				if q < 0 {
					continue
				}
				set.add(q)
				if newHi < 0 || q > newHi {
					newHi = q
				}
				if newLo < 0 || q < newLo {
					newLo = q
				}
			}
			if newHi < 0 {
				return false
			}
			lo, hi = newLo, newHi
		}
	}
	return hi == n && set.has(n)
}

// step is where token t, read at position p of s, ends; -1 if it does not
// match there.
func step(t token, s string, p int, user string) int {
	lit := t.lit
	switch t.kind {
	case tokOne:
		if p == len(s) || s[p] == '/' {
			return -1
		}
		return p + charLen(s, p)
	case tokUser:
		lit = user
	}
	if !strings.HasPrefix(s[p:], lit) {
		return -1
	}
	return p + len(lit)
}

// charLen is the length of the UTF-8 character at s[p]; a byte that starts
// no valid character counts as one.
func charLen(s string, p int) int {
	if s[p] < utf8.RuneSelf {
		return 1
	}
	_, size := utf8.DecodeRuneInString(s[p:])
	return size
}

// positions is a bit set of offsets into a name.
type positions []uint64

func (ps positions) add(p int)      { ps[p>>6] |= 1 << (p & 63) }
func (ps positions) remove(p int)   { ps[p>>6] &^= 1 << (p & 63) }
func (ps positions) has(p int) bool { return ps[p>>6]&(1<<(p&63)) != 0 }
