package paths

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/backend"
)

// refreshTokenPaths list and revoke the refresh tokens of one subject: a
// user, or a Vault identity entity by its name or its id. The store is one
// (backend/refresh.go), so each path only says whose tokens it means.
func refreshTokenPaths(b *backend.Backend) []*framework.Path {
	h := &refreshTokensHandler{b: b}
	return []*framework.Path{
		h.path("users/(?P<name>"+access.UserNamePattern+")/refresh-tokens/?$",
			&framework.FieldSchema{Type: framework.TypeString, Description: "User name."},
			func(_ context.Context, _ *logical.Request, name string) ([]backend.Subject, error) {
				return []backend.Subject{backend.UserSubject(name)}, nil
			},
			"the user's", userRefreshTokensHelpSynopsis, userRefreshTokensHelpDescription),
		h.path("entities/id/(?P<name>"+backend.EntityIDPattern+")/refresh-tokens/?$",
			&framework.FieldSchema{Type: framework.TypeString, Description: "The id of a Vault identity entity, as `vault read identity/entity/name/<name>` shows it; also for an entity Vault no longer has."},
			func(_ context.Context, _ *logical.Request, id string) ([]backend.Subject, error) {
				return []backend.Subject{backend.EntitySubject(id)}, nil
			},
			"the entity's", entityIDRefreshTokensHelpSynopsis, entityRefreshTokensHelpDescription),
		h.path("entities/(?P<name>"+access.UserNamePattern+")/refresh-tokens/?$",
			&framework.FieldSchema{Type: framework.TypeString, Description: "The name of a Vault identity entity, as Vault names it now."},
			func(ctx context.Context, req *logical.Request, name string) ([]backend.Subject, error) {
				return b.EntitySubjects(ctx, req.Storage, name)
			},
			"the entity's", entityRefreshTokensHelpSynopsis, entityRefreshTokensHelpDescription),
	}
}

type refreshTokensHandler struct{ b *backend.Backend }

// subjectsOf says whose tokens a path's name means.
type subjectsOf func(ctx context.Context, req *logical.Request, name string) ([]backend.Subject, error)

func (h *refreshTokensHandler) path(pattern string, name *framework.FieldSchema, subjects subjectsOf, whose, syn, desc string) *framework.Path {
	return &framework.Path{
		Pattern: pattern,
		Fields:  map[string]*framework.FieldSchema{"name": name},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ListOperation: &framework.PathOperation{Callback: h.list(subjects),
				Summary: "List " + whose + " live refresh tokens (never the tokens themselves)."},
			logical.DeleteOperation: &framework.PathOperation{Callback: h.revoke(subjects),
				Summary: "Revoke all " + whose + " refresh tokens."},
		},
		HelpSynopsis:    syn,
		HelpDescription: desc,
	}
}

func (h *refreshTokensHandler) list(subjects subjectsOf) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		subs, err := subjects(ctx, req, d.Get("name").(string))
		if err != nil {
			return respond(err)
		}
		keys := []string{}
		info := map[string]any{}
		for _, sub := range subs {
			tokens, err := h.b.ListRefreshTokens(ctx, req.Storage, sub)
			if err != nil {
				return respond(err)
			}
			for _, t := range tokens {
				keys = append(keys, t.ID)
				i := map[string]any{
					"client_id":      t.ClientID,
					"created":        timestamp(t.Created),
					"expires":        timestamp(t.Expires),
					"last_client_id": t.LastClientID,
					"last_used":      timestamp(t.LastUsed),
				}
				if t.EntityID != "" {
					i["entity_id"], i["accessor"] = t.EntityID, t.Accessor
				}
				info[t.ID] = i
			}
		}
		return logical.ListResponseWithInfo(keys, info), nil
	}
}

func (h *refreshTokensHandler) revoke(subjects subjectsOf) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		subs, err := subjects(ctx, req, d.Get("name").(string))
		if err != nil {
			return respond(err)
		}
		revoked := 0
		for _, sub := range subs {
			n, err := h.b.RevokeRefreshTokens(ctx, req.Storage, sub)
			revoked += n
			if err != nil {
				return respond(err)
			}
		}
		return &logical.Response{Data: map[string]any{"revoked": revoked}}, nil
	}
}

// identityRefreshSecret is the Vault lease of an identity's refresh token
// (token/identity with offline_token): Vault revokes it, and so the
// refresh token, when the Vault token that asked for it is revoked or
// expires, when the lease ends (identity_refresh_token_ttl), and on
// `vault lease revoke`. It cannot be renewed.
func identityRefreshSecret(b *backend.Backend) *framework.Secret {
	return &framework.Secret{
		Type: secretIdentityRefreshToken,
		Revoke: func(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
			id, _ := req.Secret.InternalData[internalEntityID].(string)
			hash, _ := req.Secret.InternalData[internalRefreshTokenID].(string)
			err := b.RevokeRefreshToken(ctx, req.Storage, backend.EntitySubject(id), hash)
			if e, ok := backend.AsError(err); ok && e.Kind == backend.KindBadRequest {
				// Names no refresh token: nothing to revoke, and a retry
				// would not change that.
				b.Logger().Warn("a refresh token's lease names no refresh token", "error", err)
				return nil, nil
			}
			if err != nil {
				return respond(err)
			}
			return nil, nil
		},
	}
}

// The lease's type and what it keeps to find its refresh token: the
// entity's id and the token's hash, never the token.
const (
	secretIdentityRefreshToken = "identity_refresh_token"
	internalEntityID           = "entity_id"
	internalRefreshTokenID     = "refresh_token_id"
)

// Secrets are the kinds of Vault lease the plugin's answers carry.
func Secrets(b *backend.Backend) []*framework.Secret {
	return []*framework.Secret{identityRefreshSecret(b), robotSecret(b), identitySessionSecret(b)}
}

const userRefreshTokensHelpSynopsis = "List or revoke a user's refresh tokens."

const userRefreshTokensHelpDescription = `
LIST shows each refresh token's id (the start of its SHA-256; the token itself
is never stored), client_id (the client it was issued to), created, expires,
last_client_id and last_used (the last client that refreshed with it, and
when, to the hour; empty until first used). A refresh token works from any
client_id: the id is for auditing only. DELETE revokes them all: the clients
holding them must log in again with the password. A user holds at most
refresh_tokens_per_user live tokens: a new one past that revokes the oldest.
`

const entityRefreshTokensHelpSynopsis = "List or revoke the refresh tokens of a Vault identity entity, by its name."

const entityIDRefreshTokensHelpSynopsis = "List or revoke the refresh tokens of a Vault identity entity, by its id."

const entityRefreshTokensHelpDescription = `
Refresh tokens of Vault identities come from token/identity with
offline_token, when config identity_refresh_tokens is on. LIST shows, for
each live one, its id (the start of its SHA-256), entity_id, accessor (of the
Vault token that asked for it; empty for a token issued before v0.2.0),
client_id, created, expires, last_client_id and last_used. DELETE revokes
them all and answers how many.

entities/<name>/refresh-tokens means the entity Vault names so now;
entities/id/<entity id>/refresh-tokens also reaches the tokens of an entity
Vault no longer has (they are refused already, and pruned).

An entity holds at most refresh_tokens_per_user live tokens (a new one past
that revokes the oldest). A token also ends when the Vault token that asked
for it is revoked or expires (Vault revokes its lease), when its lease is
revoked (vault lease revoke -prefix <mount>/token/identity), after
identity_refresh_token_ttl, and when the entity is deleted or disabled.
`
