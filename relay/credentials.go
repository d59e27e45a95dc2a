package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"time"
)

// A password the plugin has not verified lately costs it a bcrypt check;
// it runs a few at a time and queues the rest for up to two seconds. A
// flood of wrong passwords would hold every Vault call slot of the relay
// while it waits in that queue, and users whose credential the plugin has
// cached would wait behind it. So the relay remembers, for as long as the
// plugin caches them by default, the credentials that got a token (as
// keyed hashes; the key is random and never leaves the process), and
// requests with any other password take at most maxUnprovenCalls slots.

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
}

func newProvenCredentials() *provenCredentials {
	p := &provenCredentials{
		unproven: make(chan struct{}, maxUnprovenCalls),
		known:    newTTLMap[credentialID, struct{}](provenTTL, maxProven),
	}
	_, _ = rand.Read(p.key[:]) // never fails (crypto/rand panics instead)
	return p
}

// id is the keyed hash of the request's credential; false for a request
// without a password (refresh token, anonymous), which costs the plugin
// no password check.
func (p *provenCredentials) id(req *tokenRequest) (credentialID, bool) {
	var id credentialID
	if req.RefreshToken != "" || (req.Username == "" && req.Password == "") {
		return id, false
	}
	m := hmac.New(sha256.New, p.key[:])
	for _, s := range []string{req.Service, req.Username, req.Password} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	m.Sum(id[:0])
	return id, true
}

func (p *provenCredentials) proven(id credentialID) bool {
	_, ok := p.known.get(id)
	return ok
}

func (p *provenCredentials) remember(id credentialID) { p.known.put(id, struct{}{}, true) }

func (p *provenCredentials) forget(id credentialID) { p.known.delete(id) }

// enterUnproven takes a place for a password that got no token lately. It
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
	t, _ := v.loud.LoadOrStore("password_checks", &throttle{interval: 10 * time.Second})
	if ok, held := t.(*throttle).allow(time.Now()); ok {
		v.log.Warn("too many requests with passwords that got no token lately; answered 429 with Retry-After",
			"places", maxUnprovenCalls, "similar_warnings_not_logged", held)
	}
	return nil, errPasswordChecksBusy
}
