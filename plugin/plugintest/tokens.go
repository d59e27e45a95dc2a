package plugintest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The Vault tokens, identity store and auth methods of a Server: what
// Vault itself does around a plugin call, so that the plugin's identity
// paths (token/identity, identity sessions in token/batch, identity
// refresh tokens) run for real. Vault sets a request's EntityID and
// ClientTokenAccessor from its token; the mount's system view reads the
// entities and groups; a lease the plugin answers belongs to the token
// that asked and is revoked with it.

// Token is what a Vault token the server knows stands for.
type Token struct {
	// EntityID is the identity entity of the token ("" for none, as a
	// root token has none).
	EntityID string
	// TTL, in seconds, is the token's life from its creation or last
	// renewal; 0: it never expires (a root token).
	TTL int
	// Deny lists paths (without /v1/) the token's policies lack: Vault
	// answers them 403 "permission denied".
	Deny []string
}

// Login is an auth method's login at auth/<mount>/login (name "") or
// auth/<mount>/login/<name>: the token it issues, its name ("" for a
// random one) and what it stands for, or a refusal (an *Error for
// Vault's status, any other error a 500). req is the login's request.
type Login func(req *Request, name string, body map[string]any) (string, Token, error)

// Error is a refusal as Vault answers it: a status and one message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// tokens is a Server's token store and identity store.
type tokens struct {
	mu       sync.Mutex
	live     map[string]*tokenEntry
	entities map[string]*logical.Entity // by id
	groups   map[string][]*logical.Group
	logins   map[string]Login // by auth mount
}

type tokenEntry struct {
	Token
	accessor string
	expires  time.Time // zero: never
	leases   []lease
	ended    bool // revoked or expired
}

// lease is a secret the plugin answered to the token's request, which
// Vault revokes with the token.
type lease struct {
	mount, path string
	secret      *logical.Secret
	data        map[string]any
}

func newTokens() *tokens {
	return &tokens{live: map[string]*tokenEntry{}, entities: map[string]*logical.Entity{},
		groups: map[string][]*logical.Group{}, logins: map[string]Login{}}
}

// AddToken makes token a live Vault token standing for t (replacing
// whatever it stood for).
func (s *Server) AddToken(token string, t Token) {
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	s.tokens.add(token, t)
}

func (ts *tokens) add(token string, t Token) *tokenEntry {
	e := &tokenEntry{Token: t, accessor: randomID()}
	if t.TTL > 0 {
		e.expires = time.Now().Add(time.Duration(t.TTL) * time.Second)
	}
	ts.live[token] = e
	return e
}

// RevokeToken revokes token as `vault token revoke` does: Vault refuses it
// from then on, and revokes the leases the plugin gave its requests
// (identity sessions, identity refresh tokens), calling the plugin's
// revocation as Vault does.
func (s *Server) RevokeToken(token string) {
	s.tokens.mu.Lock()
	var leases []lease
	if e := s.tokens.live[token]; e != nil {
		leases = s.tokens.end(token, e)
	}
	s.tokens.mu.Unlock()
	s.revokeLeases(leases)
}

// end takes the token out of the store and returns its leases to revoke;
// ts.mu is held.
func (ts *tokens) end(token string, e *tokenEntry) []lease {
	delete(ts.live, token)
	e.ended = true
	leases := e.leases
	e.leases = nil
	return leases
}

// TokenLive reports whether Vault takes token: known, not revoked, not
// expired.
func (s *Server) TokenLive(token string) bool {
	s.expireTokens()
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	return s.tokens.live[token] != nil
}

// SetEntity puts an entity in the identity store, member of groups
// (direct and inherited, as Vault's GroupsForEntity answers them).
func (s *Server) SetEntity(e *logical.Entity, groups ...*logical.Group) {
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	s.tokens.entities[e.ID] = e
	s.tokens.groups[e.ID] = groups
}

// SetLogin serves logins at auth/<mount>/login with l: the stand-in for an
// auth method (userpass, ldap, jwt, approle, kubernetes), which needs
// Vault itself. The token it issues is live from then on.
func (s *Server) SetLogin(mount string, l Login) {
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	s.tokens.logins[mount] = l
}

// identityView is a mount's system view: the test system view with the
// server's identity store.
type identityView struct {
	logical.SystemView
	ts *tokens
}

func (v identityView) EntityInfo(id string) (*logical.Entity, error) {
	v.ts.mu.Lock()
	defer v.ts.mu.Unlock()
	return v.ts.entities[id], nil
}

func (v identityView) GroupsForEntity(id string) ([]*logical.Group, error) {
	v.ts.mu.Lock()
	defer v.ts.mu.Unlock()
	return slices.Clone(v.ts.groups[id]), nil
}

