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
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Vault identities as registry users, two ways in:
//
//   - A Vault token as the password, under the user name
//     identity.vault_token_user ("vault"): the relay asks
//     <service>/token/identity with that token, not its own. This serves CI
//     jobs (JWT auth), AppRole, Kubernetes and people with `vault login`.
//   - A password of a Vault auth method behind the relay
//     (identity.password_mounts: userpass, ldap, okta, radius): a Basic
//     login that the plugin refuses is tried at auth/<mount>/login/<user>,
//     and the Vault token it gets asks <service>/token/identity.
//
// A plugin user comes first: its password is checked by the plugin, and
// only a refused login goes on to the auth mounts. Every refused login goes
// the same way, so an unknown user and a wrong password cost the same and
// answer alike. A proven password reuses its Vault token for
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
	// TokenReuse is how long a password proven at an auth mount reuses
	// its Vault token (at most half the token's TTL); default 1m, 0s: never.
	TokenReuse Duration `yaml:"token_reuse"`
}

// Defaults and bounds of the identity section.
const (
	DefaultVaultTokenUser = "vault"
	DefaultTokenReuse     = time.Minute
	maxPasswordMounts     = 16
	// maxVaultTokenBytes bounds a Vault token sent as a password: batch
	// tokens are the longest, a few hundred bytes.
	maxVaultTokenBytes = 1024
)

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
		if len(m) > 128 || !mountNameRE.MatchString(m) || strings.Contains(m, "..") {
			return c.errorf("identity.password_mounts", "want auth mount paths such as ldap or userpass (without auth/), got %s", quote(m))
		}
		if seen[m] {
			return c.errorf("identity.password_mounts", "mount %s listed twice", quote(m))
		}
		seen[m] = true
	}
	if err := checkTimeout(time.Duration(id.TokenReuse)); err != nil {
		return c.errorf("identity.token_reuse", "%s", err)
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
	if _, set := c.lines["identity.token_reuse"]; !set && id.TokenReuse == 0 {
		id.TokenReuse = Duration(DefaultTokenReuse)
	}
	return id
}

// identities routes the token requests of Vault identities.
type identities struct {
	vaultTokenUser string
	mounts         []string
	reuse          time.Duration
	logins         *prometheus.CounterVec
	cache          *vaultTokenCache
}

func newIdentities(cfg *Config, m *metrics) *identities {
	c := cfg.identityDefaults()
	ids := &identities{
		vaultTokenUser: c.VaultTokenUser,
		mounts:         c.PasswordMounts,
		reuse:          time.Duration(c.TokenReuse),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godoauth_relay_identity_logins_total",
			Help: "Password logins at Vault auth mounts (identity.password_mounts), by outcome: " +
				"login (a Vault login), reused (a proven password reused its Vault token), refused.",
		}, []string{"outcome"}),
		cache: newVaultTokenCache(time.Duration(c.TokenReuse)),
	}
	for _, o := range []string{"login", "reused", "refused"} {
		ids.logins.WithLabelValues(o)
	}
	m.registry.MustRegister(ids.logins)
	return ids
}

