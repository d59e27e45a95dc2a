package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Vault identities as registry users, three ways in:
//
//   - A Vault token as the password, under the user name
//     identity.vault_token_user ("vault"): the relay asks
//     <service>/token/identity with that token, not its own. This serves CI
//     jobs (JWT auth), AppRole, Kubernetes and people with `vault login`.
//   - A password of a Vault auth method behind the relay
//     (identity.password_mounts: userpass, ldap, okta, radius): a Basic
//     login that the plugin refuses is tried at auth/<mount>/login/<user>,
//     and the Vault token it gets asks <service>/token/identity.
//   - A JWT as the password of a user named in identity.jwt_logins (a CI
//     job's identity token): it is sent with the user's role to the user's
//     jwt auth mount, auth/<mount>/login, and the Vault token it gets asks
//     <service>/token/identity. Such a user is never a plugin user, and
//     only its password may be up to maxJWTBytes long.
//
// A plugin user comes first: its password is checked by the plugin, and
// only a refused login goes on to the auth mounts. Every refused login goes
// the same way, so an unknown user and a wrong password cost the same and
// answer alike. A proven password or JWT reuses its Vault token for
// identity.token_reuse, at most half the token's TTL, never beyond it; the
// relay keeps a keyed MAC of the user and password, never the password.

// IdentityConfig is the `identity` section of the relay's YAML.
type IdentityConfig struct {
	// VaultTokenUser is the user name that says "the password is a Vault
	// token"; default "vault".
	VaultTokenUser string `yaml:"vault_token_user"`
	// PasswordMounts are Vault auth mounts of password kind (userpass,
	// ldap, okta, radius), tried in order.
	PasswordMounts []string `yaml:"password_mounts"`
	// JWTLogins are user names whose password is a JWT (a CI job's
	// identity token), logged in at a Vault jwt auth mount with a role.
	JWTLogins []JWTLogin `yaml:"jwt_logins"`
	// TokenReuse is how long a password or JWT proven at an auth mount
	// reuses its Vault token (at most half the token's TTL); default 1m,
	// 0s: never.
	TokenReuse Duration `yaml:"token_reuse"`
}

// JWTLogin is one item of identity.jwt_logins: a Basic login as User
// sends its password, a JWT, to auth/<Mount>/login with Role.
type JWTLogin struct {
	User  string `yaml:"user"`
	Mount string `yaml:"mount"`
	Role  string `yaml:"role"`
}

// Defaults and bounds of the identity section.
const (
	DefaultVaultTokenUser = "vault"
	DefaultTokenReuse     = time.Minute
	maxPasswordMounts     = 16
	maxJWTLogins          = 16
	// maxVaultTokenBytes bounds a Vault token sent as a password: batch
	// tokens are the longest, a few hundred bytes.
	maxVaultTokenBytes = 1024
	// maxJWTBytes bounds the password of a jwt_logins user, a JWT: CI
	// identity tokens are 1-4 KiB.
	maxJWTBytes = 8 << 10
)

// roleNameRE is a Vault role name as the jwt auth method's role paths take
// it (framework.GenericNameRegex), at most 128 bytes.
var roleNameRE = regexp.MustCompile(`^\w([\w.-]{0,126}\w)?$`)

var mountNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)

// loginNameRE is what a user name must look like to be sent to an auth
// mount: it becomes a segment of a Vault path.
var loginNameRE = regexp.MustCompile(`^[A-Za-z0-9_.@+-]{1,256}$`)

func (c *Config) checkIdentity() error {
	id := c.Identity
	if u := id.VaultTokenUser; u != "" && (strings.ContainsAny(u, ": \t") || checkName("user", u) != nil) {
		return c.errorf("identity.vault_token_user", "want a user name without blanks or \":\", got %s", quote(u))
	}
	if len(id.PasswordMounts) > maxPasswordMounts {
		return c.errorf("identity.password_mounts", "at most %d mounts", maxPasswordMounts)
	}
	seen := map[string]bool{}
	for _, m := range id.PasswordMounts {
		m = strings.TrimSuffix(m, "/")
		if !authMountPath(m) {
			return c.errorf("identity.password_mounts", "want auth mount paths such as ldap or userpass (without auth/), got %s", quote(m))
		}
		if seen[m] {
			return c.errorf("identity.password_mounts", "mount %s listed twice", quote(m))
		}
		seen[m] = true
	}
	if err := c.checkJWTLogins(); err != nil {
		return err
	}
	if err := checkTimeout(time.Duration(id.TokenReuse)); err != nil {
		return c.errorf("identity.token_reuse", "%s", err)
	}
	return nil
}

