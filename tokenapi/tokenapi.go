// Package tokenapi is the contract between the plugin's token paths and
// godoauth-relay: the request fields, the answer, the refusal codes and the
// limits both sides enforce. The plugin's paths and the relay import it;
// nothing of Vault's server code does. Codes carry the meaning; messages are
// for people and may change freely.
package tokenapi

import (
	"net/http"
	"strconv"
	"strings"
)

// Paths of a plugin mount, relative to it.
const (
	PathToken   = "token"
	PathRefresh = "token/refresh"
	// PathIdentityToken mints for the Vault identity of the caller's own
	// Vault token; it answers like PathToken.
	PathIdentityToken = "token/identity"
	// PathTokenBatch takes several token requests in one call (FieldRequests)
	// and answers each in order (FieldAnswers): the relay's way to spare
	// Vault a request, a token lookup and a plugin round trip per token
	// when many arrive at once.
	PathTokenBatch = "token/batch"
	// PathCAPEM answers the PEM bundle without a Vault token; the relay
	// reads it to tell a plugin mount from any other Vault path.
	PathCAPEM = "ca/pem"
)

// Request fields of PathToken, PathIdentityToken and PathRefresh.
const (
	FieldUsername     = "username"
	FieldPassword     = "password"
	FieldAccount      = "account"
	FieldScope        = "scope" // list; an item may hold several scopes separated by spaces
	FieldClientID     = "client_id"
	FieldOfflineToken = "offline_token"
	FieldTTL          = "ttl" // seconds
	FieldRefreshToken = "refresh_token"
	// FieldClientAddr is the registry client's IP address as the relay
	// saw it (the peer, or X-Forwarded-For from a trusted proxy); access
	// entries with networks match it. Absent: the address is unknown.
	FieldClientAddr = "client_addr"
	// FieldIdentitySession, true on PathIdentityToken, also asks for an
	// identity session: the answer's data then holds the session's secret
	// under the same name, and its life in seconds under
	// FieldIdentitySessionTTL, as a Vault lease of the caller's token. A
	// request of PathTokenBatch that holds the secret under this name is
	// minted as PathIdentityToken would for the session's entity.
	FieldIdentitySession    = "identity_session"
	FieldIdentitySessionTTL = "identity_session_ttl"
)

// Fields of PathTokenBatch.
const (
	// FieldRequests is the list of requests: each an object with the
	// fields of PathToken, or of PathRefresh when it has refresh_token, or
	// scope, client_id and ttl with an identity session's secret
	// (FieldIdentitySession).
	FieldRequests = "requests"
	// FieldAnswers is the list of BatchAnswer, one per request, in order.
	FieldAnswers = "answers"
)

// MaxBatch bounds the requests of one PathTokenBatch call.
const MaxBatch = 32

// BatchAnswer answers one request of a batch: Status is what the single
// path would have answered, Data its data: an Answer for 200, a Refusal
// otherwise (a 500's Refusal has no code: the plugin failed).
type BatchAnswer struct {
	Status int `json:"status"`
	Data   any `json:"data"`
}

// Limits on a token request, the same on both sides.
const (
	// MaxPasswordBytes is bcrypt's limit: it ignores the bytes past 72, so
	// no stored password is longer.
	MaxPasswordBytes = 72
	// MaxScopes bounds the scopes of one request, counted after splitting
	// items at spaces.
	MaxScopes = 256
	// MaxScopeBytes bounds one scope item.
	MaxScopeBytes = 1024
)

// Answer is the data of a token path's 200 answer.
type Answer struct {
	Token        string  `json:"token"`
	AccessToken  string  `json:"access_token"` // the same JWT, for OAuth2 clients
	ExpiresIn    int64   `json:"expires_in"`   // seconds
	IssuedAt     string  `json:"issued_at"`    // RFC 3339
	RefreshToken string  `json:"refresh_token,omitempty"`
	Subject      string  `json:"sub"` // the user; empty for anonymous
	Issuer       string  `json:"iss"`
	Access       []Grant `json:"access"` // what the token grants; empty, never absent
}

// Grant is one entry of the token's access claim.
type Grant struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Data is the answer as Vault response data.
func (a *Answer) Data() map[string]any {
	access := a.Access
	if access == nil {
		access = []Grant{}
	}
	d := map[string]any{
		"token":        a.Token,
		"access_token": a.AccessToken,
		"expires_in":   a.ExpiresIn,
		"issued_at":    a.IssuedAt,
		"sub":          a.Subject,
		"iss":          a.Issuer,
		"access":       access,
	}
	if a.RefreshToken != "" {
		d["refresh_token"] = a.RefreshToken
	}
	return d
}

// Code says why a token path refused a request.
type Code string

const (
	// CodeInvalidRequest: malformed input other than a scope (400).
	CodeInvalidRequest Code = "invalid_request"
	// CodeInvalidScope: a malformed scope (400).
	CodeInvalidScope Code = "invalid_scope"
	// CodeInvalidCredentials: unknown user or wrong password, alike; or
	// no credentials where anonymous access is off (401).
	CodeInvalidCredentials Code = "invalid_credentials"
	// CodeInvalidGrant: a refresh token that is unknown, expired, revoked
	// or no longer valid for its user (400, as OAuth2 has it).
	CodeInvalidGrant Code = "invalid_grant"
	// CodeLockedOut: the user is locked out; RetryAfter says how long (429).
	CodeLockedOut Code = "locked_out"
	// CodeBusy: too many password checks at once; RetryAfter says when to
	// try again (429).
	CodeBusy Code = "busy"
)

// Status is the HTTP status the plugin answers a refusal with.
func (c Code) Status() int {
	switch c {
	case CodeInvalidCredentials:
		return http.StatusUnauthorized
	case CodeLockedOut, CodeBusy:
		return http.StatusTooManyRequests
	default:
		return http.StatusBadRequest
	}
}

// Refusal is the data of a token path's refusal, answered with its code's
// status. Vault's error list of the same answer holds Message alone.
type Refusal struct {
	Code       Code   `json:"code"`
	Message    string `json:"message"`               // one line for people, never a secret
	RetryAfter int64  `json:"retry_after,omitempty"` // seconds, for CodeLockedOut and CodeBusy
}

// Quote shows untrusted input in a message: quoted, escaped, truncated.
func Quote(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

// OneLine folds every run of blanks and line breaks into one space.
func OneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
