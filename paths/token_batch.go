package paths

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// batch answers several token requests in one call. Each request is parsed
// with the single path's fields and minted as the single path would, all
// at once; each gets its own answer, in order: one request's refusal or
// failure touches no other. The call as a whole is refused only when it is
// malformed.
func (h *tokenHandler) batch(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	raw, _ := d.GetOk(tokenapi.FieldRequests)
	items, _ := raw.([]any)
	switch {
	case len(items) == 0:
		return logical.ErrorResponse("%s: want a list of 1 to %d token requests", tokenapi.FieldRequests, tokenapi.MaxBatch), nil
	case len(items) > tokenapi.MaxBatch:
		return logical.ErrorResponse("%s: %d token requests, at most %d in one call", tokenapi.FieldRequests, len(items), tokenapi.MaxBatch), nil
	}
	entries := make([]map[string]any, len(items))
	for i, item := range items {
		m, ok := item.(map[string]any)
		if !ok {
			return logical.ErrorResponse("%s[%d]: want an object with a token request's fields", tokenapi.FieldRequests, i), nil
		}
		entries[i] = m
	}
	answers := make([]tokenapi.BatchAnswer, len(entries))
	// The batch answers when its slowest request does: each request's
	// waits for a password check have their own short budget and go
	// first (backend.WithinBatch).
	// Requests made with identity sessions resolve each entity once per
	// call (backend.WithIdentityMemo).
	ctx = backend.WithIdentityMemo(backend.WithinBatch(ctx))
	var wg sync.WaitGroup
	for i, m := range entries {
		wg.Go(func() { answers[i] = h.batchEntry(ctx, req, m) })
	}
	wg.Wait()
	return &logical.Response{Data: map[string]any{tokenapi.FieldAnswers: answers}}, nil
}

// batchEntry mints one request of a batch: a refresh-token grant when it
// holds refresh_token, else a password (or anonymous) one.
func (h *tokenHandler) batchEntry(ctx context.Context, req *logical.Request, m map[string]any) tokenapi.BatchAnswer {
	tokenFrom, fields := h.tokenFromFields, tokenFields
	_, session := m[tokenapi.FieldIdentitySession]
	if _, ok := m[tokenapi.FieldRefreshToken]; ok {
		tokenFrom, fields, session = h.tokenFromRefreshFields, refreshFields, false
	} else if session {
		tokenFrom, fields = h.tokenFromSessionFields, sessionFields
		for k := range m {
			if _, ok := sessionFields[k]; !ok {
				// No other credential, no refresh token, no address.
				return batchRefusal(tokenapi.CodeInvalidRequest, fmt.Sprintf("%s: a request with it takes only scope, client_id and ttl, not %s", tokenapi.FieldIdentitySession, k), 0)
			}
		}
	}
	d := &framework.FieldData{Raw: m, Schema: fields}
	if err := d.Validate(); err != nil {
		return batchRefusal(tokenapi.CodeInvalidRequest, err.Error(), 0)
	}
	tok, err := tokenFrom(ctx, req, d)
	if err == nil {
		return tokenapi.BatchAnswer{Status: http.StatusOK, Data: tokenAnswer(tok)}
	}
	e, ok := backend.AsError(err)
	if !ok {
		h.b.Logger().Error("token request of a batch failed", "error", err)
		return tokenapi.BatchAnswer{Status: http.StatusInternalServerError, Data: tokenapi.Refusal{Message: "internal error"}}
	}
	code, ok := codes[e.Kind]
	if !ok {
		h.b.Logger().Error("token request of a batch failed", "error", fmt.Sprintf("%s (kind %d)", e.Msg, e.Kind))
		return tokenapi.BatchAnswer{Status: http.StatusInternalServerError, Data: tokenapi.Refusal{Message: "internal error"}}
	}
	return batchRefusal(code, e.Msg, seconds(e.RetryAfter))
}

// sessionFields are those of a batch's request made with an identity
// session: token/identity's, without offline_token (a session issues no
// refresh token) and without client_addr (token/identity takes none, and
// a token must grant the same whether its request was batched or not).
var sessionFields = map[string]*framework.FieldSchema{
	tokenapi.FieldIdentitySession: {Type: framework.TypeString, Description: "An identity session's secret (token/identity with identity_session).", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	tokenapi.FieldScope:           scopeField,
	tokenapi.FieldClientID:        clientIDField,
	tokenapi.FieldTTL:             ttlField,
}

// tokenFromSessionFields mints for the entity of a live identity session (d has
// sessionFields), as token/identity would for that entity's Vault token.
func (h *tokenHandler) tokenFromSessionFields(ctx context.Context, req *logical.Request, d *framework.FieldData) (*backend.Token, error) {
	return h.b.TokenForIdentitySession(ctx, req.Storage, d.Get(tokenapi.FieldIdentitySession).(string), backend.IdentityTokenRequest{
		Service:  service(req),
		ClientID: d.Get(tokenapi.FieldClientID).(string),
		Scopes:   d.Get(tokenapi.FieldScope).([]string),
		TTL:      time.Duration(d.Get(tokenapi.FieldTTL).(int)) * time.Second,
	})
}

func batchRefusal(code tokenapi.Code, msg string, retryAfter int64) tokenapi.BatchAnswer {
	return tokenapi.BatchAnswer{Status: code.Status(), Data: tokenapi.Refusal{Code: code, Message: msg, RetryAfter: retryAfter}}
}

const batchHelpSynopsis = "Mint several registry tokens in one call (the relay's batching)."

const batchHelpDescription = `
godoauth-relay sends the token requests that arrive while its earlier calls
are in flight in one call here, sparing Vault a request, a token lookup and
a round trip to the plugin per token. requests is a list of at most 32
objects, each with the fields of token (or of token/refresh when it holds
refresh_token, or with identity_session: the secret of an identity session
that token/identity issued, with scope, client_id and ttl). Each is checked and minted exactly as on its own path, with
the same lockout, credential cache and refusals, with one difference: a
request waits at most 1s (not 2s) for a password check, and its wait goes
before those of single requests, so that one slow request cannot hold the
answers of the others for long.

The answer's data holds answers: one object per request, in order, with
status (what the single path would have answered) and data (the token
path's answer for 200; a refusal with code, message and retry_after
otherwise). A malformed call (no list, more than 32 requests, an item that
is not an object) is a 400; one request's refusal touches no other.
`