// authMountPath reports whether m (without a trailing "/") may name an
// auth mount: auth/<m>/login is the only path it becomes.
func authMountPath(m string) bool {
	return len(m) <= 128 && mountNameRE.MatchString(m) && !strings.Contains(m, "..")
}

func (c *Config) checkJWTLogins() error {
	const key = "identity.jwt_logins"
	logins := c.Identity.JWTLogins
	if len(logins) > maxJWTLogins {
		return c.errorf(key, "at most %d logins", maxJWTLogins)
	}
	tokenUser := c.Identity.VaultTokenUser
	if tokenUser == "" {
		tokenUser = DefaultVaultTokenUser
	}
	users := map[string]bool{}
	for _, l := range logins {
		switch {
		case !loginName(l.User):
			return c.errorf(key, "user: want a user name of letters, digits and _.@+-, got %s", quote(l.User))
		case l.User == tokenUser:
			return c.errorf(key, "user %s is identity.vault_token_user", quote(l.User))
		case users[l.User]:
			return c.errorf(key, "user %s listed twice", quote(l.User))
		case !authMountPath(strings.TrimSuffix(l.Mount, "/")):
			return c.errorf(key, "mount: want a jwt auth mount path such as jwt or gitlab (without auth/), got %s", quote(l.Mount))
		case !roleNameRE.MatchString(l.Role):
			return c.errorf(key, "role: want a Vault role name, got %s", quote(l.Role))
		}
		users[l.User] = true
	}
	return nil
}

// identityDefaults is the identity section with defaults filled in; the
// file's section stays as written, like godoauth's own sections would.
func (c *Config) identityDefaults() IdentityConfig {
	id := c.Identity
	if id.VaultTokenUser == "" {
		id.VaultTokenUser = DefaultVaultTokenUser
	}
	id.PasswordMounts = make([]string, len(c.Identity.PasswordMounts))
	for i, m := range c.Identity.PasswordMounts {
		id.PasswordMounts[i] = strings.TrimSuffix(m, "/")
	}
	id.JWTLogins = make([]JWTLogin, len(c.Identity.JWTLogins))
	for i, l := range c.Identity.JWTLogins {
		l.Mount = strings.TrimSuffix(l.Mount, "/")
		id.JWTLogins[i] = l
	}
	if _, set := c.lines["identity.token_reuse"]; !set && id.TokenReuse == 0 {
		id.TokenReuse = Duration(DefaultTokenReuse)
	}
	return id
}

// identities routes the token requests of Vault identities.
type identities struct {
	vaultTokenUser string
	mounts         []string
	jwt            jwtUsers
	reuse          time.Duration
	logins         *prometheus.CounterVec
	cache          *vaultTokenCache
	// flight runs one login per user and password at a time: requests
	// that arrive while it runs wait for its Vault token (loginOnce).
	flight singleflight.Group
}

// jwtUsers maps each identity.jwt_logins user to its login.
type jwtUsers map[string]JWTLogin

// maxPassword is the longest password user may send: a JWT for a
// jwt_logins user, else maxPasswordBytes. A nil map knows no JWT user.
func (j jwtUsers) maxPassword(user string) int {
	if _, ok := j[user]; ok {
		return maxJWTBytes
	}
	return maxPasswordBytes
}