// caller is the token of a request to a path behind a token, as Vault
// checks it: nil and the refusal written for an unknown, expired or
// revoked token (403, "invalid token"), or a path its policies lack.
func (s *Server) caller(w http.ResponseWriter, req *Request) *tokenEntry {
	s.tokens.mu.Lock()
	e := s.tokens.live[req.Token]
	s.tokens.mu.Unlock()
	switch {
	case e == nil:
		WriteError(w, http.StatusForbidden, InvalidToken)
	case slices.Contains(e.Deny, req.Path):
		WriteError(w, http.StatusForbidden, "permission denied")
	default:
		return e
	}
	return nil
}

// keepLease makes a secret the plugin answered to e's request a lease of
// e, and returns its id; revoked at once if e ended meanwhile.
func (s *Server) keepLease(e *tokenEntry, mount, path string, secret *logical.Secret, data map[string]any) string {
	l := lease{mount: mount, path: path, secret: secret, data: data}
	s.tokens.mu.Lock()
	ended := e.ended
	if !ended {
		e.leases = append(e.leases, l)
	}
	s.tokens.mu.Unlock()
	if ended {
		s.revokeLeases([]lease{l})
	}
	return mount + "/" + path + "/" + randomID()
}

// revokeLeases revokes leases at the plugin, as Vault's expiration
// manager does.
func (s *Server) revokeLeases(leases []lease) {
	for _, l := range leases {
		m := s.mounts[l.mount]
		req := logical.RevokeRequest(l.path, l.secret, l.data)
		req.Storage, req.MountPoint = m.Storage, l.mount+"/"
		if code, _, msg := Call(context.Background(), m.Backend, req); code >= 400 {
			s.t.Errorf("revoking a lease of %s/%s: %d %s", l.mount, l.path, code, msg)
		}
	}
}

// expireTokens ends the tokens past their TTL, and their leases, as Vault
// does.
func (s *Server) expireTokens() {
	now := time.Now()
	var ended []lease
	s.tokens.mu.Lock()
	for tok, e := range s.tokens.live {
		if !e.expires.IsZero() && now.After(e.expires) {
			ended = append(ended, s.tokens.end(tok, e)...)
		}
	}
	s.tokens.mu.Unlock()
	s.revokeLeases(ended)
}

// serveTokenSelf answers auth/token/lookup-self, renew-self and
// revoke-self for the request's token, as Vault does.
func (s *Server) serveTokenSelf(w http.ResponseWriter, req *Request) {
	e := s.caller(w, req)
	if e == nil {
		return
	}
	s.tokens.mu.Lock()
	ttl, accessor := e.TTL, e.accessor
	if !e.expires.IsZero() && req.Path == "auth/token/lookup-self" {
		ttl = int((time.Until(e.expires) + time.Second - 1) / time.Second) // what is left
	}
	if req.Path == "auth/token/renew-self" && e.TTL > 0 {
		e.expires = time.Now().Add(time.Duration(e.TTL) * time.Second)
	}
	s.tokens.mu.Unlock()
	switch req.Path {
	case "auth/token/lookup-self":
		WriteJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
			"ttl": ttl, "renewable": ttl > 0, "entity_id": e.EntityID, "accessor": accessor}})
	case "auth/token/renew-self":
		WriteJSON(w, http.StatusOK, map[string]any{"auth": s.authAnswer(req.Token, e)})
	case "auth/token/revoke-self":
		s.RevokeToken(req.Token)
		w.WriteHeader(http.StatusNoContent)
	}
}

// authAnswer is the auth block of a login or a renewal.
func (s *Server) authAnswer(token string, e *tokenEntry) map[string]any {
	return map[string]any{"client_token": token, "accessor": e.accessor, "entity_id": e.EntityID,
		"renewable": e.TTL > 0, "lease_duration": e.TTL, "policies": []string{"default"}}
}

// serveLogin answers auth/<mount>/login[/<name>] with the mount's Login;
// false when the path is no login the server has.
func (s *Server) serveLogin(w http.ResponseWriter, req *Request, body map[string]any) bool {
	rest, ok := strings.CutPrefix(req.Path, "auth/")
	if !ok {
		return false
	}
	mount, name, ok := strings.Cut(rest, "/login")
	if !ok || (name != "" && !strings.HasPrefix(name, "/")) {
		return false
	}
	s.tokens.mu.Lock()
	login := s.tokens.logins[mount]
	s.tokens.mu.Unlock()
	if login == nil {
		return false
	}
	token, t, err := login(req, strings.TrimPrefix(name, "/"), body)
	var refusal *Error
	switch {
	case errors.As(err, &refusal):
		WriteError(w, refusal.Status, refusal.Message)
		return true
	case err != nil:
		WriteError(w, http.StatusInternalServerError, err.Error())
		return true
	}
	if token == "" {
		token = "hvs." + randomID()
	}
	s.tokens.mu.Lock()
	e := s.tokens.add(token, t)
	s.tokens.mu.Unlock()
	WriteJSON(w, http.StatusOK, map[string]any{"request_id": newRequestID(), "auth": s.authAnswer(token, e)})
	return true
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
