package relay

import (
	"context"
	"errors"
	"net/http"
	"net/url"
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
// refused password is (nil, nil); Vault's trouble is a failure.
func (v *vault) passwordLogin(ctx context.Context, mount, user, password string) (*api.SecretAuth, *failure) {
	if !loginName(user) {
		return nil, nil // login checked it; never a path of another kind
	}
	// The user is one escaped segment after the login path: NewRequest
	// would clean it with the rest (path.Join).
	r := v.client.NewRequest(http.MethodPut, "/v1/auth/"+mount+"/login")
	r.URL.RawPath = r.URL.EscapedPath() + "/" + url.PathEscape(user)
	r.URL.Path += "/" + user
	return v.authLogin(ctx, r, "identity.password_mounts", mount, map[string]any{"password": password})
}

// jwtLogin logs in at auth/<mount>/login with {role, jwt} without a token.
// A refused JWT (a bad signature, audience or claim, expired, unknown
// role) is (nil, nil); Vault's trouble is a failure.
func (v *vault) jwtLogin(ctx context.Context, mount, role, jwt string) (*api.SecretAuth, *failure) {
	r := v.client.NewRequest(http.MethodPut, "/v1/auth/"+mount+"/login")
	return v.authLogin(ctx, r, "identity.jwt_logins", mount, map[string]any{"role": role, "jwt": jwt})
}

// authLogin sends a login request r to an auth mount (named by the
// setting key in the log) without a token. Vault's 400, 401 and 403 are
// a refusal, (nil, nil).
func (v *vault) authLogin(ctx context.Context, r *api.Request, key, mount string, body map[string]any) (*api.SecretAuth, *failure) {
	release, f := v.enter(ctx)
	if f != nil {
		return nil, f
	}
	defer release()
	r.ClientToken = ""
	if err := r.SetJSONBody(body); err != nil {
		return nil, v.trouble("unexpected", "cannot encode a login", "path", "auth/"+mount+"/login")
	}
	resp, err := v.client.RawRequestWithContext(ctx, r)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) {
			switch {
			case re.StatusCode == http.StatusBadRequest || re.StatusCode == http.StatusForbidden ||
				re.StatusCode == http.StatusUnauthorized:
				return nil, nil // wrong password or JWT, unknown user, or locked out by Vault
			case re.StatusCode == http.StatusNotFound:
				return nil, v.trouble("unexpected", key+" names no auth mount", "mount", mount)
			case re.StatusCode == http.StatusTooManyRequests:
				return nil, lockedOut("too many logins; retry after 1s", 1)
			}
		}
		return nil, v.loginTrouble(ctx, err, "auth/"+mount+"/login")
	}
	secret, err := api.ParseSecret(resp.Body)
	if err != nil || secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, v.trouble("bad_answer", "an auth mount's login answered no token", "mount", mount)
	}
	return secret.Auth, nil
}

// loginTrouble is a login that got no answer or an error status.
func (v *vault) loginTrouble(ctx context.Context, err error, path string) *failure {
	var re *api.ResponseError
	switch {
	case !errors.As(err, &re):
		return v.transportTrouble(ctx, err, path, true)
	case re.StatusCode == http.StatusServiceUnavailable:
		return v.trouble("sealed", "vault is sealed or unavailable (503)", "path", path)
	default:
		return v.trouble("server_error", "vault answered an error", "path", path, "status", re.StatusCode,
			"error", pluginMessage(strings.Join(re.Errors, "; ")))
	}
}