func newIdentities(cfg *Config, m *metrics) *identities {
	c := cfg.identityDefaults()
	ids := &identities{
		vaultTokenUser: c.VaultTokenUser,
		mounts:         c.PasswordMounts,
		jwt:            jwtUsers{},
		reuse:          time.Duration(c.TokenReuse),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_identity_logins_total",
			Help: "Logins at Vault auth mounts (identity.password_mounts, identity.jwt_logins), by outcome: " +
				"login (a Vault login), reused (a proven password or JWT reused its Vault token), refused.",
		}, []string{"outcome"}),
		cache: newVaultTokenCache(time.Duration(c.TokenReuse)),
	}
	for _, l := range c.JWTLogins {
		ids.jwt[l.User] = l
	}
	for _, o := range []string{"login", "reused", "refused"} {
		ids.logins.WithLabelValues(o)
	}
	m.registry.MustRegister(ids.logins)
	return ids
}

// mint serves a token request: a Vault token as the password, a JWT of a
// jwt_logins user, else the plugin's users, then the password auth mounts.
func (s *Server) mint(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
	ids, v := s.identities, s.vault
	if req.RefreshToken != "" || req.Username == "" {
		return v.mint(ctx, req)
	}
	if req.Username == ids.vaultTokenUser {
		return v.mintForVaultToken(ctx, withoutRefresh(req), req.Password)
	}
	if l, ok := ids.jwt[req.Username]; ok {
		// A JWT user is never a plugin user: its password goes to its
		// jwt mount only.
		key := ids.cache.key(req.Username, req.Password)
		try := func(ctx context.Context) (*api.SecretAuth, *failure) {
			return v.jwtLogin(ctx, l.Mount, l.Role, req.Password)
		}
		if t, f, ok := ids.reused(ctx, v, req, key, try); ok {
			return t, f
		}
		token, until, f := ids.loginOnce(ctx, v, req, key, try)
		if f != nil {
			return nil, f
		}
		return ids.mintLoggedIn(ctx, v, req, key, token, until)
	}
	if len(ids.mounts) == 0 {
		return v.mint(ctx, req)
	}
	key := ids.cache.key(req.Username, req.Password)
	try := func(ctx context.Context) (*api.SecretAuth, *failure) {
		for _, mount := range ids.mounts {
			if auth, f := v.passwordLogin(ctx, mount, req.Username, req.Password); auth != nil || f != nil {
				return auth, f
			}
		}
		return nil, nil
	}
	if t, f, ok := ids.reused(ctx, v, req, key, try); ok {
		return t, f
	}
	t, f := v.mint(ctx, req)
	// The plugin refuses a name it does not hold like a wrong password, and
	// counts it, so after lockout_threshold logins of an LDAP user it
	// answers 429 for that name. Both refusals go on to the auth mounts,
	// which have their own lockout. When the mounts refuse too, the answer
	// is their 401 whatever the plugin said: a 429 there would tell an
	// LDAP user who logs in often from a name nobody uses. Only the
	// plugin's busy refusal (nothing checked) stands, so the client retries.
	if f == nil || (f.status != http.StatusUnauthorized && f.status != http.StatusTooManyRequests) {
		return t, f
	}
	pluginRefusal := f
	token, until, f := ids.loginOnce(ctx, v, req, key, try)
	if f != nil {
		if f.status == http.StatusUnauthorized && pluginRefusal.busy {
			return nil, pluginRefusal
		}
		return nil, f
	}
	return ids.mintLoggedIn(ctx, v, req, key, token, until)
}

// reused serves req with the Vault token a proven login with the same
// user and password got, if one is cached (ok); a token revoked meanwhile
// is dropped, and the caller logs in again. A token in the last fifth of
// its reuse is replaced ahead of time: one login in the background (try,
// single-flight), while requests go on with the token they have, so a
// steady load never meets an expiry.
func (ids *identities) reused(ctx context.Context, v *vault, req *tokenRequest, key credentialID, try loginFunc) (t *mintedToken, f *failure, ok bool) {
	token, renew, ok := ids.cache.get(key)
	if !ok {
		return nil, nil, false
	}
	if renew {
		ids.renewAhead(ctx, v, req, key, token, try)
	}
	t, f = v.mintForVaultToken(ctx, withoutRefresh(req), token)
	if f == nil || f.status != http.StatusUnauthorized {
		ids.logins.WithLabelValues("reused").Inc()
		return t, f, true
	}
	ids.cache.dropToken(key, token) // revoked meanwhile: log in again
	return nil, nil, false
}