// mint serves a token request: a Vault token as the password, else the
// plugin's users, then the password auth mounts.
func (s *Server) mint(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
	ids, v := s.identities, s.vault
	if req.RefreshToken != "" || req.Username == "" {
		return v.mint(ctx, req)
	}
	if req.Username == ids.vaultTokenUser {
		return v.mintForVaultToken(ctx, withoutRefresh(req), req.Password)
	}
	if len(ids.mounts) == 0 {
		return v.mint(ctx, req)
	}
	key := ids.cache.key(req.Username, req.Password)
	if token, ok := ids.cache.get(key); ok {
		t, f := v.mintForVaultToken(ctx, withoutRefresh(req), token)
		if f == nil || f.status != http.StatusUnauthorized {
			ids.logins.WithLabelValues("reused").Inc()
			return t, f
		}
		ids.cache.drop(key) // revoked meanwhile: log in again
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
	token, until, f := ids.login(ctx, v, req)
	if f != nil {
		if f.status == http.StatusUnauthorized && pluginRefusal.busy {
			return nil, pluginRefusal
		}
		return nil, f
	}
	if until.After(time.Now()) {
		ids.cache.put(key, token, until)
	}
	v.credentials.remember(v.credentials.vaultTokenID(req.Service, token)) // Vault just issued it
	return v.mintForVaultToken(ctx, withoutRefresh(req), token)
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

// login tries the user's password at each auth mount in turn, within the
// relay's bound on password checks, and returns the Vault token of the
// first that accepts it and until when it may be reused.
func (ids *identities) login(ctx context.Context, v *vault, req *tokenRequest) (string, time.Time, *failure) {
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
	for _, mount := range ids.mounts {
		auth, f := v.passwordLogin(ctx, mount, req.Username, req.Password)
		if f != nil {
			return "", time.Time{}, f
		}
		if auth == nil {
			continue
		}
		ids.logins.WithLabelValues("login").Inc()
		reuse := ids.reuse
		if ttl := time.Duration(auth.LeaseDuration) * time.Second; ttl > 0 {
			reuse = min(reuse, ttl/2)
		}
		return auth.ClientToken, time.Now().Add(reuse), nil
	}
	ids.logins.WithLabelValues("refused").Inc()
	return "", time.Time{}, refused
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
	release, f := v.enter(ctx)
	if f != nil {
		return nil, f
	}
	defer release()
	// The user is one escaped segment after the login path: NewRequest
	// would clean it with the rest (path.Join).
	r := v.client.NewRequest(http.MethodPut, "/v1/auth/"+mount+"/login")
	r.URL.RawPath = r.URL.EscapedPath() + "/" + url.PathEscape(user)
	r.URL.Path += "/" + user
	r.ClientToken = ""
	if err := r.SetJSONBody(map[string]any{"password": password}); err != nil {
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
				return nil, nil // wrong password, unknown user, or locked out by Vault
			case re.StatusCode == http.StatusNotFound:
				return nil, v.trouble("unexpected", "identity.password_mounts names no auth mount", "mount", mount)
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
	unproven := !v.credentials.proven(id)
	if unproven {
		leave, f := v.enterUnproven(ctx)
		if f != nil {
			return nil, f
		}
		defer leave()
	}
	t, f := v.identityToken(ctx, req, token, unproven)
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
	}
	v.credentials.settle(id, f)
	return t, f
}

// identityToken makes the token/identity call with the caller's token.
func (v *vault) identityToken(ctx context.Context, req *tokenRequest, token string, unproven bool) (*mintedToken, *failure) {
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
	var a tokenapi.Answer
	requestID, err := readAnswer(resp.Body, maxAnswerBytes, &a)
	if err != nil {
		if ctx.Err() != nil {
			return nil, v.transportTrouble(ctx, err, path, unproven)
		}
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	t, err := checkMinted(&a)
	if err != nil {
		return nil, v.trouble("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
	}
	t.RequestID = requestID
	return t, nil
}

// vaultTokenCache maps the MAC of a proven user and password to the Vault
// token its login got, until a time before the token's end.
type vaultTokenCache struct {
	macKey  [32]byte
	entries *ttlMap[credentialID, cachedVaultToken]
}

type cachedVaultToken struct {
	token string
	until time.Time // at most half the token's TTL after the login
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

func (c *vaultTokenCache) get(id credentialID) (string, bool) {
	e, ok := c.entries.get(id)
	if !ok || !time.Now().Before(e.until) {
		return "", false
	}
	return e.token, true
}

func (c *vaultTokenCache) put(id credentialID, token string, until time.Time) {
	c.entries.put(id, cachedVaultToken{token: token, until: until}, true)
}

func (c *vaultTokenCache) drop(id credentialID) { c.entries.delete(id) }
