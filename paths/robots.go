package paths

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

// robotSecretType is the Vault secret type of creds/<role>'s leases.
const robotSecretType = "robot"

// Internal data a robot's lease carries to its renew and revoke.
const (
	leaseRobot = "robot"
	leaseRole  = "role"
)

// roleName matches any path segment, so that an invalid name gets a 400
// naming it rather than Vault's bare 404 for an unknown path.
const roleName = `(?P<name>[^/]+)`

func robotPaths(b *backend.Backend) []*framework.Path {
	h := &robotHandler{b: b}
	name := &framework.FieldSchema{Type: framework.TypeString, Description: "Role name: 1 to 64 letters, digits, _ and -."}
	return []*framework.Path{
		{
			Pattern: "roles/?$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: h.listRoles, Summary: "List the robot roles."},
			},
			HelpSynopsis:    rolesListHelpSynopsis,
			HelpDescription: rolesListHelpDescription,
		},
		{
			Pattern: "roles/" + roleName + "/robots/?$",
			Fields:  map[string]*framework.FieldSchema{"name": name},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: h.listRobots, Summary: "List the role's live robots with their issue and expiry times."},
			},
			HelpSynopsis:    robotsListHelpSynopsis,
			HelpDescription: robotsListHelpDescription,
		},
		{
			Pattern: "roles/" + roleName + "$",
			Fields: map[string]*framework.FieldSchema{
				"name":        name,
				"access":      {Type: framework.TypeString, Description: `Access string, as users have ("${user}" is the robot's name), e.g. "repository:team/*:pull,push".`},
				"ttl":         {Type: framework.TypeDurationSecond, Description: "Lease TTL of a robot; default the mount's default lease TTL."},
				"max_ttl":     {Type: framework.TypeDurationSecond, Description: "Longest life of a robot, renewals included; default the mount's max lease TTL."},
				"registry":    {Type: framework.TypeCommaStringSlice, Description: `Registry hosts ("host" or "host:port") that creds' dockerconfigjson logs in to; none: no dockerconfigjson.`},
				"name_prefix": {Type: framework.TypeString, Description: `Start of the robots' user names (default "robot-"); the role's name and a random part follow.`},
			},
			ExistenceCheck: h.roleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: h.writeRole, Summary: "Create a robot role."},
				logical.UpdateOperation: &framework.PathOperation{Callback: h.writeRole, Summary: "Change a robot role; fields not given keep their values. Live robots get the new access at their next token."},
				logical.ReadOperation:   &framework.PathOperation{Callback: h.readRole, Summary: "Read a robot role."},
				logical.DeleteOperation: &framework.PathOperation{Callback: h.deleteRole, Summary: "Delete a robot role; its robots are refused at once."},
			},
			HelpSynopsis:    roleHelpSynopsis,
			HelpDescription: roleHelpDescription,
		},
		{
			Pattern: "creds/" + roleName + "$",
			Fields:  map[string]*framework.FieldSchema{"name": name},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: h.creds, Summary: "Make a robot of the role, under a lease."},
			},
			HelpSynopsis:    credsHelpSynopsis,
			HelpDescription: credsHelpDescription,
		},
	}
}

// robotSecret is the lease of a robot (Secrets lists it).
func robotSecret(b *backend.Backend) *framework.Secret { return (&robotHandler{b: b}).secret() }

