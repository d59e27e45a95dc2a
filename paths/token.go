package paths

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Field schemas of the token paths; token/batch parses each of its
// requests with the same ones, and token/identity shares the common ones.
var (
	scopeField    = &framework.FieldSchema{Type: framework.TypeStringSlice, Description: `Requested scopes, "type[(class)]:name:actions"; each item may hold several separated by spaces.`}
	clientIDField = &framework.FieldSchema{Type: framework.TypeString, Description: "The client's id (docker, containerd…); recorded with refresh tokens for auditing."}
	ttlField      = &framework.FieldSchema{Type: framework.TypeDurationSecond, Description: "Token lifetime; default the config's ttl, clamped to max_ttl."}
	addrField     = &framework.FieldSchema{Type: framework.TypeString, Description: "The registry client's IP address as the relay saw it; access entries with networks (…@10.0.0.0/8) match it. Absent: unknown, so conditioned allows do not apply and conditioned denies do."}

	refreshFields = map[string]*framework.FieldSchema{
		tokenapi.FieldRefreshToken: {Type: framework.TypeString, Description: "A refresh token from an earlier token request with offline_token.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		tokenapi.FieldScope:        scopeField,
		tokenapi.FieldClientID:     clientIDField,
		tokenapi.FieldTTL:          ttlField,
		tokenapi.FieldClientAddr:   addrField,
	}
	tokenFields = map[string]*framework.FieldSchema{
		tokenapi.FieldUsername:     {Type: framework.TypeString, Description: "User name; empty asks for anonymous access."},
		tokenapi.FieldPassword:     {Type: framework.TypeString, Description: "The user's password.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		tokenapi.FieldScope:        scopeField,
		tokenapi.FieldAccount:      {Type: framework.TypeString, Description: "The account the client names; if given with username they must match."},
		tokenapi.FieldClientID:     clientIDField,
		tokenapi.FieldOfflineToken: {Type: framework.TypeBool, Description: "Also return a refresh token (docker login's identity token)."},
		tokenapi.FieldTTL:          ttlField,
		tokenapi.FieldClientAddr:   addrField,
	}
)

func tokenPaths(b *backend.Backend) []*framework.Path {
	h := &tokenHandler{b: b}
	return []*framework.Path{
		{
			Pattern: tokenapi.PathRefresh + "$",
			Fields:  refreshFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.refresh, Summary: "Mint a registry token from a refresh token."},
			},
			HelpSynopsis:    refreshHelpSynopsis,
			HelpDescription: refreshHelpDescription,
		},
		{
			Pattern: tokenapi.PathToken + "$",
			Fields:  tokenFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.token, Summary: "Authenticate a user and mint a registry token."},
			},
			HelpSynopsis:    tokenHelpSynopsis,
			HelpDescription: tokenHelpDescription,
		},
		{
			Pattern: tokenapi.PathTokenBatch + "$",
			Fields: map[string]*framework.FieldSchema{
				tokenapi.FieldRequests: {Type: framework.TypeSlice, Description: "The token requests: objects with the fields of token, or of token/refresh when they hold refresh_token."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.batch, Summary: "Mint several registry tokens in one call."},
			},
			HelpSynopsis:    batchHelpSynopsis,
			HelpDescription: batchHelpDescription,
		},
	}
}

type tokenHandler struct{ b *backend.Backend }

func (h *tokenHandler) token(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tok, err := h.tokenFromFields(ctx, req, d)
	if err != nil {
		return refuse(err)
	}
	return tokenResponse(tok), nil
}

func (h *tokenHandler) refresh(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tok, err := h.tokenFromRefreshFields(ctx, req, d)
	if err != nil {
		return refuse(err)
	}
	return tokenResponse(tok), nil
}

