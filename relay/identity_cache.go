package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync/atomic"
	"time"
)

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
