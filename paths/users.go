package paths

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/backend"
)

func userPaths(b *backend.Backend) []*framework.Path {
	h := &userHandler{b: b}
	name := &framework.FieldSchema{Type: framework.TypeString, Description: "User name: letters, digits, _ - . @ (e-mail addresses work)."}
	return []*framework.Path{
		{
			Pattern: "users/?$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: h.list, Summary: "List the user names."},
			},
			HelpSynopsis:    usersListHelpSynopsis,
			HelpDescription: usersListHelpDescription,
		},
		{
			Pattern: "users/(?P<name>" + access.UserNamePattern + ")$",
			Fields: map[string]*framework.FieldSchema{
				"name":          name,
				"password":      {Type: framework.TypeString, Description: "Write-only. Stored as a bcrypt hash and never returned. At most 72 bytes.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
				"password_hash": {Type: framework.TypeString, Description: "Write-only alternative to password: an existing bcrypt hash ($2a$, $2b$, $2y$), for migrations.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
				"access":        {Type: framework.TypeString, Description: `Access string: entries "type:pattern:actions" joined by ";", e.g. "repository:linux/app:*;repository:${user}/**:push,pull;registry:catalog:*".`},
			},
			ExistenceCheck: h.exists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: h.write, Summary: "Create a user."},
				logical.UpdateOperation: &framework.PathOperation{Callback: h.write, Summary: "Change a user's password or access; fields not given keep their values."},
				logical.ReadOperation:   &framework.PathOperation{Callback: h.read, Summary: "Read a user's access, created and updated times, and bcrypt cost."},
				logical.DeleteOperation: &framework.PathOperation{Callback: h.delete, Summary: "Delete a user and revoke the user's refresh tokens."},
			},
			HelpSynopsis:    userHelpSynopsis,
			HelpDescription: userHelpDescription,
		},
	}
}

type userHandler struct{ b *backend.Backend }

func (h *userHandler) exists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	u, err := h.b.ReadUser(ctx, req.Storage, d.Get("name").(string))
	return u != nil, err
}

func (h *userHandler) list(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := h.b.ListUsers(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (h *userHandler) read(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	u, err := h.b.ReadUser(ctx, req.Storage, d.Get("name").(string))
	if err != nil || u == nil {
		return nil, err
	}
	data := map[string]any{
		"access":      u.Access,
		"created":     timestamp(u.Created),
		"updated":     timestamp(u.Updated),
		"bcrypt_cost": u.BcryptCost(),
	}
	if !u.Lockout.Until.IsZero() && h.b.Now().Before(u.Lockout.Until) {
		data["locked_until"] = timestamp(u.Lockout.Until)
	}
	return &logical.Response{Data: data}, nil
}

func (h *userHandler) write(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	var up backend.UserUpdate
	if v, ok := d.GetOk("password"); ok {
		s := v.(string)
		up.Password = &s
	}
	if v, ok := d.GetOk("password_hash"); ok {
		s := v.(string)
		up.PasswordHash = &s
	}
	if v, ok := d.GetOk("access"); ok {
		s := v.(string)
		up.Access = &s
	} else if req.Operation == logical.CreateOperation {
		empty := ""
		up.Access = &empty
	}
	change, err := h.b.WriteUser(ctx, req.Storage, d.Get("name").(string), up)
	if err != nil {
		return respond(err)
	}
	return &logical.Response{Data: map[string]any{
		"created":          change.Created,
		"password_changed": change.PasswordChanged,
		"access_changed":   change.AccessChanged,
	}}, nil
}

func (h *userHandler) delete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := h.b.DeleteUser(ctx, req.Storage, d.Get("name").(string)); err != nil {
		return respond(err)
	}
	return nil, nil
}

const usersListHelpSynopsis = "List the users of this registry service."

const usersListHelpDescription = `
Lists user names. Use users/<name> to read one user's access.
`

const userHelpSynopsis = "Manage one user: password (stored as a bcrypt hash) and access string."

const userHelpDescription = `
Write "password" (or "password_hash", an existing bcrypt hash) and "access".
The access string is godoauth's, extended:

  entry   = type ":" pattern ":" actions      entries joined by ";"
  type    = repository | registry | *
  actions = pull, push, delete or *, joined by ","

A pattern is an exact name or a glob: "*" matches any run but "/", "**" any
run including "/", "?" one character but "/"; "${user}" is the user's name.
An invalid entry is refused with a 400 naming it, and nothing is stored.

Reads return access, created, updated, bcrypt_cost (the stored hash's cost:
a hash of another cost than the config's is rehashed at the user's next
successful login) and locked_until while the user is locked out; never the
password or its hash. Changing the password unlocks the user and ends the
user's refresh tokens; so does deleting the user (a user created again under
the name does not inherit them).
`