// mintLoggedIn serves req with the Vault token a login just got, cached
// under key until it may no longer be reused.
func (ids *identities) mintLoggedIn(ctx context.Context, v *vault, req *tokenRequest, key credentialID, token string, until time.Time) (*mintedToken, *failure) {
	if until.After(time.Now()) {
		ids.cache.put(key, token, until)
	}
	v.credentials.remember(v.credentials.vaultTokenID(req.Service, token)) // Vault just issued it
	return v.mintForVaultToken(ctx, withoutRefresh(req), token)
}

// loginFunc logs a user in at Vault: (nil, nil) when Vault refuses the
// password or JWT, a failure for Vault's own trouble.
type loginFunc func(context.Context) (*api.SecretAuth, *failure)

// loggedIn is the outcome of one login, shared by the requests that
// waited for it.
type loggedIn struct {
	token string
	until time.Time
	f     *failure
}

// loginOnce is login, once per user and password at a time: requests with
// the same credentials that arrive while a login runs wait for it and
// share its Vault token, so an expiry under load costs one login, not one
// per request. The login runs on its own deadline (the Vault timeout), so
// a waiter that leaves does not fail the others.
func (ids *identities) loginOnce(ctx context.Context, v *vault, req *tokenRequest, key credentialID, try loginFunc) (string, time.Time, *failure) {
	ch := ids.flight.DoChan(string(key[:]), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.timeout)
		defer cancel()
		token, until, f := ids.login(lctx, v, req, try)
		return loggedIn{token, until, f}, nil
	})
	select {
	case r := <-ch:
		l := r.Val.(loggedIn)
		return l.token, l.until, l.f
	case <-ctx.Done():
		return "", time.Time{}, v.transportTrouble(ctx, ctx.Err(), "auth/login", true)
	}
}

// renewAhead replaces a cached Vault token before its reuse ends, in the
// background: one login (loginOnce's flight), whose token replaces the
// cached one when Vault takes the credentials again, and is dropped
// otherwise (the next request then logs in, and is refused, as usual).
// The token it replaces is revoked (revokeLater): a login each reuse
// period must not leave a live Vault token behind each time.
func (ids *identities) renewAhead(ctx context.Context, v *vault, req *tokenRequest, key credentialID, old string, try loginFunc) {
	if !ids.cache.claimRenewal(key) {
		return // one renewal per entry
	}
	r := *req
	go func() {
		token, until, f := ids.loginOnce(context.WithoutCancel(ctx), v, &r, key, try)
		switch {
		case f == nil && until.After(time.Now()):
			ids.cache.put(key, token, until)
			v.credentials.remember(v.credentials.vaultTokenID(r.Service, token))
			if token != old {
				v.revokeLater(old)
			}
		case f != nil && f.status == http.StatusUnauthorized:
			ids.cache.drop(key)
		}
	}()
}

// withoutRefresh is req asking no refresh token. The relay asks none for
// an identity: it would outlive what proved the identity (a Vault token of
// a CI job lives minutes; an LDAP account deleted keeps its Vault entity),
// while a client keeping the password or Vault token has every login
// checked by Vault again. Callers of token/identity may still ask one.
func withoutRefresh(req *tokenRequest) *tokenRequest {
	r := *req
	r.Offline = false
	return &r
}

// login proves the user's password with try (the password auth mounts in
// turn, or a jwt mount), within the relay's bound on password checks, and
// returns the Vault token it got and until when it may be reused. try
// answers (nil, nil) for a refused password; every refusal answers alike.
func (ids *identities) login(ctx context.Context, v *vault, req *tokenRequest, try loginFunc) (string, time.Time, *failure) {
	refused := unauthorized("invalid username or password")
	if !loginName(req.Username) || req.Password == "" {
		ids.logins.WithLabelValues("refused").Inc()
		return "", time.Time{}, refused
	}
	leave, f := v.enterUnproven(ctx)
	if f != nil {
		return "", time.Time{}, f
	}
	defer leave()
	auth, f := try(ctx)
	if f != nil {
		return "", time.Time{}, f
	}
	if auth == nil {
		ids.logins.WithLabelValues("refused").Inc()
		return "", time.Time{}, refused
	}
	ids.logins.WithLabelValues("login").Inc()
	reuse := ids.reuse
	if ttl := time.Duration(auth.LeaseDuration) * time.Second; ttl > 0 {
		reuse = min(reuse, ttl/2)
	}
	return auth.ClientToken, time.Now().Add(reuse), nil
}

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

