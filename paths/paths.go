package paths

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-registry/backend"
)

// All returns every path of the plugin, served by b.
func All(b *backend.Backend) []*framework.Path {
	var ps []*framework.Path
	ps = append(ps, configPaths(b)...)
	ps = append(ps, userPaths(b)...)
	ps = append(ps, tokenPaths(b)...)
	ps = append(ps, caPaths(b)...)
	ps = append(ps, keyPaths(b)...)
	ps = append(ps, identityPaths(b)...)
	return ps
}

// Unauthenticated lists the paths a registry reads without a Vault token.
var Unauthenticated = []string{"ca/pem", "jwks"}

// SealWrapped lists the storage prefixes that hold private keys.
var SealWrapped = []string{backend.KeyPrefix}

// respond turns a backend error into a Vault response: the one place where
// a domain error gets its status. Sentinel errors are never wrapped here,
// since a wrapped one reaches the client as a 500 over gRPC.
func respond(err error) (*logical.Response, error) {
	e, ok := backend.AsError(err)
	if !ok {
		return nil, err
	}
	switch e.Kind {
	case backend.KindBadRequest, backend.KindInvalidGrant:
		return logical.ErrorResponse(e.Msg), nil
	case backend.KindUnauthorized:
		return nil, logical.CodedError(http.StatusUnauthorized, e.Msg)
	case backend.KindLockedOut, backend.KindBusy:
		return nil, logical.CodedError(http.StatusTooManyRequests, e.Msg)
	case backend.KindNotFound:
		return nil, nil
	}
	return nil, errors.New(e.Msg)
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
