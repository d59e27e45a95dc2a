package backend

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/vault/sdk/logical"
)

// KeyPrefix is where private keys live; the plugin declares it in
// SealWrapStorage.
const KeyPrefix = "keys/"

const ringKey = KeyPrefix + "ring"

// Key states (README, "Keys").
const (
	StateNext    = "next"    // published, not yet signing
	StateCurrent = "current" // signs new tokens
	StateRetired = "retired" // published until its last token expires
)

// Leeway is the clock skew registries allow on exp and nbf; a retired key
// stays published this much past its last token's expiry.
const Leeway = 60 * time.Second

const (
	caLifetime = 10 * 365 * 24 * time.Hour
	// defaultKeyLifetime is a signing certificate's use when no
	// rotation_period is set; the key is rotated before it runs out.
	defaultKeyLifetime = 365 * 24 * time.Hour
	backdate           = time.Minute
)

// storedRing is the key ring as kept in storage.
type storedRing struct {
	CAs  []storedCA  `json:"cas"`  // [0] is the active trust anchor
	Keys []storedKey `json:"keys"` // signing keys in every state
}

type storedCA struct {
	Certificate string    `json:"certificate"`           // PEM
	PrivateKey  string    `json:"private_key,omitempty"` // PKCS#8 PEM
	Imported    bool      `json:"imported,omitempty"`
	Retires     time.Time `json:"retires,omitzero"` // an old CA leaves the bundle then
	// Staged: published in the bundle, not yet signing; keys/rotate
	// makes it the active anchor.
	Staged bool `json:"staged,omitempty"`
	// Unused: made when the mount was enabled and no token signed under
	// it yet. An import or a new anchor replaces it outright, and a new
	// config key_type remakes it, rather than keeping it in the bundle.
	Unused bool `json:"unused,omitempty"`
}

type storedKey struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Created    time.Time `json:"created"`
	Activated  time.Time `json:"activated,omitzero"` // became current
	Retires    time.Time `json:"retires,omitzero"`   // a retired key is dropped then
	PrivateKey string    `json:"private_key"`        // PKCS#8 PEM
	Chain      []string  `json:"chain"`              // PEM: signing certificate, then intermediates
}

// SigningKey is a parsed signing key with what a token header needs.
type SigningKey struct {
	ID        string
	State     string
	Created   time.Time
	Activated time.Time
	Retires   time.Time
	NotAfter  time.Time // the signing certificate's end

	method jwt.SigningMethod
	signer crypto.Signer
	x5c    []string // standard base64 DER, signing certificate first
}

// Algorithm is the JOSE alg the key signs with.
func (k *SigningKey) Algorithm() string { return k.method.Alg() }

// CAInfo describes a trust anchor without its key.
type CAInfo struct {
	PEM         string
	KeyType     string
	NotAfter    time.Time
	Fingerprint string // SHA-256 of the DER, hex with colons
	Imported    bool
	Staged      bool
	Retires     time.Time
}

// KeyRing is the parsed, immutable view of the stored ring. Minting reads
// it without locks; a change builds a new one.
type KeyRing struct {
	stored  storedRing
	current *SigningKey
	keys    []*SigningKey
	cas     []CAInfo
	bundle  []byte // PEM of the CAs still trusted
	jwks    []byte
}

// Current is the key that signs new tokens.
func (r *KeyRing) Current() *SigningKey { return r.current }

// Keys lists the keys in every state.
func (r *KeyRing) Keys() []*SigningKey { return r.keys }

// CAs lists the trust anchors still in the bundle, active first.
func (r *KeyRing) CAs() []CAInfo { return r.cas }

// Bundle is the PEM bundle for a registry's rootcertbundle.
func (r *KeyRing) Bundle() []byte { return r.bundle }

// JWKS is the JSON Web Key Set of every published key.
func (r *KeyRing) JWKS() []byte { return r.jwks }

// ErrNoTrustAnchor answers a read of the keys of a mount whose trust
// anchor was never made: Vault makes it when the mount is enabled
// (InitializeKeys), and a read never does.
var ErrNoTrustAnchor = errors.New("this mount has no trust anchor yet; Vault makes one when the mount is enabled " +
	"(or write ca/generate or ca/import)")