// secret is the secret type of a robot's lease.
func (h *robotHandler) secret() *framework.Secret {
	return &framework.Secret{
		Type: robotSecretType,
		Fields: map[string]*framework.FieldSchema{
			"username":         {Type: framework.TypeString, Description: "The robot's user name."},
			"password":         {Type: framework.TypeString, Description: "The robot's secret: 256 random bits.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
			"expires_at":       {Type: framework.TypeString, Description: "When the robot ends unless its lease is renewed (RFC 3339)."},
			"dockerconfigjson": {Type: framework.TypeString, Description: "A Docker config.json logging the robot in to the role's registries.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		},
		Renew:  h.renew,
		Revoke: h.revoke,
	}
}

type robotHandler struct{ b *backend.Backend }

func (h *robotHandler) limits() backend.LeaseLimits {
	sys := h.b.SystemView()
	return backend.LeaseLimits{DefaultTTL: sys.DefaultLeaseTTL(), MaxTTL: sys.MaxLeaseTTL()}
}

func (h *robotHandler) roleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	r, err := h.b.ReadRole(ctx, req.Storage, d.Get("name").(string))
	return r != nil, err
}

func (h *robotHandler) listRoles(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := h.b.ListRoles(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (h *robotHandler) readRole(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := backend.CheckRoleName(name); err != nil {
		return respond(err)
	}
	r, err := h.b.ReadRole(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	registries := r.Registries
	if registries == nil {
		registries = []string{}
	}
	return &logical.Response{Data: map[string]any{
		"access":      r.Access,
		"ttl":         seconds(r.TTL),
		"max_ttl":     seconds(r.MaxTTL),
		"registry":    registries,
		"name_prefix": r.NamePrefix,
		"created":     timestamp(r.Created),
		"updated":     timestamp(r.Updated),
	}}, nil
}

func (h *robotHandler) writeRole(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	var up backend.RoleUpdate
	if v, ok := d.GetOk("access"); ok {
		s := v.(string)
		up.Access = &s
	}
	for field, dst := range map[string]**time.Duration{"ttl": &up.TTL, "max_ttl": &up.MaxTTL} {
		if v, ok := d.GetOk(field); ok {
			t := time.Duration(v.(int)) * time.Second
			*dst = &t
		}
	}
	if v, ok := d.GetOk("registry"); ok {
		hosts := v.([]string)
		up.Registries = &hosts
	}
	if v, ok := d.GetOk("name_prefix"); ok {
		s := v.(string)
		up.NamePrefix = &s
	}
	if _, err := h.b.WriteRole(ctx, req.Storage, d.Get("name").(string), up, h.limits()); err != nil {
		return respond(err)
	}
	return nil, nil
}

func (h *robotHandler) deleteRole(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := h.b.DeleteRole(ctx, req.Storage, d.Get("name").(string)); err != nil {
		return respond(err)
	}
	return nil, nil
}

func (h *robotHandler) listRobots(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	robots, err := h.b.ListRobots(ctx, req.Storage, d.Get("name").(string))
	if err != nil {
		return respond(err)
	}
	keys := make([]string, 0, len(robots))
	info := make(map[string]any, len(robots))
	for _, rb := range robots {
		keys = append(keys, rb.Name)
		info[rb.Name] = map[string]any{"issued": timestamp(rb.Issued), "expires": timestamp(rb.Expires)}
	}
	return logical.ListResponseWithInfo(keys, info), nil
}

// leaseTTL is a robot's lease TTL as Vault will set it: the role's ttl
// (or the mount's default), a renewal's increment, capped by the role's
// max_ttl and the mount's from the lease's issue time.
func (h *robotHandler) leaseTTL(r *backend.Role, increment time.Duration, issued time.Time) (time.Duration, error) {
	ttl, _, err := framework.CalculateTTL(h.b.SystemView(), increment, r.TTL, 0, r.MaxTTL, 0, issued)
	return ttl, err
}

func (h *robotHandler) creds(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	var ttl time.Duration
	r, err := h.b.ReadRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if r != nil {
		if ttl, err = h.leaseTTL(r, 0, time.Time{}); err != nil {
			return nil, err
		}
	}
	c, err := h.b.IssueRobot(ctx, req.Storage, name, ttl)
	if err != nil {
		return respond(err)
	}
	data := map[string]any{
		"username":   c.Name,
		"password":   c.Password,
		"expires_at": timestamp(c.Expires),
	}
	if len(c.Registries) > 0 {
		cfg, err := backend.DockerConfigJSON(c.Registries, c.Name, c.Password)
		if err != nil {
			return nil, err
		}
		data["dockerconfigjson"] = cfg
	}
	resp := h.secret().Response(data, map[string]any{leaseRobot: c.Name, leaseRole: c.Role})
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = c.MaxTTL
	return resp, nil
}

func (h *robotHandler) renew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	name, _ := req.Secret.InternalData[leaseRobot].(string)
	r, ttl, err := h.b.RenewRobot(ctx, req.Storage, name, func(r *backend.Role) (time.Duration, error) {
		return h.leaseTTL(r, req.Secret.Increment, req.Secret.IssueTime)
	})
	if err != nil {
		return respond(err)
	}
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = r.MaxTTL
	return resp, nil
}

func (h *robotHandler) revoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	name, _ := req.Secret.InternalData[leaseRobot].(string)
	role, _ := req.Secret.InternalData[leaseRole].(string)
	if err := h.b.RevokeRobot(ctx, req.Storage, name, role); err != nil {
		return respond(err)
	}
	return nil, nil
}

const rolesListHelpSynopsis = "List the robot roles."

const rolesListHelpDescription = `
Lists role names. A role says what its robots may do; creds/<role> makes a
robot of it under a Vault lease.
`

const roleHelpSynopsis = "Manage a robot role: access, lease TTLs, registry hosts, name prefix."

const roleHelpDescription = `
Write "access" (the access string users have; "${user}" is the robot's
name), and optionally "ttl" and "max_ttl" (default: the mount's lease TTLs;
ttl may not exceed max_ttl, neither may exceed the mount's max_lease_ttl),
"registry" (host or host:port names, comma separated: creds then answers a
dockerconfigjson for them) and "name_prefix" (default "robot-").

A robot's access is its role's at each token request: a change reaches live
robots at their next token. Deleting the role refuses its robots at once
(401, as an unknown user); a role created again under the name does not
revive them.
`

const robotsListHelpSynopsis = "List a role's live robots (never their secrets)."

const robotsListHelpDescription = `
LIST shows each live robot's user name with its issued and expires times.
A robot ends when its lease is revoked or expires, or its role is deleted.
`

const credsHelpSynopsis = "Make a robot account: a user name and secret under a Vault lease."

const credsHelpDescription = `
Reading creds/<role> makes a robot: username (name_prefix, the role's name
and a random part), password (256 random bits), expires_at and, when the
role names registries, dockerconfigjson: a Docker config.json for them, as a
kubernetes.io/dockerconfigjson secret holds it. The answer is a lease of the
role's ttl: "vault lease renew" extends it up to max_ttl; revoking it, or
its expiry, ends the robot: its logins and refresh tokens are refused from
that moment. The robot logs in as a user does (docker login, Basic
credentials at the relay).
`
