package paths

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// identityPaths are the paths of Vault identities as registry users.
func identityPaths(b *backend.Backend) []*framework.Path {
	ps := append(groupPaths(b), entityPaths(b)...)
	h := &identityTokenHandler{b: b}
	return append(ps, &framework.Path{
		Pattern: tokenapi.PathIdentityToken + "$",
		Fields: map[string]*framework.FieldSchema{
			tokenapi.FieldScope:        scopeField,
			tokenapi.FieldClientID:     clientIDField,
			tokenapi.FieldOfflineToken: {Type: framework.TypeBool, Description: "Also return a refresh token, bound to the caller's identity entity."},
			tokenapi.FieldTTL:          ttlField,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{Callback: h.token, Summary: "Mint a registry token for the Vault identity of the caller's token."},
		},
		HelpSynopsis:    identityTokenHelpSynopsis,
		HelpDescription: identityTokenHelpDescription,
	})
}

type identityTokenHandler struct{ b *backend.Backend }

func (h *identityTokenHandler) token(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tok, err := h.b.MintForIdentity(ctx, req.Storage, backend.IdentityTokenRequest{
		Service:  service(req),
		EntityID: req.EntityID,
		ClientID: d.Get(tokenapi.FieldClientID).(string),
		Scopes:   d.Get(tokenapi.FieldScope).([]string),
		Offline:  d.Get(tokenapi.FieldOfflineToken).(bool),
		TTL:      time.Duration(d.Get(tokenapi.FieldTTL).(int)) * time.Second,
	})
	if err != nil {
		return refuse(err) // the token contract, as token and token/refresh
	}
	return tokenResponse(tok), nil
}

const identityTokenHelpSynopsis = "Mint a registry token for the Vault identity of the caller's own Vault token."

const identityTokenHelpDescription = `
Call this with a token from any Vault auth method (userpass, ldap, oidc, jwt
for CI jobs, approle, kubernetes…): no registry password is involved. The
token's identity entity and its groups (direct and inherited) are read from
Vault's identity store; the grant is the union of the access of
groups/<group> for each of those groups, of entities/<entity name>, and of
anonymous_access, intersected with each requested scope.

The subject (sub, and what ${user} stands for) is the entity's name, or with
config identity_subject=alias_name the entity's alias name on the auth mount
identity_alias_mount (an entity without an alias there keeps its entity name,
and ${user} then matches nothing).

Outcomes: 200 with token, access_token, expires_in, issued_at, and
refresh_token when offline_token is true and refresh tokens are on (refresh
it at token/refresh; it is refused once the entity is deleted or disabled);
400 when the Vault token has no entity (a root token) or a scope is
malformed; 403 from Vault itself when the token's policies lack update on
this path. An entity in no configured group gets a token with no access.
`