// Keys returns the mount's key ring. It only reads: a mount without one
// answers ErrNoTrustAnchor.
func (b *Backend) Keys(ctx context.Context, s logical.Storage) (*KeyRing, error) {
	if r := b.ring.Load(); r != nil {
		return r, nil
	}
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	if r := b.ring.Load(); r != nil {
		return r, nil
	}
	sr, err := loadRing(ctx, s)
	if err != nil {
		return nil, err
	}
	if sr == nil {
		return nil, ErrNoTrustAnchor
	}
	r, err := parseRing(sr, b.now())
	if err != nil {
		return nil, err
	}
	b.ring.Store(r)
	return r, nil
}

// InitializeKeys makes the trust anchor and its signing keys of a new
// mount. Vault runs it when the mount is enabled, on the active node only
// (the plugin also checks that this node may write), so no standby and no
// second node creates a second CA; a read never creates one.
func (b *Backend) InitializeKeys(ctx context.Context, s logical.Storage) error {
	_, err := b.keysOrNew(ctx, s)
	return err
}

// keysOrNew returns the key ring, making it first if the mount has none:
// for the paths that write.
func (b *Backend) keysOrNew(ctx context.Context, s logical.Storage) (*KeyRing, error) {
	r, err := b.Keys(ctx, s)
	if !errors.Is(err, ErrNoTrustAnchor) {
		return r, err
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, err
	}
	return b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		if len(sr.CAs) > 0 {
			return false, nil // made meanwhile
		}
		fresh, err := b.unusedRing(cfg)
		if err != nil {
			return false, err
		}
		*sr = *fresh
		b.logger.Info("generated a trust anchor and signing keys", "key_type", cfg.KeyType)
		return true, nil
	})
}

// unusedRing is a new trust anchor with its current and next keys, marked
// as having signed nothing.
func (b *Backend) unusedRing(cfg *Config) (*storedRing, error) {
	sr := &storedRing{}
	if err := b.newAnchor(sr, cfg); err != nil {
		return nil, err
	}
	sr.CAs[0].Unused = true
	return sr, nil
}

// signingKeys is the key ring for signing a token: the first token under
// a trust anchor marks it used, once.
func (b *Backend) signingKeys(ctx context.Context, s logical.Storage) (*KeyRing, error) {
	r, err := b.keysOrNew(ctx, s)
	if err != nil || !r.stored.CAs[0].Unused {
		return r, err
	}
	used, err := b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		if len(sr.CAs) == 0 || !sr.CAs[0].Unused {
			return false, nil
		}
		sr.CAs[0].Unused = false
		return true, nil
	})
	if err != nil || used == nil {
		return r, err
	}
	return used, nil
}

// FollowKeyType remakes a trust anchor that has signed nothing yet in the
// config's key_type, so that the first config written after enabling the
// mount decides the CA's type, as it did when the CA was made on first
// need. An anchor that signed a token stays: key_type then applies to the
// keys made from then on.
func (b *Backend) FollowKeyType(ctx context.Context, s logical.Storage, cfg *Config) error {
	_, err := b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		if len(sr.CAs) != 1 || !sr.CAs[0].Unused {
			return false, nil
		}
		cert, err := parseCertificatePEM(sr.CAs[0].Certificate)
		if err != nil || keyTypeOf(cert.PublicKey) == cfg.KeyType {
			return false, err
		}
		fresh, err := b.unusedRing(cfg)
		if err != nil {
			return false, err
		}
		*sr = *fresh
		b.logger.Info("remade the unused trust anchor in the configured key_type", "key_type", cfg.KeyType)
		return true, nil
	})
	return err
}

// changeRing is how every change of the key ring begins and ends: under
// ringMu, the stored ring is loaded (an empty one when the mount has
// none), change edits it in place and says whether to store it; a stored
// ring is published to this node at once. When change stores nothing, the
// ring as loaded is published (another node may have changed it), if
// there is one.
func (b *Backend) changeRing(ctx context.Context, s logical.Storage, change func(sr *storedRing) (store bool, err error)) (*KeyRing, error) {
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil {
		return nil, err
	}
	if sr == nil {
		sr = &storedRing{}
	}
	store, err := change(sr)
	switch {
	case err != nil:
		return nil, err
	case store:
		return b.saveRing(ctx, s, sr)
	case len(sr.CAs) == 0:
		return nil, nil
	}
	return b.publish(sr)
}

// publish makes sr this node's parsed ring without storing it.
func (b *Backend) publish(sr *storedRing) (*KeyRing, error) {
	r, err := parseRing(sr, b.now())
	if err != nil {
		return nil, err
	}
	b.ring.Store(r)
	return r, nil
}

// dropUnused empties sr when its only trust anchor signed nothing: what
// replaces it need not keep it in the bundle.
func dropUnused(sr *storedRing) {
	if len(sr.CAs) == 1 && sr.CAs[0].Unused {
		*sr = storedRing{}
	}
}

