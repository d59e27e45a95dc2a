package relay

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"
)

// loginNameRE is what a user name must look like to be sent to an auth
// mount: it becomes a segment of a Vault path.
var loginNameRE = regexp.MustCompile(`^[A-Za-z0-9_.@+-]{1,256}$`)

// loginName reports whether name may be sent to an auth mount as the last
// segment of its login path: the characters of loginNameRE, and not made
// only of dots ("." and ".." would leave the login path: the Vault
// client cleans the path it is given).
func loginName(name string) bool {
	return loginNameRE.MatchString(name) && strings.Trim(name, ".") != ""
}

// passwordLogin logs in at auth/<mount>/login/<user> without a token. A
// refused password is (nil, nil); Vault's error is a failure.
func (v *vault) passwordLogin(ctx context.Context, mount, user, password string) (*api.SecretAuth, *failure) {
	if !loginName(user) {
		return nil, nil // login checked it; never a path of another kind
	}
	return v.authLogin(ctx, "identity.password_mounts", mount, user, map[string]any{"password": password})
}

// jwtLogin logs in at auth/<mount>/login with {role, jwt} without a token.
// A refused JWT (a bad signature, audience or claim, expired, unknown
// role) is (nil, nil); Vault's error is a failure.
func (v *vault) jwtLogin(ctx context.Context, mount, role, jwt string) (*api.SecretAuth, *failure) {
	return v.authLogin(ctx, "identity.jwt_logins", mount, "", map[string]any{"role": role, "jwt": jwt})
}

// authLogin logs in at auth/<mount>/login (and the user's segment, when
// user is set) without a token; key names the mount's setting in the log.
// Vault's 400, 401 and 403 are a refusal, (nil, nil).
func (v *vault) authLogin(ctx context.Context, key, mount, user string, body map[string]any) (*api.SecretAuth, *failure) {
	path := "auth/" + mount + "/login"
	noToken := func(error) *failure {
		return v.unavailable("bad_answer", "an auth mount's login answered no token", "mount", mount)
	}
	refused := false
	var answer vaultAnswer
	f := v.call(ctx, &vaultCall{
		path:        path,
		segment:     user,
		body:        body,
		callerToken: true, // none: login paths take no token
		unproven:    true,
		malformed:   noToken,
		// An auth mount is not the plugin: its refusals have statuses only.
		refused: func(err error, _ *api.Response) *failure {
			switch statusCode(err) {
			case http.StatusBadRequest, http.StatusForbidden, http.StatusUnauthorized:
				refused = true // wrong password or JWT, unknown user, or locked out by Vault
				return unauthorized("invalid username or password")
			case http.StatusNotFound:
				return v.unavailable("unexpected", key+" names no auth mount", "mount", mount)
			case http.StatusTooManyRequests:
				return lockedOut("too many logins; retry after 1s", 1)
			}
			return v.loginFailed(ctx, err, path)
		},
	}, &answer)
	switch {
	case refused:
		return nil, nil
	case f != nil:
		return nil, f
	case answer.Auth == nil || answer.Auth.ClientToken == "":
		return nil, noToken(nil)
	}
	return answer.Auth, nil
}

// loginFailed is a login that got no answer or an error status.
func (v *vault) loginFailed(ctx context.Context, err error, path string) *failure {
	var re *api.ResponseError
	switch {
	case !errors.As(err, &re):
		return v.noAnswer(ctx, err, path, true)
	case re.StatusCode == http.StatusServiceUnavailable:
		return v.unavailable("sealed", "vault is sealed or unavailable (503)", "path", path)
	default:
		return v.unavailable("server_error", "vault answered an error", "path", path, "status", re.StatusCode,
			"error", pluginMessage(strings.Join(re.Errors, "; ")))
	}
}
