package backend

import (
	"errors"
	"fmt"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Kind classifies the errors the plugin returns to its callers. The paths
// package maps each kind to one Vault status in one place.
type Kind int

const (
	// KindBadRequest is malformed input: a 400 that names the input.
	KindBadRequest Kind = iota + 1
	// KindUnauthorized is a refused credential: unknown user, wrong
	// password, no credentials without anonymous access, bad refresh token.
	KindUnauthorized
	// KindLockedOut is a user locked out after too many failures.
	KindLockedOut
	// KindBusy means too many password checks are already running.
	KindBusy
	// KindInvalidGrant is a bad, expired or revoked refresh token.
	KindInvalidGrant
	// KindInvalidScope is a malformed requested scope: a 400 that names it.
	KindInvalidScope
	// KindNotFound is a named thing that does not exist: a 404 naming it.
	KindNotFound
)

// Error is a domain error that is safe to show to the caller: its message
// never holds a secret.
type Error struct {
	Kind       Kind
	Msg        string
	RetryAfter time.Duration // for KindLockedOut and KindBusy
}

func (e *Error) Error() string { return e.Msg }

func errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// AsError returns the domain error inside err, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// errInvalidCredentials is the one answer for an unknown user and a wrong
// password, so the two cannot be told apart.
var errInvalidCredentials = &Error{Kind: KindUnauthorized, Msg: "invalid username or password"}

// errInvalidRefreshToken is the one answer for a refresh token that is
// unknown, expired or revoked.
var errInvalidRefreshToken = &Error{Kind: KindInvalidGrant, Msg: "invalid refresh token"}

// quote shows untrusted input in an error: quoted, escaped, truncated.
var quote = tokenapi.Quote
