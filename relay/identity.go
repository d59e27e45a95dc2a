package relay

import (
	"context"
	"fmt"
	"net/http"
	"strings"
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
// password or JWT, a failure for Vault's own error.
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
		return "", time.Time{}, v.noAnswer(ctx, ctx.Err(), "auth/login", true)
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
	path := req.Service + "/" + tokenapi.PathIdentityToken
	body := req.vaultBody(v.ttl)
	// token/identity takes no client address: its caller is the user's
	// own Vault token, so the plugin cannot take it as the relay's word.
	for _, k := range []string{tokenapi.FieldUsername, tokenapi.FieldPassword, tokenapi.FieldAccount, tokenapi.FieldClientAddr} {
		delete(body, k)
	}
	if ask != nil {
		body[tokenapi.FieldIdentitySession] = true
	}
	var a sessionAnswer
	t, f := v.tokenCallInto(ctx, &vaultCall{
		path:        path,
		body:        body,
		callerToken: true,
		token:       token,
		unproven:    unproven,
		req:         req,
		refused: func(err error, resp *api.Response) *failure {
			// The call carries the caller's token, not the relay's: a 403
			// refuses that token (the client's 401), it says nothing of the
			// relay's token or policy.
			if statusCode(err) == http.StatusForbidden {
				return errVaultTokenRefused("vault refused the token (403): invalid or expired, or its policies lack update on " + path)
			}
			return v.refusal(ctx, err, resp, req, unproven)
		},
	}, &a, &a.Answer)
	if f == nil && ask != nil {
		v.sessions.keep(*ask, &a)
	}
	return t, f
}

// revokeLater revokes a Vault token the relay logged in for and no longer
// uses (auth/token/revoke-self with that token, which Vault's default
// policy allows), after the Vault timeout: requests that took it just
// before it was replaced finish first. A failure leaves it to its TTL.
func (v *vault) revokeLater(token string) {
	time.AfterFunc(v.timeout, func() {
		ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
		defer cancel()
		var failed error
		f := v.call(ctx, &vaultCall{
			path:        "auth/token/revoke-self",
			body:        map[string]any{},
			callerToken: true,
			token:       token,
			refused: func(err error, _ *api.Response) *failure {
				failed = err
				return errVaultTokenRefused("revoke-self refused")
			},
			// Vault answers 204, no body: nothing to read.
			malformed: func(error) *failure { return nil },
		}, &vaultAnswer{})
		if f != nil {
			v.log.Debug("could not revoke a replaced Vault login token; it ends at its TTL", "error", failed, "reason", f.msg)
		}
	})
}