// errVaultTokenRefused is every refusal of a Vault token sent as the
// password: a made-up token, an expired one, a root token (no entity), one
// whose policies lack the path all answer alike, so the public endpoint
// tells no kind of token from another. The cause goes to the relay's log
// (failure.reason).
func errVaultTokenRefused(reason string) *failure {
	f := unauthorized("invalid Vault token: it is unknown, expired or revoked, has no identity entity, " +
		"or its policies lack update on the service's token/identity path")
	f.reason = reason
	return f
}

// mintForVaultToken asks <service>/token/identity with the caller's Vault
// token. Vault refusing that token is the caller's 401, not an outage. A
// token not seen to get a registry token lately takes an unproven place
// (credentials.go), as a password does: made-up tokens cannot hold the
// relay's Vault call slots, and their timeouts do not mark Vault down.
func (v *vault) mintForVaultToken(ctx context.Context, req *tokenRequest, token string) (*mintedToken, *failure) {
	if token == "" || len(token) > maxVaultTokenBytes || strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return nil, errVaultTokenRefused("malformed Vault token")
	}
	id := v.credentials.vaultTokenID(req.Service, token)
	if t, f, ok := v.mintWithSession(ctx, req, token, id); ok {
		return t, f
	}
	return v.mintForVaultTokenAlone(ctx, req, token, id)
}

// mintForVaultTokenAlone is mintForVaultToken's own token/identity call
// with the caller's token; a token proven lately also asks for an
// identity session, so that its next requests may share batches.
func (v *vault) mintForVaultTokenAlone(ctx context.Context, req *tokenRequest, token string, id credentialID) (*mintedToken, *failure) {
	unproven := !v.credentials.proven(id)
	if unproven {
		leave, f := v.enterUnproven(ctx)
		if f != nil {
			return nil, f
		}
		defer leave()
	}
	var ask *credentialID
	if !unproven && v.sessions.claim(id) {
		defer v.sessions.release(id)
		ask = &id
	}
	t, f := v.identityToken(ctx, req, token, unproven, ask)
	switch {
	case f == nil:
		v.issuer.check(req.Service, t.Issuer)
	case refusedCredential(f) && f.status != http.StatusTooManyRequests:
		// A 429 is Vault's rate limit, not the token's refusal.
		reason := f.reason
		if reason == "" {
			reason = fmt.Sprintf("%d %s", f.status, f.msg)
		}
		f = errVaultTokenRefused(reason)
		// Vault refused the token: its session, if any, goes too, so no
		// batch serves it in the moment before Vault revokes the lease.
		v.sessions.drop(id)
	}
	v.credentials.settle(id, f)
	return t, f
}

