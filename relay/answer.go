package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Realm is the Basic realm the relay names in its 401 answers.
const Realm = "godoauth-relay"

const challenge = `Basic realm="` + Realm + `", charset="UTF-8"`

// retryAfterUnavailable is the Retry-After of a 503.
const retryAfterUnavailable = 5

// failure is a refused request as the client sees it. msg never holds a
// secret; causes the client must not see go to the log, not here.
type failure struct {
	status     int
	oauthCode  string // the OAuth2 error code, for POST answers
	msg        string
	retryAfter int  // seconds; for 429 and 503
	busy       bool // the plugin's busy refusal: nothing was checked
	// reason is why, for the relay's log only, when msg does not say it
	// (never a secret).
	reason string
}

func (f *failure) Error() string { return f.msg }

func badRequest(format string, args ...any) *failure {
	return &failure{status: http.StatusBadRequest, oauthCode: "invalid_request", msg: fmt.Sprintf(format, args...)}
}

func unauthorized(msg string) *failure {
	return &failure{status: http.StatusUnauthorized, oauthCode: "invalid_grant", msg: msg}
}

func lockedOut(msg string, retryAfter int) *failure {
	return &failure{status: http.StatusTooManyRequests, oauthCode: "temporarily_unavailable", msg: msg, retryAfter: retryAfter}
}

func unknownService(service string) *failure {
	return badRequest("unknown service %s", quote(service))
}

// errUnavailable is every Vault error (vault.unavailable) as the client
// sees it.
// statusClientClosed is nginx's status for a request whose client went
// away before the answer: nobody reads it, but the log and the metrics
// must not count it as a Vault outage.
const statusClientClosed = 499

var errCanceled = &failure{status: statusClientClosed, msg: "client closed the request"}

var errUnavailable = &failure{
	status:     http.StatusServiceUnavailable,
	oauthCode:  "temporarily_unavailable",
	msg:        "token service temporarily unavailable, try again later",
	retryAfter: retryAfterUnavailable,
}

// registryCode is the error code of the registry's JSON error shape.
func registryCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusMethodNotAllowed:
		return "UNSUPPORTED"
	case http.StatusRequestEntityTooLarge:
		return "SIZE_INVALID"
	default:
		return "BAD_REQUEST"
	}
}

type registryError struct {
	Errors []registryErrorItem `json:"errors"`
}

type registryErrorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// writeFailure is the one place that turns a refusal into an HTTP answer:
// the registry's JSON error shape for GET, OAuth2's for POST.
func writeFailure(w http.ResponseWriter, f *failure, oauth bool) {
	h := w.Header()
	if f.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", challenge)
	}
	if f.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(f.retryAfter))
	}
	var body any
	if oauth {
		code := f.oauthCode
		if code == "" {
			code = "invalid_request"
		}
		body = oauthError{Error: code, Description: f.msg}
	} else {
		body = registryError{Errors: []registryErrorItem{{Code: registryCode(f.status), Message: f.msg}}}
	}
	writeJSON(w, f.status, body)
}

// tokenAnswer is the GET answer of the registry token spec.
type tokenAnswer struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int64  `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// oauthAnswer is the POST answer (RFC 6749 §5.1 and the registry's OAuth2 spec).
type oauthAnswer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// writeToken answers a minted token in the shape the request asked for.
func writeToken(w http.ResponseWriter, t *mintedToken, oauth bool) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if oauth {
		writeJSON(w, http.StatusOK, oauthAnswer{
			AccessToken:  t.Token,
			TokenType:    "Bearer",
			ExpiresIn:    t.ExpiresIn,
			IssuedAt:     t.IssuedAt,
			Scope:        t.grantedScope(),
			RefreshToken: t.RefreshToken,
		})
		return
	}
	writeJSON(w, http.StatusOK, tokenAnswer{
		Token:        t.Token,
		AccessToken:  t.Token,
		ExpiresIn:    t.ExpiresIn,
		IssuedAt:     t.IssuedAt,
		RefreshToken: t.RefreshToken,
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body) // the client may be gone; nothing to do then
}

// grantedScope is the token's access as OAuth2 scope: type:name:actions,
// space separated.
func (t *mintedToken) grantedScope() string {
	var b strings.Builder
	for i, a := range t.Access {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.Type)
		b.WriteByte(':')
		b.WriteString(a.Name)
		b.WriteByte(':')
		b.WriteString(strings.Join(a.Actions, ","))
	}
	return b.String()
}
