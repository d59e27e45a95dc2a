package paths

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-registry/backend"
)

func tokenPaths(b *backend.Backend) []*framework.Path {
	h := &tokenHandler{b: b}
	scope := &framework.FieldSchema{Type: framework.TypeStringSlice, Description: `Requested scopes, "type[(class)]:name:actions"; each item may hold several separated by spaces.`}
	clientID := &framework.FieldSchema{Type: framework.TypeString, Description: "The client's id (docker, containerd…); recorded with refresh tokens for auditing."}
	ttl := &framework.FieldSchema{Type: framework.TypeDurationSecond, Description: "Token lifetime; default the config's ttl, clamped to max_ttl."}
	return []*framework.Path{
		{
			Pattern: "token/refresh$",
			Fields: map[string]*framework.FieldSchema{
				"refresh_token": {Type: framework.TypeString, Description: "A refresh token from an earlier token request with offline_token.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
				"scope":         scope,
				"client_id":     clientID,
				"ttl":           ttl,
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.refresh, Summary: "Mint a registry token from a refresh token."},
			},
			HelpSynopsis:    refreshHelpSynopsis,
			HelpDescription: refreshHelpDescription,
		},
		{
			Pattern: "token$",
			Fields: map[string]*framework.FieldSchema{
				"username":      {Type: framework.TypeString, Description: "User name; empty asks for anonymous access."},
				"password":      {Type: framework.TypeString, Description: "The user's password.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
				"scope":         scope,
				"account":       {Type: framework.TypeString, Description: "The account the client names; if given with username they must match."},
				"client_id":     clientID,
				"offline_token": {Type: framework.TypeBool, Description: "Also return a refresh token (docker login's identity token)."},
				"ttl":           ttl,
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.token, Summary: "Authenticate a user and mint a registry token."},
			},
			HelpSynopsis:    tokenHelpSynopsis,
			HelpDescription: tokenHelpDescription,
		},
	}
}

type tokenHandler struct{ b *backend.Backend }

func (h *tokenHandler) token(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tok, err := h.b.Mint(ctx, req.Storage, backend.TokenRequest{
		Service:  service(req),
		Username: d.Get("username").(string),
		Password: d.Get("password").(string),
		Account:  d.Get("account").(string),
		ClientID: d.Get("client_id").(string),
		Scopes:   d.Get("scope").([]string),
		Offline:  d.Get("offline_token").(bool),
		TTL:      time.Duration(d.Get("ttl").(int)) * time.Second,
	})
	if err != nil {
		return respond(err)
	}
	return tokenResponse(tok), nil
}

func (h *tokenHandler) refresh(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	rr := backend.RefreshRequest{
		Service:      service(req),
		RefreshToken: d.Get("refresh_token").(string),
		ClientID:     d.Get("client_id").(string),
		Scopes:       d.Get("scope").([]string),
		TTL:          time.Duration(d.Get("ttl").(int)) * time.Second,
	}
	mint := h.b.MintFromRefresh
	if backend.IsIdentityRefreshToken(rr.RefreshToken) {
		mint = h.b.MintFromIdentityRefresh // a Vault identity's (identity_token.go)
	}
	tok, err := mint(ctx, req.Storage, rr)
	if err != nil {
		return respond(err)
	}
	return tokenResponse(tok), nil
}

func tokenResponse(t *backend.Token) *logical.Response {
	data := map[string]any{
		"token":        t.JWT,
		"access_token": t.JWT,
		"expires_in":   seconds(t.ExpiresIn),
		"issued_at":    timestamp(t.IssuedAt),
	}
	if t.RefreshToken != "" {
		data["refresh_token"] = t.RefreshToken
	}
	return &logical.Response{Data: data}
}

const tokenHelpSynopsis = "Authenticate a registry user and mint a bearer token for the registry."

const tokenHelpDescription = `
The relay (godoauth-relay) calls this for each registry token request. The
grant is the union of the user's access entries (and anonymous_access) that
match each requested scope, intersected with the requested actions.

Outcomes: 200 with token, access_token, expires_in, issued_at (and
refresh_token when offline_token is true and refresh tokens are on); 400 for
a malformed scope, naming it; 401 for an unknown user or a wrong password
(alike in answer and in time), or no credentials without anonymous access;
429 for a locked-out user, or when too many password checks are running.
A request with credentials and no scope is a login: its token grants nothing.
`

const refreshHelpSynopsis = "Mint a registry token from a refresh token."

const refreshHelpDescription = `
The refresh token must be live and issued by this mount, to a user whose
password has not changed since; any client_id may present it (the issuing and
the last client are recorded, see users/<name>/refresh-tokens). The token carries the user's access as it is now. The same refresh
token is returned. A bad, expired or revoked refresh token is a 400 "invalid
refresh token".
`