// newSigningKey makes a key and a certificate for it issued by ca, valid
// for its whole use (as next, then current) plus the longest token life.
func (b *Backend) newSigningKey(ca storedCA, cfg *Config, now time.Time) (storedKey, error) {
	caCert, err := parseCertificatePEM(ca.Certificate)
	if err != nil {
		return storedKey{}, err
	}
	caKey, err := parsePrivateKeyPEM(ca.PrivateKey)
	if err != nil {
		return storedKey{}, err
	}
	key, err := generateKey(cfg.KeyType)
	if err != nil {
		return storedKey{}, err
	}
	use := defaultKeyLifetime
	if cfg.RotationPeriod > 0 {
		use = 2 * cfg.RotationPeriod // as next, then as current
	}
	notAfter := now.Add(use + cfg.MaxTTL + Leeway + time.Hour)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	id := KeyID(key.Public())
	certPEM, err := issueSigningCert(caCert, caKey, key.Public(), id, now, notAfter)
	if err != nil {
		return storedKey{}, err
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return storedKey{}, err
	}
	return storedKey{
		ID:         id,
		State:      StateNext,
		Created:    now,
		PrivateKey: keyPEM,
		Chain:      []string{certPEM},
	}, nil
}

func loadRing(ctx context.Context, s logical.Storage) (*storedRing, error) {
	entry, err := s.Get(ctx, ringKey)
	if err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	sr := new(storedRing)
	if err := json.Unmarshal(entry.Value, sr); err != nil {
		return nil, fmt.Errorf("decode keys: %w", err)
	}
	if len(sr.CAs) == 0 {
		return nil, fmt.Errorf("stored key ring has no CA")
	}
	return sr, nil
}

// saveRing stores sr and publishes its parsed form to this node at once.
func (b *Backend) saveRing(ctx context.Context, s logical.Storage, sr *storedRing) (*KeyRing, error) {
	r, err := parseRing(sr, b.now())
	if err != nil {
		return nil, err
	}
	entry, err := logical.StorageEntryJSON(ringKey, sr)
	if err != nil {
		return nil, err
	}
	if err := s.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("store keys: %w", err)
	}
	b.ring.Store(r)
	return r, nil
}

func parseRing(sr *storedRing, now time.Time) (*KeyRing, error) {
	r := &KeyRing{stored: *sr}
	var set jose.JSONWebKeySet
	for _, sk := range sr.Keys {
		if sk.State == StateRetired && !now.Before(sk.Retires) {
			continue
		}
		k, err := parseSigningKey(sk)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", sk.ID, err)
		}
		r.keys = append(r.keys, k)
		if k.State == StateCurrent && r.current == nil {
			r.current = k
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.signer.Public(), KeyID: k.ID, Algorithm: k.Algorithm(), Use: "sig"})
	}
	if r.current == nil {
		return nil, fmt.Errorf("stored key ring has no current key")
	}
	var bundle strings.Builder
	for i, ca := range sr.CAs {
		if i > 0 && !ca.Staged && !now.Before(ca.Retires) {
			continue
		}
		cert, err := parseCertificatePEM(ca.Certificate)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(cert.Raw)
		r.cas = append(r.cas, CAInfo{
			PEM:         ca.Certificate,
			KeyType:     keyTypeOf(cert.PublicKey),
			NotAfter:    cert.NotAfter,
			Fingerprint: colonHex(sum[:]),
			Imported:    ca.Imported,
			Staged:      ca.Staged,
			Retires:     ca.Retires,
		})
		bundle.WriteString(ca.Certificate)
	}
	r.bundle = []byte(bundle.String())
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encode jwks: %w", err)
	}
	r.jwks = jwks
	return r, nil
}

func parseSigningKey(sk storedKey) (*SigningKey, error) {
	key, err := parsePrivateKeyPEM(sk.PrivateKey)
	if err != nil {
		return nil, err
	}
	method, err := signingMethod(key)
	if err != nil {
		return nil, err
	}
	k := &SigningKey{
		ID: sk.ID, State: sk.State, Created: sk.Created, Activated: sk.Activated, Retires: sk.Retires,
		method: method, signer: key,
	}
	for i, c := range sk.Chain {
		cert, err := parseCertificatePEM(c)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			k.NotAfter = cert.NotAfter
		}
		k.x5c = append(k.x5c, base64.StdEncoding.EncodeToString(cert.Raw))
	}
	if len(k.x5c) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	return k, nil
}