// tokenFromFields reads a token request with a login (d has tokenFields)
// and has the backend answer it (backend.TokenForLogin).
func (h *tokenHandler) tokenFromFields(ctx context.Context, req *logical.Request, d *framework.FieldData) (*backend.Token, error) {
	addr, err := backend.ParseClientAddr(d.Get(tokenapi.FieldClientAddr).(string))
	if err != nil {
		return nil, err
	}
	return h.b.TokenForLogin(ctx, req.Storage, backend.TokenRequest{
		ClientAddr: addr,
		Service:    service(req),
		Username:   d.Get(tokenapi.FieldUsername).(string),
		Password:   d.Get(tokenapi.FieldPassword).(string),
		Account:    d.Get(tokenapi.FieldAccount).(string),
		ClientID:   d.Get(tokenapi.FieldClientID).(string),
		Scopes:     d.Get(tokenapi.FieldScope).([]string),
		Offline:    d.Get(tokenapi.FieldOfflineToken).(bool),
		TTL:        time.Duration(d.Get(tokenapi.FieldTTL).(int)) * time.Second,
	})
}

// tokenFromRefreshFields reads a token request with a refresh token (d
// has refreshFields), a user's, a robot's or a Vault identity's, and has
// the backend answer it (backend.TokenForRefreshToken).
func (h *tokenHandler) tokenFromRefreshFields(ctx context.Context, req *logical.Request, d *framework.FieldData) (*backend.Token, error) {
	addr, err := backend.ParseClientAddr(d.Get(tokenapi.FieldClientAddr).(string))
	if err != nil {
		return nil, err
	}
	rr := backend.RefreshRequest{
		ClientAddr:   addr,
		Service:      service(req),
		RefreshToken: d.Get(tokenapi.FieldRefreshToken).(string),
		ClientID:     d.Get(tokenapi.FieldClientID).(string),
		Scopes:       d.Get(tokenapi.FieldScope).([]string),
		TTL:          time.Duration(d.Get(tokenapi.FieldTTL).(int)) * time.Second,
	}
	return h.b.TokenForRefreshToken(ctx, req.Storage, rr)
}

func tokenResponse(t *backend.Token) *logical.Response {
	return &logical.Response{Data: tokenAnswer(t).Data()}
}

func tokenAnswer(t *backend.Token) *tokenapi.Answer {
	a := &tokenapi.Answer{
		Token:        t.JWT,
		AccessToken:  t.JWT,
		ExpiresIn:    seconds(t.ExpiresIn),
		IssuedAt:     timestamp(t.IssuedAt),
		RefreshToken: t.RefreshToken,
		Subject:      t.Subject,
		Issuer:       t.Issuer,
		Access:       make([]tokenapi.Grant, len(t.Access)),
	}
	for i, g := range t.Access {
		a.Access[i] = tokenapi.Grant{Type: g.Type, Name: g.Name, Actions: g.Actions}
	}
	return a
}

const tokenHelpSynopsis = "Authenticate a registry user and mint a bearer token for the registry."

const tokenHelpDescription = `
The relay (godoauth-relay) calls this for each registry token request. The
grant is the union of the user's access entries (and anonymous_access) that
match each requested scope, intersected with the requested actions.

Outcomes: 200 with token, access_token, expires_in, issued_at, sub, iss and
the granted access (and refresh_token when offline_token is true and refresh
tokens are on); 400 for a malformed scope, naming it; 401 for an unknown user
or a wrong password (alike in answer and in time), or no credentials without
anonymous access; 429 for a locked-out user, or when too many password checks
are running. A refusal's data holds a code (invalid_request, invalid_scope,
invalid_credentials, invalid_grant, locked_out, busy), the message and, for
429, retry_after in seconds: programs read the code, never the message.
A request with credentials and no scope is a login: its token grants nothing.
`

const refreshHelpSynopsis = "Mint a registry token from a refresh token."

const refreshHelpDescription = `
The refresh token must be live and issued by this mount: to a user whose
password has not changed since, or by token/identity to a Vault identity
entity that Vault still has, enabled, while identity_refresh_tokens is on
and the Vault token that asked for it lives. Any client_id may present it
(the issuing and the last client are recorded, see users/<name>/refresh-tokens
and entities/<name>/refresh-tokens). The token carries the subject's access
as it is now. The same refresh token is returned. A bad, expired or revoked
refresh token is a 400 "invalid refresh token".
`
