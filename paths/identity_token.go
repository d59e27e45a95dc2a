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
	h := &identityTokenHandler{b: b, secret: identityRefreshSecret(b)}
	return append(ps, &framework.Path{
		Pattern: tokenapi.PathIdentityToken + "$",
		Fields: map[string]*framework.FieldSchema{
			tokenapi.FieldScope:        scopeField,
			tokenapi.FieldClientID:     clientIDField,
			tokenapi.FieldOfflineToken: {Type: framework.TypeBool, Description: "Also return a refresh token (when config identity_refresh_tokens is on), bound to the caller's identity entity and Vault token."},
			tokenapi.FieldTTL:          ttlField,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{Callback: h.token, Summary: "Mint a registry token for the Vault identity of the caller's token."},
		},
		HelpSynopsis:    identityTokenHelpSynopsis,
		HelpDescription: identityTokenHelpDescription,
	})
}

type identityTokenHandler struct {
	b      *backend.Backend
	secret *framework.Secret
}

func (h *identityTokenHandler) token(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tok, err := h.b.TokenForIdentity(ctx, req.Storage, backend.IdentityTokenRequest{
		Service:  service(req),
		EntityID: req.EntityID,
		Accessor: req.ClientTokenAccessor,
		ClientID: d.Get(tokenapi.FieldClientID).(string),
		Scopes:   d.Get(tokenapi.FieldScope).([]string),
		Offline:  d.Get(tokenapi.FieldOfflineToken).(bool),
		TTL:      time.Duration(d.Get(tokenapi.FieldTTL).(int)) * time.Second,
	})
	if err != nil {
		return refuse(err) // the token contract, as token and token/refresh
	}
	rt := tok.IssuedRefresh
	if rt == nil {
		return tokenResponse(tok), nil
	}
	// The refresh token as a Vault lease of the caller's Vault token.
	resp := h.secret.Response(tokenAnswer(tok).Data(), map[string]any{
		internalEntityID:       rt.Subject.ID,
		internalRefreshTokenID: rt.Hash,
	})
	resp.Secret.TTL, resp.Secret.MaxTTL = rt.TTL, rt.TTL
	return resp, nil
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
refresh_token when offline_token is true and config identity_refresh_tokens
is on. Such an answer is a Vault lease (lease_id, lease_duration) of the
caller's Vault token: the refresh token ends when that Vault token is
revoked or expires, when the lease is revoked, after
identity_refresh_token_ttl, when the operator revokes it
(entities/<name>/refresh-tokens), when refresh_tokens_per_user newer ones
are issued to the entity, and when the entity is deleted or disabled.
Refresh it at token/refresh;
400 when the Vault token has no entity (a root token) or a scope is
malformed; 403 from Vault itself when the token's policies lack update on
this path. An entity in no configured group gets a token with no access.
`
