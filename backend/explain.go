package backend

import (
	"context"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// ExplainQuery asks which access entries decide a scope for one subject:
// exactly one of User, Group and EntityID, the scope
// (type:name[:actions]; the actions are ignored, every action is
// explained) and the client's address ("" when unknown).
type ExplainQuery struct {
	User, Group, EntityID string
	Scope                 string
	ClientAddr            string
}

// Explanation is the answer to an ExplainQuery: the sources that apply, in
// the order a token request reads them, and a verdict per action.
type Explanation struct {
	Subject  string
	Sources  []string
	Verdicts []access.Verdict
}

// Explain answers an ExplainQuery with the same lists a token request for
// that subject would read: a user's access and anonymous_access; a group's
// and anonymous_access; an entity's groups, its own and anonymous_access.
// A user or record that does not exist is a 404 naming it.
func (b *Backend) Explain(ctx context.Context, s logical.Storage, q ExplainQuery) (*Explanation, error) {
	sc, err := explainScope(q.Scope)
	if err != nil {
		return nil, err
	}
	from, err := ParseClientAddr(q.ClientAddr)
	if err != nil {
		return nil, err
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, err
	}
	subject, patternUser, sources, err := b.explainSources(ctx, s, cfg, q)
	if err != nil {
		return nil, err
	}
	ex := &Explanation{Subject: subject, Verdicts: access.Explain(patternUser, from, sc.Type, sc.Name, sources)}
	for _, src := range sources {
		ex.Sources = append(ex.Sources, src.Name)
	}
	return ex, nil
}

// anonymousSource names the mount's anonymous_access among the sources.
const anonymousSource = "anonymous_access"

func anonymous(cfg *Config) access.Source {
	return access.Source{Name: anonymousSource, List: cfg.Anonymous()}
}

// explainScope reads the scope to explain; its actions may be left out.
func explainScope(text string) (access.Scope, error) {
	if text == "" {
		return access.Scope{}, errorf(KindBadRequest, "scope is required: type:name, e.g. repository:team/app")
	}
	sc, err := access.ParseScope(text)
	if err != nil {
		if sc, err2 := access.ParseScope(text + ":pull"); err2 == nil {
			return sc, nil
		}
		return access.Scope{}, errorf(KindBadRequest, "%s", err)
	}
	return sc, nil
}

// explainSources reads the subject's own lists, named for the answer.
func (b *Backend) explainSources(ctx context.Context, s logical.Storage, cfg *Config, q ExplainQuery) (subject, patternUser string, sources []access.Source, err error) {
	given := 0
	for _, v := range []string{q.User, q.Group, q.EntityID} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return "", "", nil, errorf(KindBadRequest, "give exactly one of user, group and entity_id")
	}
	switch {
	case q.User != "":
		u, err := b.ReadUser(ctx, s, q.User)
		if err != nil {
			return "", "", nil, err
		}
		if u == nil {
			return "", "", nil, errorf(KindNotFound, "user %s does not exist", quote(q.User))
		}
		return u.Name, u.Name, []access.Source{{Name: "user " + u.Name, List: b.cachedUser(u).access}, anonymous(cfg)}, nil
	case q.Group != "":
		rec, err := b.ReadIdentityAccess(ctx, s, IdentityGroup, q.Group)
		if err != nil {
			return "", "", nil, err
		}
		if rec == nil {
			return "", "", nil, errorf(KindNotFound, "group %s has no access on this mount", quote(q.Group))
		}
		a, err := access.Parse(rec.Access)
		if err != nil {
			a = nil // validated on write; a record that no longer parses grants nothing
		}
		// A group is no subject: ${user} matches nothing here.
		return "", "", []access.Source{{Name: "group " + q.Group, List: a}, anonymous(cfg)}, nil
	default:
		ids, err := b.identitySource()
		if err != nil {
			return "", "", nil, err
		}
		id, err := b.ResolveIdentity(ctx, s, cfg, ids, q.EntityID)
		if err != nil {
			if e, ok := AsError(err); ok && e.Kind == KindUnauthorized {
				return "", "", nil, errorf(KindNotFound, "%s", e.Msg)
			}
			return "", "", nil, err
		}
		for i, l := range id.Lists {
			sources = append(sources, access.Source{Name: id.Sources[i], List: l})
		}
		return id.Subject, id.PatternUser, sources, nil
	}
}
