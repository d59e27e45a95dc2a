package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

const (
	// maxTokenBytes bounds a token from the plugin.
	maxTokenBytes = 64 << 10
	// maxAnswerBytes bounds a whole answer of the plugin.
	maxAnswerBytes = 256 << 10
	// maxMessageBytes bounds a message of the plugin shown to a client.
	maxMessageBytes = 512
	// defaultRetryAfter is the Retry-After of a 429 that names none.
	defaultRetryAfter = 60
	// maxRetryAfter bounds the Retry-After the relay passes on.
	maxRetryAfter = 24 * 60 * 60
)

// mintedToken is the plugin's answer (tokenapi.Answer), checked.
type mintedToken struct {
	Token        string
	ExpiresIn    int64
	IssuedAt     string
	RefreshToken string
	// For the log, the issuer check and the OAuth2 scope.
	Issuer  string
	Subject string
	Access  []tokenapi.Grant
	// RequestID is Vault's request_id of the call that minted it (a
	// batch's, for a token of a batch): the same id is in Vault's audit log.
	RequestID string
}

// vaultAnswer is Vault's answer as the relay reads it: the envelope of
// every answer of Vault's API.
type vaultAnswer struct {
	// RequestID is Vault's request_id, for the access log; "" when it is
	// longer than maxRequestIDBytes.
	RequestID string `json:"request_id"`
	// Data is a pointer to what the answer's data object is read into: a
	// token, a batch's answers, a refusal.
	Data any `json:"data"`
	// Auth is a login's answer.
	Auth *api.SecretAuth `json:"auth"`
}

// readAnswer reads Vault's answer, of at most limit bytes, into a, in one
// pass over the bytes: a token answer is mostly the token, and every
// extra pass over it is CPU per request. It is the one way the relay
// reads an answer: a token, a batch's answers, a login, a refusal.
func readAnswer(body io.Reader, limit int, a *vaultAnswer) error {
	lr := &io.LimitedReader{R: body, N: int64(limit) + 1}
	if err := json.NewDecoder(lr).Decode(a); err != nil {
		if lr.N <= 0 {
			return fmt.Errorf("answer larger than %d bytes", limit)
		}
		return fmt.Errorf("answer: %v", err)
	}
	if len(a.RequestID) > maxRequestIDBytes {
		a.RequestID = "" // a UUID; anything else is not worth a log line
	}
	return nil
}

// maxRequestIDBytes bounds a request_id kept for the log.
const maxRequestIDBytes = 64

// checkMinted checks the plugin's answer: a Vault field is input like any
// other. The token itself is not read: the answer says whom it is for and
// what it grants, and the registry verifies it.
func checkMinted(a *tokenapi.Answer) (*mintedToken, error) {
	switch {
	case a.Token == "":
		return nil, errors.New("no token")
	case len(a.Token) > maxTokenBytes:
		return nil, errors.New("token too long")
	case a.AccessToken != "" && a.AccessToken != a.Token:
		return nil, errors.New("access_token differs from token")
	case a.ExpiresIn <= 0 || a.ExpiresIn > 10*maxExpiration:
		return nil, fmt.Errorf("expires_in: want a positive number of seconds, got %d", a.ExpiresIn)
	case a.Issuer == "":
		return nil, errors.New("no iss (a plugin older than this relay? upgrade the plugin first)")
	case a.Access == nil:
		return nil, errors.New("no access (a plugin older than this relay? upgrade the plugin first)")
	}
	if a.IssuedAt == "" {
		a.IssuedAt = time.Now().UTC().Format(time.RFC3339)
	} else if _, err := time.Parse(time.RFC3339, a.IssuedAt); err != nil {
		return nil, fmt.Errorf("issued_at: want RFC 3339, got %s", quote(a.IssuedAt))
	}
	return &mintedToken{
		Token:        a.Token,
		ExpiresIn:    a.ExpiresIn,
		IssuedAt:     a.IssuedAt,
		RefreshToken: a.RefreshToken,
		Issuer:       a.Issuer,
		Subject:      a.Subject,
		Access:       a.Access,
	}, nil
}

// readRefusal reads the plugin's refusal (tokenapi.Refusal) from Vault's
// error answer; false when the answer holds none (Vault's own refusals).
func readRefusal(body io.Reader) (tokenapi.Refusal, bool) {
	var r tokenapi.Refusal
	if readAnswer(body, maxAnswerBytes, &vaultAnswer{Data: &r}) != nil || r.Code == "" {
		return tokenapi.Refusal{}, false
	}
	return r, true
}

// refused is the client's answer to a refusal of the plugin: its code
// alone decides. status is the plugin's, for a code this relay does not
// know yet.
func refused(r tokenapi.Refusal, status int) *failure {
	msg := pluginMessage(r.Message)
	switch r.Code {
	case tokenapi.CodeInvalidRequest:
		return badRequest("%s", msg)
	case tokenapi.CodeInvalidScope:
		return &failure{status: http.StatusBadRequest, oauthCode: "invalid_scope", msg: msg}
	case tokenapi.CodeInvalidCredentials, tokenapi.CodeInvalidGrant:
		// A refresh token the plugin no longer takes is a 401 here:
		// clients log in again on a 401, not on a 400.
		return unauthorized(msg)
	case tokenapi.CodeLockedOut:
		return lockedOut(msg, retryAfter(r.RetryAfter))
	case tokenapi.CodeBusy:
		f := lockedOut(msg, retryAfter(r.RetryAfter))
		f.busy = true
		return f
	}
	switch status {
	case http.StatusUnauthorized:
		return unauthorized(msg)
	case http.StatusTooManyRequests:
		return lockedOut(msg, retryAfter(r.RetryAfter))
	default:
		return badRequest("%s", msg)
	}
}

func retryAfter(secs int64) int {
	if secs <= 0 {
		return defaultRetryAfter
	}
	return int(min(secs, maxRetryAfter))
}

// pluginMessage is a message of the plugin (or of Vault) as one bounded
// line.
func pluginMessage(msg string) string {
	msg = oneLine(msg)
	if len(msg) > maxMessageBytes {
		msg = msg[:maxMessageBytes] + "…"
	}
	return msg
}
