package relay

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Bounds on what a client may send; the HTTP server bounds headers and
// bodies as a whole.
const (
	maxNameBytes    = 256 // username, account, client_id
	maxRefreshBytes = 1024
)

// tokenRequest is one request for a token, from GET (registry token spec)
// or POST (OAuth2 form), as the plugin's token paths take it.
type tokenRequest struct {
	Service  string
	Username string // empty: anonymous
	Password string
	Account  string
	ClientID string
	Scopes   []string
	Offline  bool // ask for a refresh token
	// RefreshToken, when set, makes this a <service>/token/refresh request.
	RefreshToken string
	// OAuth marks a POST request: answers take the OAuth2 shape.
	OAuth bool
	// ClientAddr is the client's IP address (clientaddr.go), sent to the
	// plugin for access entries with networks; empty when unknown.
	ClientAddr string
	// IdentitySession, when set, makes this a request of a batch made
	// with a Vault identity's session (identitysession.go).
	IdentitySession string
}

// vaultPath is the plugin path the request goes to.
func (r *tokenRequest) vaultPath() string {
	if r.RefreshToken != "" {
		return r.Service + "/" + tokenapi.PathRefresh
	}
	return r.Service + "/" + tokenapi.PathToken
}

// vaultBody is the request's body for the plugin; ttl is token.expiration
// (0: the plugin's default).
func (r *tokenRequest) vaultBody(ttl int64) map[string]any {
	scopes := r.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	body := map[string]any{tokenapi.FieldScope: scopes, tokenapi.FieldClientID: r.ClientID}
	if r.IdentitySession != "" {
		// As token/identity: no password, no refresh token, no address.
		body[tokenapi.FieldIdentitySession] = r.IdentitySession
		if ttl > 0 {
			body[tokenapi.FieldTTL] = ttl
		}
		return body
	}
	if r.RefreshToken != "" {
		body[tokenapi.FieldRefreshToken] = r.RefreshToken
	} else {
		body[tokenapi.FieldUsername] = r.Username
		body[tokenapi.FieldPassword] = r.Password
		body[tokenapi.FieldAccount] = r.Account
		body[tokenapi.FieldOfflineToken] = r.Offline
	}
	if ttl > 0 {
		body[tokenapi.FieldTTL] = ttl
	}
	if r.ClientAddr != "" {
		body[tokenapi.FieldClientAddr] = r.ClientAddr
	}
	return body
}

// grantType names the request's kind in the log.
func (r *tokenRequest) grantType() string {
	switch {
	case r.RefreshToken != "":
		return "refresh_token"
	case r.OAuth:
		return "password"
	default:
		return "basic"
	}
}

// validService reports whether s may name a plugin mount:
// ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$. Nothing else reaches a Vault path.
func validService(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

// parseTokenQuery reads GET /auth: repeated scope, service, account,
// client_id, offline_token, and Basic credentials.
// A jwt_logins user (jwt) may send a password up to maxJWTBytes.
func parseTokenQuery(rawQuery, authorization string, jwt jwtUsers) (*tokenRequest, *failure) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, badRequest("malformed query string")
	}
	req := &tokenRequest{}
	if f := readService(q, req); f != nil {
		return nil, f
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"account", &req.Account}, {"client_id", &req.ClientID}} {
		v, f := single(q, p.name)
		if f == nil {
			f = checkName(p.name, v)
		}
		if f != nil {
			return nil, f
		}
		*p.dst = v
	}
	offline, f := single(q, "offline_token")
	if f != nil {
		return nil, f
	}
	if offline != "" {
		b, err := strconv.ParseBool(offline)
		if err != nil {
			return nil, badRequest("offline_token: want true or false, got %s", quote(offline))
		}
		req.Offline = b
	}
	if req.Scopes, f = readScopes(q["scope"]); f != nil {
		return nil, f
	}
	if req.Username, req.Password, f = parseBasic(authorization, jwt); f != nil {
		return nil, f
	}
	if req.Account != "" && req.Username == "" {
		// A client naming an account expects to log in, not to get an
		// anonymous token: ask for the password, as godoauth did.
		return nil, unauthorized("credentials required for account " + quote(req.Account))
	}
	return req, nil
}