// identityToken makes the token/identity call with the caller's token;
// with ask, it also asks for an identity session, kept under *ask.
func (v *vault) identityToken(ctx context.Context, req *tokenRequest, token string, unproven bool, ask *credentialID) (*mintedToken, *failure) {
	release, f := v.enter(ctx)
	if f != nil {
		return nil, f
	}
	defer release()
	path := req.Service + "/" + tokenapi.PathIdentityToken
	r := v.client.NewRequest(http.MethodPut, "/v1/"+path)
	r.ClientToken = token
	body := req.vaultBody(v.ttl)
	// token/identity takes no client address: its caller is the user's
	// own Vault token, so the plugin cannot take it as the relay's word.
	for _, k := range []string{tokenapi.FieldUsername, tokenapi.FieldPassword, tokenapi.FieldAccount, tokenapi.FieldClientAddr} {
		delete(body, k)
	}
	if ask != nil {
		body[tokenapi.FieldIdentitySession] = true
	}
	if err := r.SetJSONBody(body); err != nil {
		return nil, v.trouble("unexpected", "cannot encode a token request", "path", path)
	}
	resp, err := v.client.RawRequestWithContext(ctx, r)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			return nil, errVaultTokenRefused("vault refused the token (403): invalid or expired, or its policies lack update on " + path)
		}
		return nil, v.refusal(ctx, err, resp, req, unproven)
	}
	var a sessionAnswer
	requestID, err := readAnswer(resp.Body, maxAnswerBytes, &a)
	if err != nil {
		if ctx.Err() != nil {
			return nil, v.transportTrouble(ctx, err, path, unproven)
		}
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	t, err := checkMinted(&a.Answer)
	if err != nil {
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	t.RequestID = requestID
	if ask != nil {
		v.sessions.keep(*ask, &a)
	}
	return t, nil
}

// vaultTokenCache maps the MAC of a proven user and password to the Vault
// token its login got, until a time before the token's end.
type vaultTokenCache struct {
	macKey  [32]byte
	entries *ttlMap[credentialID, cachedVaultToken]
}

type cachedVaultToken struct {
	token   string
	until   time.Time // at most half the token's TTL after the login
	renewAt time.Time // four fifths of the way from the login to until
	renewal *atomic.Bool
}

func newVaultTokenCache(reuse time.Duration) *vaultTokenCache {
	c := &vaultTokenCache{entries: newTTLMap[credentialID, cachedVaultToken](reuse, maxProven)}
	_, _ = rand.Read(c.macKey[:]) // never fails (crypto/rand panics instead)
	return c
}

func (c *vaultTokenCache) key(user, password string) credentialID {
	var id credentialID
	m := hmac.New(sha256.New, c.macKey[:])
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Sum(id[:0])
	return id
}

// get returns the cached token of id, and whether it is due for renewal.
func (c *vaultTokenCache) get(id credentialID) (token string, renew, ok bool) {
	e, ok := c.entries.get(id)
	now := time.Now()
	if !ok || !now.Before(e.until) {
		return "", false, false
	}
	return e.token, !now.Before(e.renewAt), true
}

func (c *vaultTokenCache) put(id credentialID, token string, until time.Time) {
	now := time.Now()
	renewAt := now.Add(until.Sub(now) * 4 / 5)
	c.entries.put(id, cachedVaultToken{token: token, until: until, renewAt: renewAt, renewal: new(atomic.Bool)}, true)
}

// claimRenewal reports whether the caller is the first to renew id's
// token ahead of its end.
func (c *vaultTokenCache) claimRenewal(id credentialID) bool {
	e, ok := c.entries.get(id)
	return ok && e.renewal.CompareAndSwap(false, true)
}

func (c *vaultTokenCache) drop(id credentialID) { c.entries.delete(id) }

// dropToken drops id's entry if it still holds token: a request refused
// with a token that was replaced meanwhile leaves the new one.
func (c *vaultTokenCache) dropToken(id credentialID, token string) {
	if e, ok := c.entries.get(id); ok && e.token == token {
		c.entries.delete(id)
	}
}

// revokeLater revokes a Vault token the relay logged in for and no longer
// uses (auth/token/revoke-self with that token, which Vault's default
// policy allows), after the Vault timeout: requests that took it just
// before it was replaced finish first. A failure leaves it to its TTL.
func (v *vault) revokeLater(token string) {
	time.AfterFunc(v.timeout, func() {
		ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
		defer cancel()
		release, f := v.enter(ctx)
		if f != nil {
			return
		}
		defer release()
		r := v.client.NewRequest(http.MethodPut, "/v1/auth/token/revoke-self")
		r.ClientToken = token
		resp, err := v.client.RawRequestWithContext(ctx, r)
		if resp != nil {
			resp.Body.Close()
		}
		if err != nil {
			v.log.Debug("could not revoke a replaced Vault login token; it ends at its TTL", "error", err)
		}
	})
}
