package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// A password the plugin has not verified lately costs it a bcrypt check;
// it runs a few at a time and queues the rest for up to two seconds. A
// flood of wrong passwords would hold every Vault call slot of the relay
// while it waits in that queue, and users whose credential the plugin has
// cached would wait behind it. So the relay remembers, for as long as the
// plugin caches them by default, the credentials that got a token (as
// keyed hashes; the key is random and never leaves the process), and
// requests with any other password take at most maxUnprovenCalls slots.
// The same goes for Vault tokens sent as the password (identity.go): a
// token not seen to get a registry token lately takes an unproven place.
//
// A credential stays proven only while the plugin takes it: any refusal
// but the plugin's busy one (nothing was checked) forgets it, a locked-out
// user's 429 included. Else a user who got one token, then locked their
// own account, would send their right password on the proven path: past
// the bound on unproven checks and into the mount's batches, where each
// refusal waits for the plugin's decoy password check.

const (
	// maxUnprovenCalls bounds the Vault calls in flight for passwords
	// that have not got a token lately; more wait for a place until
	// their deadline, then get 429.
	maxUnprovenCalls = maxVaultCalls / 4
	// provenTTL is how long a credential that got a token is remembered:
	// the plugin's default credential_cache_ttl.
	provenTTL = 5 * time.Minute
	// maxProven bounds the remembered credentials.
	maxProven = 4096
	// maxProvenPerCredential bounds one credential's requests on the
	// proven path at once (Vault calls, or waiting for a batch); more go
	// as unproven. A user who locked their own account and sends the right
	// password from many connections before the first refusal comes back
	// holds no more than this (with batching: two full batches, so others
	// still find room in the queue); one client's burst of up to 64
	// requests (make bench's load) stays on the proven path.
	maxProvenPerCredential = 2 * tokenapi.MaxBatch
)

// errPasswordChecksBusy answers a password that waited too long for a place.
var errPasswordChecksBusy = lockedOut("too many password checks in progress; retry after 1s", 1)

type credentialID [sha256.Size]byte

// provenCredentials remembers the credentials that got a token lately,
// and bounds the Vault calls for the others.
type provenCredentials struct {
	key      [32]byte
	unproven chan struct{}
	known    *ttlMap[credentialID, struct{}]

	mu     sync.Mutex
	onPath map[credentialID]int // requests on the proven path
}

func newProvenCredentials() *provenCredentials {
	p := &provenCredentials{
		unproven: make(chan struct{}, maxUnprovenCalls),
		known:    newTTLMap[credentialID, struct{}](provenTTL, maxProven),
		onPath:   map[credentialID]int{},
	}
	_, _ = rand.Read(p.key[:]) // never fails (crypto/rand panics instead)
	return p
}

// id is the keyed hash of the request's credential; false for a request
// without a password (refresh token, anonymous), which costs the plugin
// no password check.
func (p *provenCredentials) id(req *tokenRequest) (credentialID, bool) {
	if req.RefreshToken != "" || (req.Username == "" && req.Password == "") {
		return credentialID{}, false
	}
	return p.mac(kindPassword, req.Service, req.Username, req.Password), true
}

// vaultTokenID is the keyed hash of a Vault token sent for service.
func (p *provenCredentials) vaultTokenID(service, token string) credentialID {
	return p.mac(kindVaultToken, service, token)
}

// Kinds of credential, so that a password and a Vault token never share
// an id.
const (
	kindPassword byte = iota + 1
	kindVaultToken
)

func (p *provenCredentials) mac(kind byte, parts ...string) credentialID {
	var id credentialID
	m := hmac.New(sha256.New, p.key[:])
	m.Write([]byte{kind})
	for _, s := range parts {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	m.Sum(id[:0])
	return id
}

func (p *provenCredentials) proven(id credentialID) bool {
	_, ok := p.known.get(id)
	return ok
}

func (p *provenCredentials) remember(id credentialID) { p.known.put(id, struct{}{}, true) }

func (p *provenCredentials) forget(id credentialID) { p.known.delete(id) }

// enterProven takes one of id's maxProvenPerCredential places on the
// proven path; false when they are all taken.
func (p *provenCredentials) enterProven(id credentialID) (leave func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.onPath[id] >= maxProvenPerCredential {
		return nil, false
	}
	p.onPath[id]++
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.onPath[id]--; p.onPath[id] == 0 {
			delete(p.onPath, id)
		}
	}, true
}

// settle remembers a credential that got a token and forgets one that was
// refused for any reason but the plugin's busy refusal. Vault's error
// (503) and a client that left say nothing of the credential.
func (p *provenCredentials) settle(id credentialID, f *failure) {
	switch {
	case f == nil:
		p.remember(id)
	case refusedCredential(f):
		p.forget(id)
	}
}

// refusedCredential reports whether f refuses the credential: a 4xx
// other than the plugin's busy refusal.
func refusedCredential(f *failure) bool {
	return f.status >= 400 && f.status < 500 && f.status != statusClientClosed && !f.busy
}

// enterUnproven takes a place for a credential (a password, a Vault token)
// that got no token lately. It
// waits at most half the request's time, so that the Vault call keeps the
// other half, then refuses 429.
func (v *vault) enterUnproven(ctx context.Context) (release func(), f *failure) {
	p := v.credentials
	release = func() { <-p.unproven }
	select {
	case p.unproven <- struct{}{}:
		return release, nil
	default:
	}
	wait := v.timeout
	if deadline, ok := ctx.Deadline(); ok {
		wait = time.Until(deadline) / 2
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case p.unproven <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, errCanceled
		}
	case <-timer.C:
	}
	// Said at most once a few seconds: a flood of wrong passwords, most
	// likely, or a burst of logins larger than the plugin can check.
	t, _ := v.logThrottles.LoadOrStore("password_checks", &throttle{interval: 10 * time.Second})
	if ok, held := t.(*throttle).allow(time.Now()); ok {
		v.log.Warn("too many requests with passwords or Vault tokens that got no token lately; answered 429 with Retry-After",
			"places", maxUnprovenCalls, "similar_warnings_not_logged", held)
	}
	return nil, errPasswordChecksBusy
}
