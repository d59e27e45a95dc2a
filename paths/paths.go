package paths

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// All returns every path of the plugin, served by b.
func All(b *backend.Backend) []*framework.Path {
	var ps []*framework.Path
	ps = append(ps, configPaths(b)...)
	ps = append(ps, userPaths(b)...)
	ps = append(ps, refreshTokenPaths(b)...)
	ps = append(ps, tokenPaths(b)...)
	ps = append(ps, caPaths(b)...)
	ps = append(ps, keyPaths(b)...)
	ps = append(ps, identityPaths(b)...)
	ps = append(ps, explainPaths(b)...)
	ps = append(ps, robotPaths(b)...)
	return ps
}

// Unauthenticated lists the paths a registry reads without a Vault token.
var Unauthenticated = []string{"ca/pem", "jwks"}

// SealWrapped lists the storage prefixes that hold private keys.
var SealWrapped = []string{backend.KeyPrefix, backend.RobotKeyPath}

// codes gives each kind of domain error its code in the token contract;
// the code gives the status.
var codes = map[backend.Kind]tokenapi.Code{
	backend.KindBadRequest:   tokenapi.CodeInvalidRequest,
	backend.KindInvalidScope: tokenapi.CodeInvalidScope,
	backend.KindUnauthorized: tokenapi.CodeInvalidCredentials,
	backend.KindInvalidGrant: tokenapi.CodeInvalidGrant,
	backend.KindLockedOut:    tokenapi.CodeLockedOut,
	backend.KindBusy:         tokenapi.CodeBusy,
}

// respond turns a backend error into a Vault response: the one place where
// a domain error gets its status. Sentinel errors are never wrapped here,
// since a wrapped one reaches the client as a 500 over gRPC.
func respond(err error) (*logical.Response, error) {
	if errors.Is(err, backend.ErrNoTrustAnchor) {
		return nil, logical.CodedError(http.StatusNotFound, err.Error())
	}
	e, ok := backend.AsError(err)
	if !ok {
		return nil, err
	}
	if e.Kind == backend.KindNotFound {
		return nil, logical.CodedError(http.StatusNotFound, e.Msg)
	}
	code, ok := codes[e.Kind]
	if !ok {
		return nil, errors.New(e.Msg)
	}
	if status := code.Status(); status != http.StatusBadRequest {
		return nil, logical.CodedError(status, e.Msg)
	}
	return logical.ErrorResponse(e.Msg), nil
}

// refuse answers a token path's refusal as the token contract has it: the
// code's status, and a body with Vault's usual error list (the plain
// message, for the CLI and any API client) and the tokenapi.Refusal as
// data, for the relay. logical.RespondWithStatusCode cannot carry the
// error list, so the raw answer is built here.
func refuse(err error) (*logical.Response, error) {
	e, ok := backend.AsError(err)
	if !ok {
		return nil, err
	}
	code, ok := codes[e.Kind]
	if !ok {
		return respond(err)
	}
	body, merr := json.Marshal(struct {
		Errors []string         `json:"errors"`
		Data   tokenapi.Refusal `json:"data"`
	}{
		Errors: []string{e.Msg},
		Data:   tokenapi.Refusal{Code: code, Message: e.Msg, RetryAfter: seconds(e.RetryAfter)},
	})
	if merr != nil {
		return nil, merr
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: "application/json",
		logical.HTTPStatusCode:  code.Status(),
		logical.HTTPRawBody:     string(body), // a string, so that audit devices hash it
	}}, nil
}

// service is the registry service a request is for: the mount's path.
func service(req *logical.Request) string {
	return strings.TrimSuffix(req.MountPoint, "/")
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
