package paths

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

func explainPaths(b *backend.Backend) []*framework.Path {
	h := &explainHandler{b: b}
	return []*framework.Path{{
		Pattern: "access/explain$",
		Fields: map[string]*framework.FieldSchema{
			"user":      {Type: framework.TypeString, Description: "A user of this mount."},
			"group":     {Type: framework.TypeString, Description: "A Vault identity group given access on this mount (groups/<name>)."},
			"entity_id": {Type: framework.TypeString, Description: "A Vault identity entity's id (vault read -field=id identity/entity/name/<name>): its groups, its own access and anonymous_access, as token/identity reads them."},
			"scope":     {Type: framework.TypeString, Description: "The resource to explain, type:name (repository:team/app); actions, if given, are ignored: every action is explained."},
			"address":   {Type: framework.TypeString, Description: "The client's IP address, for entries with networks; empty: unknown, as for a direct Vault call."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   &framework.PathOperation{Callback: h.explain, Summary: "Say which access entries grant and deny each action."},
			logical.UpdateOperation: &framework.PathOperation{Callback: h.explain, Summary: "The same as read, with the fields in the body."},
		},
		HelpSynopsis:    explainHelpSynopsis,
		HelpDescription: explainHelpDescription,
	}}
}

type explainHandler struct{ b *backend.Backend }

func (h *explainHandler) explain(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	ex, err := h.b.Explain(ctx, req.Storage, backend.ExplainQuery{
		User:       d.Get("user").(string),
		Group:      d.Get("group").(string),
		EntityID:   d.Get("entity_id").(string),
		Scope:      d.Get("scope").(string),
		ClientAddr: d.Get("address").(string),
	})
	if err != nil {
		return respond(err)
	}
	actions := make(map[string]any, len(ex.Verdicts))
	for _, v := range ex.Verdicts {
		actions[v.Action] = map[string]any{
			"granted":       v.Granted,
			"allowed_by":    v.AllowedBy,
			"denied_by":     v.DeniedBy,
			"not_from_here": v.NotFromHere,
		}
	}
	return &logical.Response{Data: map[string]any{
		"subject": ex.Subject,
		"sources": ex.Sources,
		"actions": actions,
	}}, nil
}

const explainHelpSynopsis = "Explain which access entries grant and deny each action on a resource."

const explainHelpDescription = `
For operators debugging a refusal. Give one subject (user, group or
entity_id), a scope (type:name) and optionally the client's address. The
answer lists the access lists a token request for that subject reads
(sources, in order) and, for pull, push, delete and *, whether it is
granted, the entries that allow it, the entries that deny it (a deny wins
over every allow; a deny of pull, push or delete also takes away *), and
the entries that match but apply only from networks the address is not in.
Each entry is shown as "<source>: <entry>".

  vault read <mount>/access/explain user=alice scope=repository:team/release/app address=10.1.2.3
`