// parseTokenForm reads POST /auth, an OAuth2 token request
// (application/x-www-form-urlencoded): grant_type password or refresh_token.
func parseTokenForm(form url.Values, jwt jwtUsers) (*tokenRequest, *failure) {
	// RFC 6749 §3.2: parameters must not be repeated.
	for name, vs := range form {
		if len(vs) > 1 {
			return nil, badRequest("parameter %s repeated", quote(name))
		}
	}
	req := &tokenRequest{OAuth: true}
	grant := form.Get("grant_type")
	switch grant {
	case "password", "refresh_token":
	case "":
		return nil, badRequest("grant_type is required (password or refresh_token)")
	default:
		return nil, &failure{status: 400, oauthCode: "unsupported_grant_type",
			msg: "grant_type " + quote(grant) + " is not supported; use password or refresh_token"}
	}
	if f := readService(form, req); f != nil {
		return nil, f
	}
	req.ClientID = form.Get("client_id")
	if f := checkName("client_id", req.ClientID); f != nil {
		return nil, f
	}
	var f *failure
	if scope := form.Get("scope"); scope != "" {
		if req.Scopes, f = readScopes(strings.Fields(scope)); f != nil {
			return nil, f
		}
	}
	if grant == "refresh_token" {
		req.RefreshToken = form.Get("refresh_token")
		if req.RefreshToken == "" {
			return nil, badRequest("refresh_token is required for grant_type=refresh_token")
		}
		if len(req.RefreshToken) > maxRefreshBytes || !utf8.ValidString(req.RefreshToken) {
			return nil, &failure{status: 401, oauthCode: "invalid_grant", msg: "invalid refresh token"}
		}
		return req, nil
	}
	req.Username, req.Password = form.Get("username"), form.Get("password")
	if req.Username == "" {
		return nil, badRequest("username is required for grant_type=password")
	}
	if f := checkCredentials(req.Username, req.Password, jwt); f != nil {
		return nil, f
	}
	switch access := form.Get("access_type"); access {
	case "", "online":
	case "offline":
		req.Offline = true
	default:
		return nil, badRequest("access_type: want offline or online, got %s", quote(access))
	}
	return req, nil
}

func readService(q url.Values, req *tokenRequest) *failure {
	s, f := single(q, "service")
	switch {
	case f != nil:
		return f
	case s == "":
		return badRequest("service is required")
	case !validService(s):
		return badRequest("invalid service name %s", quote(s))
	}
	req.Service = s
	return nil
}

// single returns a parameter that may appear at most once.
func single(q url.Values, name string) (string, *failure) {
	vs := q[name]
	if len(vs) > 1 {
		return "", badRequest("parameter %s repeated", quote(name))
	}
	if len(vs) == 0 {
		return "", nil
	}
	return vs[0], nil
}

// readScopes checks scope items and passes them through; the plugin parses
// them (an item may hold several scopes separated by spaces).
func readScopes(items []string) ([]string, *failure) {
	var scopes []string
	count := 0
	for _, s := range items {
		if strings.TrimSpace(s) == "" {
			continue
		}
		if len(s) > tokenapi.MaxScopeBytes || !utf8.ValidString(s) || strings.IndexFunc(s, isControl) >= 0 {
			return nil, badRequest("malformed scope %s", quote(s))
		}
		count += len(strings.Fields(s))
		if count > tokenapi.MaxScopes {
			return nil, badRequest("more than %d scopes", tokenapi.MaxScopes)
		}
		scopes = append(scopes, s)
	}
	return scopes, nil
}

func checkName(param, s string) *failure {
	if len(s) > maxNameBytes {
		return badRequest("%s longer than %d bytes", param, maxNameBytes)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, isControl) >= 0 {
		return badRequest("%s %s is not printable UTF-8", param, quote(s))
	}
	return nil
}

// maxPasswordBytes bounds a password at the relay. The plugin's own
// passwords are at most tokenapi.MaxPasswordBytes (a longer one is a 401
// there), but the password may be a Vault token (identity.vault_token_user)
// or an auth mount's password (identity.password_mounts). Only a
// jwt_logins user's password, a JWT, may be longer (jwtUsers.maxPassword).
const maxPasswordBytes = maxVaultTokenBytes

func checkCredentials(user, password string, jwt jwtUsers) *failure {
	if f := checkName("username", user); f != nil {
		return f
	}
	if max := jwt.maxPassword(user); len(password) > max {
		return badRequest("password longer than %d bytes", max)
	}
	// JSON would silently replace invalid bytes, changing the password.
	if !utf8.ValidString(password) {
		return badRequest("password is not valid UTF-8")
	}
	return nil
}

func isControl(r rune) bool { return unicode.IsControl(r) }

// parseBasic reads an Authorization header. No header means anonymous.
// A password without a user name is refused: that is containerd retrying
// a refresh token over GET, and answering it anonymously would hide that
// the refresh token is no longer valid.
func parseBasic(header string, jwt jwtUsers) (user, password string, f *failure) {
	if header == "" {
		return "", "", nil
	}
	scheme, payload, _ := strings.Cut(strings.TrimSpace(header), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", unauthorized("use Basic credentials")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", "", badRequest("malformed Basic credentials: not base64")
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", badRequest("malformed Basic credentials: no colon between user and password")
	}
	if user == "" && password != "" {
		return "", "", unauthorized("user name required")
	}
	if f := checkCredentials(user, password, jwt); f != nil {
		return "", "", f
	}
	return user, password, nil
}
