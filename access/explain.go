package access

import "net/netip"

// Source is one named access list, for Explain: "user alice",
// "group dev", "anonymous_access".
type Source struct {
	Name string
	List List
}

// Verdict is Explain's answer for one action on one repository or
// registry resource.
type Verdict struct {
	Action  string `json:"action"`
	Granted bool   `json:"granted"`
	// Entries that match the name and grant or deny the action, each as
	// "<source>: <entry>".
	AllowedBy []string `json:"allowed_by"`
	DeniedBy  []string `json:"denied_by"`
	// Entries that would match but apply only from networks the client's
	// address is not in (or from anywhere known, when it is unknown).
	NotFromHere []string `json:"not_from_here"`
}

// explained are the actions Explain answers for, in this order.
var explained = []string{ActionPull, ActionPush, ActionDelete, ActionAll}

// Explain says, for each action on typ:name, whether user at from gets it
// and which entries of which sources decide that: the same decision as
// GrantScopes makes (a deny of pull, push or delete also takes away "*").
func Explain(user string, from netip.Addr, typ, name string, sources []Source) []Verdict {
	from = from.Unmap()
	lists := make([]List, len(sources))
	for i, src := range sources {
		lists[i] = src.List
	}
	out := make([]Verdict, 0, len(explained))
	for _, action := range explained {
		bit := actionBit(action)
		v := Verdict{
			Action:      action,
			Granted:     allowed(user, from, typ, name, requestedBits(action), lists)&bit != 0,
			AllowedBy:   []string{},
			DeniedBy:    []string{},
			NotFromHere: []string{},
		}
		// What removes the action: itself, and for "*" any action it
		// stands for.
		removes := bit
		if bit == actStar {
			removes = actEvery
		}
		for _, src := range sources {
			for i := range src.List {
				e := &src.List[i]
				mask := bit
				if e.Deny {
					mask = removes
				}
				if e.grants&mask == 0 || (e.Type != typ && e.Type != "*") || !e.match.matches(name, user) {
					continue
				}
				where := src.Name + ": " + e.String()
				switch {
				case !e.appliesFrom(from):
					v.NotFromHere = append(v.NotFromHere, where)
				case e.Deny:
					v.DeniedBy = append(v.DeniedBy, where)
				default:
					v.AllowedBy = append(v.AllowedBy, where)
				}
			}
		}
		out = append(out, v)
	}
	return out
}
