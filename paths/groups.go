package paths

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/backend"
)

func groupPaths(b *backend.Backend) []*framework.Path {
	return identityAccessPaths(b, backend.IdentityGroup, "The name of a Vault identity group (internal or external), as `vault read identity/group/name/<name>` shows it.",
		groupsListHelpSynopsis, groupsListHelpDescription, groupHelpSynopsis, groupHelpDescription)
}

// identityAccessPaths are the list path and the one-record path of groups
// or entities: the two hold the same kind of record.
func identityAccessPaths(b *backend.Backend, kind backend.IdentityKind, nameHelp, listSyn, listDesc, syn, desc string) []*framework.Path {
	h := &identityAccessHandler{b: b, kind: kind}
	prefix := string(kind)
	return []*framework.Path{
		{
			Pattern: prefix + "/?$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: h.list, Summary: "List the names given access."},
			},
			HelpSynopsis:    listSyn,
			HelpDescription: listDesc,
		},
		{
			Pattern: prefix + "/(?P<name>" + access.UserNamePattern + ")$",
			Fields: map[string]*framework.FieldSchema{
				"name":   {Type: framework.TypeString, Description: nameHelp},
				"access": {Type: framework.TypeString, Description: `Access string, as for users: entries "type:pattern:actions" joined by ";"; ${user} is the token's subject. Validated on write (400 names the bad entry).`},
			},
			ExistenceCheck: h.exists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: h.write, Summary: "Give access."},
				logical.UpdateOperation: &framework.PathOperation{Callback: h.write, Summary: "Replace the access string."},
				logical.ReadOperation:   &framework.PathOperation{Callback: h.read, Summary: "Read the access string, created and updated times."},
				logical.DeleteOperation: &framework.PathOperation{Callback: h.delete, Summary: "Take the access away; the next token lacks it."},
			},
			HelpSynopsis:    syn,
			HelpDescription: desc,
		},
	}
}

type identityAccessHandler struct {
	b    *backend.Backend
	kind backend.IdentityKind
}

func (h *identityAccessHandler) exists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	rec, err := h.b.ReadIdentityAccess(ctx, req.Storage, h.kind, d.Get("name").(string))
	return rec != nil, err
}

func (h *identityAccessHandler) list(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := h.b.ListIdentityAccess(ctx, req.Storage, h.kind)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (h *identityAccessHandler) read(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	rec, err := h.b.ReadIdentityAccess(ctx, req.Storage, h.kind, d.Get("name").(string))
	if err != nil || rec == nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"access":  rec.Access,
		"created": timestamp(rec.Created),
		"updated": timestamp(rec.Updated),
	}}, nil
}

func (h *identityAccessHandler) write(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	access, ok := d.GetOk("access")
	if !ok {
		return logical.ErrorResponse("access is required (an empty string gives no access)"), nil
	}
	created, err := h.b.WriteIdentityAccess(ctx, req.Storage, h.kind, d.Get("name").(string), access.(string))
	if err != nil {
		return respond(err)
	}
	return &logical.Response{Data: map[string]any{"created": created}}, nil
}

func (h *identityAccessHandler) delete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := h.b.DeleteIdentityAccess(ctx, req.Storage, h.kind, d.Get("name").(string)); err != nil {
		return respond(err)
	}
	return nil, nil
}

const groupsListHelpSynopsis = "List the Vault identity groups given registry access on this service."

const groupsListHelpDescription = `
Lists group names. Use groups/<name> to read one group's access string.
`

const groupHelpSynopsis = "Registry access of the members of one Vault identity group."

const groupHelpDescription = `
"name" is the name of a Vault identity group: an internal group (members
listed in Vault) or an external group (members from an auth method, such as
LDAP groups mapped with a group alias). Write "access", an access string as
for users/<name>; "${user}" stands for the token's subject (config
identity_subject). An invalid entry is refused with a 400 naming it, and
nothing is stored.

A token from token/identity grants the union of the access of every group
the caller's entity belongs to, directly or through a parent group, plus
entities/<entity name> and anonymous_access. Changes apply to the next
token; a group that exists only here, or only in Vault, gives nothing.
`
