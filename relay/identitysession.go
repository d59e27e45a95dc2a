package relay

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Identity sessions: the requests of a Vault identity share token/batch
// calls as plugin users' do. Vault has no call that checks several Vault
// tokens at once, and the relay's own token must never mint for an entity
// on another's word; so a Vault token proven lately asks, on its own
// token/identity call, for an identity session: a secret that the plugin
// issues as a Vault lease of that Vault token (at most a minute), naming
// that token's entity. Its next requests go into batches with the secret
// in place of the token; the plugin grants the session's entity its access
// as it is at each request. Vault revokes the lease, and the plugin the
// session, when the Vault token is revoked or expires; a batch then
// refuses the session (401), and the request goes on its own with its
// Vault token, whose refusal the client gets as before.
//
// The relay keeps each session under the keyed hash of the Vault token and
// mount (credentials.vaultTokenID), in memory only, never in a log, never
// in an answer; a request finds a session only with the very token that
// asked for it. A session is useless without the relay's own Vault token:
// only token/batch takes it.

// identitySessions maps credentials.vaultTokenID to the token's session.
type identitySessions struct {
	entries *ttlMap[credentialID, identitySession]
	asking  sync.Map // credentialID → struct{}: a session is being asked for
}

type identitySession struct {
	secret string
	until  time.Time
}

// maxIdentitySessionTTL bounds how long the relay keeps a session,
// whatever the plugin answers; the plugin's are a minute.
const maxIdentitySessionTTL = 10 * time.Minute

// sessionAnswer is token/identity's answer with identity_session.
type sessionAnswer struct {
	tokenapi.Answer
	Session    string `json:"identity_session"`
	SessionTTL int64  `json:"identity_session_ttl"`
}

func newIdentitySessions() *identitySessions {
	return &identitySessions{entries: newTTLMap[credentialID, identitySession](maxIdentitySessionTTL, maxProven)}
}

// get returns id's session secret while it may be used.
func (s *identitySessions) get(id credentialID) (string, bool) {
	e, ok := s.entries.get(id)
	if !ok || !time.Now().Before(e.until) {
		return "", false
	}
	return e.secret, true
}

// keep keeps the session an answer holds, if any, for four fifths of its
// TTL: a request made with it then never meets its end (a plugin older
// than sessions answers none, and nothing is kept).
func (s *identitySessions) keep(id credentialID, a *sessionAnswer) {
	ttl := min(time.Duration(a.SessionTTL)*time.Second, maxIdentitySessionTTL)
	if a.Session == "" || len(a.Session) > maxVaultTokenBytes || strings.ContainsAny(a.Session, "\x00 \t\r\n") || ttl <= 0 {
		return
	}
	s.entries.put(id, identitySession{secret: a.Session, until: time.Now().Add(ttl * 4 / 5)}, true)
}

func (s *identitySessions) drop(id credentialID) { s.entries.delete(id) }

// claim reports whether the caller is to ask for id's session: it has
// none, and no other request is asking for one.
func (s *identitySessions) claim(id credentialID) bool {
	if _, ok := s.get(id); ok {
		return false
	}
	_, asking := s.asking.LoadOrStore(id, struct{}{})
	return !asking
}

func (s *identitySessions) release(id credentialID) { s.asking.Delete(id) }

// mintWithSession serves req in the mount's next batch with the session
// of token, when batching is on and the token has one (ok). A batch that
// refuses the session (revoked with its Vault token, or expired) drops it,
// and the request goes on its own with the token.
func (v *vault) mintWithSession(ctx context.Context, req *tokenRequest, token string, id credentialID) (t *mintedToken, f *failure, ok bool) {
	if !v.batch {
		return nil, nil, false
	}
	secret, ok := v.sessions.get(id)
	if !ok {
		return nil, nil, false
	}
	leave, ok := v.credentials.enterProven(id)
	if !ok {
		return nil, nil, false // this token's burst past its places goes alone
	}
	defer leave()
	r := *req
	r.IdentitySession = secret
	e := &batchEntry{ctx: ctx, req: &r, done: make(chan batchResult, 1),
		fallback: func(ctx context.Context, refused bool) (*mintedToken, *failure) {
			if refused {
				v.sessions.drop(id)
			}
			return v.mintForVaultTokenAlone(ctx, req, token, id)
		}}
	t, f = v.batcher(req.Service).submitEntry(e)
	if f == nil {
		v.issuer.check(req.Service, t.Issuer)
	}
	v.credentials.settle(id, f)
	return t, f, true
}
