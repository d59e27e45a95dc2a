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
	h := &identityTokenHandler{b: b, secret: identityRefreshSecret(b), session: identitySessionSecret(b)}
	return append(ps, &framework.Path{
		Pattern: tokenapi.PathIdentityToken + "$",
		Fields: map[string]*framework.FieldSchema{
			tokenapi.FieldScope:           scopeField,
			tokenapi.FieldClientID:        clientIDField,
			tokenapi.FieldOfflineToken:    {Type: framework.TypeBool, Description: "Also return a refresh token (when config identity_refresh_tokens is on), bound to the caller's identity entity and Vault token."},
			tokenapi.FieldTTL:             ttlField,
			tokenapi.FieldIdentitySession: {Type: framework.TypeBool, Description: "Also return an identity session (godoauth-relay asks one): a secret that token/batch takes in place of this Vault token, as a Vault lease of this Vault token."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{Callback: h.token, Summary: "Mint a registry token for the Vault identity of the caller's token."},
		},
		HelpSynopsis:    identityTokenHelpSynopsis,
		HelpDescription: identityTokenHelpDescription,
	})
}

type identityTokenHandler struct {
	b       *backend.Backend
	secret  *framework.Secret
	session *framework.Secret
}

func (h *identityTokenHandler) token(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	session := d.Get(tokenapi.FieldIdentitySession).(bool)
	if session && d.Get(tokenapi.FieldOfflineToken).(bool) {
		return logical.ErrorResponse("%s and %s cannot be asked together: an answer carries one lease", tokenapi.FieldOfflineToken, tokenapi.FieldIdentitySession), nil
	}
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
	if session {
		return h.withSession(ctx, req, tok)
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

// withSession answers tok with a new identity session of the caller's
// entity, as a Vault lease of the caller's Vault token: Vault revokes it
// with that token.
func (h *identityTokenHandler) withSession(ctx context.Context, req *logical.Request, tok *backend.Token) (*logical.Response, error) {
	s, err := h.b.IssueIdentitySession(ctx, req.Storage, req.EntityID)
	if err != nil {
		return refuse(err)
	}
	data := tokenAnswer(tok).Data()
	data[tokenapi.FieldIdentitySession] = s.Secret
	data[tokenapi.FieldIdentitySessionTTL] = seconds(s.TTL)
	resp := h.session.Response(data, map[string]any{internalSessionID: s.ID})
	resp.Secret.TTL, resp.Secret.MaxTTL, resp.Secret.Renewable = s.TTL, s.TTL, false
	return resp, nil
}

// identitySessionSecret is the Vault lease of an identity session: Vault
// revokes it, and so the session, when the Vault token that asked for it
// is revoked or expires, when the lease ends, and on `vault lease revoke`.
// It cannot be renewed. Revoking a session that is gone succeeds.
func identitySessionSecret(b *backend.Backend) *framework.Secret {
	return &framework.Secret{
		Type: secretIdentitySession,
		Revoke: func(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
			id, _ := req.Secret.InternalData[internalSessionID].(string)
			return nil, b.RevokeIdentitySession(ctx, req.Storage, id)
		},
	}
}

// The session lease's type and what it keeps: the session's id (the
// SHA-256 of its secret), never the secret.
const (
	secretIdentitySession = "identity_session"
	internalSessionID     = "session_id"
)

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
Refresh it at token/refresh.
With identity_session true (what godoauth-relay asks), the answer also holds
identity_session, a secret that token/batch takes in place of this Vault
token, and identity_session_ttl (seconds), as a Vault lease of the caller's
Vault token for at most a minute: it ends when that Vault token is revoked
or expires. It cannot be asked together with offline_token;
400 when the Vault token has no entity (a root token) or a scope is
malformed; 403 from Vault itself when the token's policies lack update on
this path. An entity in no configured group gets a token with no access.
`
