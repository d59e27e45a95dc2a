package relay

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/api"
)

// route sends a token request, whose service is a mount of the plugin,
// the way its credentials say: a refresh token or none (anonymous) to the
// plugin; a Vault token as the password (identity.vault_token_user) to
// token/identity with that token; a jwt_logins user's JWT to its jwt
// mount, then token/identity; else the plugin's users, and a password the
// plugin refuses on to identity.password_mounts (identity.go).
func (s *Server) route(ctx context.Context, req *tokenRequest) (*mintedToken, *failure) {
	ids, v := s.identities, s.vault
	if req.RefreshToken != "" || req.Username == "" {
		return v.askPlugin(ctx, req)
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
		return v.askPlugin(ctx, req)
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
	t, f := v.askPlugin(ctx, req)
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
