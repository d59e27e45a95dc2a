package backend

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	switch {
	case err != nil:
		return nil, err
	case sr != nil: // made meanwhile
		return b.publish(sr)
	}
	if sr, err = b.unusedRing(cfg); err != nil {
		return nil, err
	}
	b.logger.Info("generated a trust anchor and signing keys", "key_type", cfg.KeyType)
	return b.saveRing(ctx, s, sr)
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
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil || sr == nil {
		return r, err
	}
	if !sr.CAs[0].Unused {
		return b.publish(sr)
	}
	sr.CAs[0].Unused = false
	return b.saveRing(ctx, s, sr)
}

// FollowKeyType remakes a trust anchor that has signed nothing yet in the
// config's key_type, so that the first config written after enabling the
// mount decides the CA's type, as it did when the CA was made on first
// need. An anchor that signed a token stays: key_type then applies to the
// keys made from then on.
func (b *Backend) FollowKeyType(ctx context.Context, s logical.Storage, cfg *Config) error {
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil || sr == nil || !sr.CAs[0].Unused || len(sr.CAs) > 1 {
		return err
	}
	cert, err := parseCertificatePEM(sr.CAs[0].Certificate)
	if err != nil || keyTypeOf(cert.PublicKey) == cfg.KeyType {
		return err
	}
	fresh, err := b.unusedRing(cfg)
	if err != nil {
		return err
	}
	b.logger.Info("remade the unused trust anchor in the configured key_type", "key_type", cfg.KeyType)
	_, err = b.saveRing(ctx, s, fresh)
	return err
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

// RotateKeys retires the current key, promotes the next one and makes a
// new next key.
func (b *Backend) RotateKeys(ctx context.Context, s logical.Storage) (*KeyRing, error) {
	if _, err := b.keysOrNew(ctx, s); err != nil {
		return nil, err
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, err
	}
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil {
		return nil, err
	}
	if sr == nil {
		return nil, ErrNoTrustAnchor
	}
	if staged := takeStaged(sr); staged != nil {
		// The operator has put the staged CA into every registry's bundle:
		// sign under it from now on.
		b.retireAll(sr, cfg)
		if err := b.anchorWith(sr, cfg, *staged); err != nil {
			return nil, err
		}
		b.logger.Info("activated the staged trust anchor")
		return b.saveRing(ctx, s, sr)
	}
	if sr.CAs[0].Imported {
		return nil, errorf(KindBadRequest, "the trust anchor was imported and signs tokens itself, so it cannot be rotated; stage a CA kept in Vault with ca/generate stage=true, put ca/pem into the registries, then rotate")
	}
	if err := b.rotate(sr, cfg); err != nil {
		return nil, err
	}
	return b.saveRing(ctx, s, sr)
}

// takeStaged removes the staged CA from sr and returns it, if there is one.
func takeStaged(sr *storedRing) *storedCA {
	for i, ca := range sr.CAs {
		if ca.Staged {
			sr.CAs = append(sr.CAs[:i], sr.CAs[i+1:]...)
			ca.Staged = false
			return &ca
		}
	}
	return nil
}

// GenerateCA replaces the trust anchor and all signing keys. The old CA
// stays in the bundle until every token signed under it has expired. With
// stage, the new CA is only published in the bundle, next to the active
// one, and keys/rotate activates it: registries can load the new bundle
// before any token depends on it.
func (b *Backend) GenerateCA(ctx context.Context, s logical.Storage, keyType string, stage bool) (*KeyRing, error) {
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, err
	}
	if keyType != "" {
		c := *cfg
		c.KeyType = keyType
		if err := c.Validate(); err != nil {
			return nil, err
		}
		cfg = &c
	}
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil {
		return nil, err
	}
	if sr != nil {
		takeStaged(sr) // a new CA replaces a staged one
	}
	if stage {
		if sr == nil {
			return nil, errorf(KindBadRequest, "nothing to stage against: no trust anchor yet; use ca/generate without stage")
		}
		ca, err := newCA(cfg.KeyType, b.now().UTC())
		if err != nil {
			return nil, err
		}
		ca.Staged = true
		sr.CAs = append(sr.CAs, ca)
		return b.saveRing(ctx, s, sr)
	}
	if sr == nil {
		sr = &storedRing{}
	}
	dropUnused(sr)
	b.retireAll(sr, cfg)
	if err := b.newAnchor(sr, cfg); err != nil {
		return nil, err
	}
	return b.saveRing(ctx, s, sr)
}

// ImportCA makes an existing certificate and private key (godoauth's
// server.pem and server.key) the trust anchor and the signer, so registries
// that trust that certificate keep working.
func (b *Backend) ImportCA(ctx context.Context, s logical.Storage, certPEM, keyPEM string) (*KeyRing, error) {
	cert, err := parseCertificatePEM(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errorf(KindBadRequest, "private_key does not belong to certificate")
	}
	if _, err := signingMethod(key); err != nil {
		return nil, err
	}
	now := b.now()
	if now.After(cert.NotAfter) {
		return nil, errorf(KindBadRequest, "certificate expired on %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, err
	}
	keyPKCS8, err := marshalKey(key)
	if err != nil {
		return nil, err
	}
	certPEMNorm := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))

	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil {
		return nil, err
	}
	if sr == nil {
		sr = &storedRing{}
	}
	// A migration into a new mount: the CA made when it was enabled signed
	// nothing, so it leaves the bundle at once.
	dropUnused(sr)
	takeStaged(sr) // the imported anchor replaces a staged one
	b.retireAll(sr, cfg)
	sr.CAs = append([]storedCA{{Certificate: certPEMNorm, Imported: true}}, sr.CAs...)
	sr.Keys = append([]storedKey{{
		ID:         KeyID(key.Public()),
		State:      StateCurrent,
		Created:    now.UTC(),
		Activated:  now.UTC(),
		PrivateKey: keyPKCS8,
		Chain:      []string{certPEMNorm},
	}}, sr.Keys...)
	return b.saveRing(ctx, s, sr)
}

// MaintainKeys drops expired retired keys and old CAs, and rotates when
// rotation_period has passed or the current certificate nears its end. It
// is the periodic task; the caller makes sure this node may write.
func (b *Backend) MaintainKeys(ctx context.Context, s logical.Storage) error {
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return err
	}
	b.ringMu.Lock()
	defer b.ringMu.Unlock()
	sr, err := loadRing(ctx, s)
	if err != nil || sr == nil {
		return err
	}
	now := b.now()
	changed := prune(sr, now)
	if !sr.CAs[0].Imported && b.rotationDue(sr, cfg, now) {
		if err := b.rotate(sr, cfg); err != nil {
			return err
		}
		b.logger.Info("rotated the signing key", "reason", "rotation_period or certificate end")
		changed = true
	}
	if !changed {
		return nil
	}
	_, err = b.saveRing(ctx, s, sr)
	return err
}

func (b *Backend) rotationDue(sr *storedRing, cfg *Config, now time.Time) bool {
	for _, k := range sr.Keys {
		if k.State != StateCurrent {
			continue
		}
		if cfg.RotationPeriod > 0 && !now.Before(k.Activated.Add(cfg.RotationPeriod)) {
			return true
		}
		cert, err := parseCertificatePEM(k.Chain[0])
		if err != nil {
			return true
		}
		return cert.NotAfter.Sub(now) < cfg.MaxTTL+Leeway+time.Hour
	}
	return true
}

// rotate moves next → current → retired and makes a new next key.
func (b *Backend) rotate(sr *storedRing, cfg *Config) error {
	now := b.now().UTC()
	promoted := false
	for i := range sr.Keys {
		k := &sr.Keys[i]
		switch k.State {
		case StateCurrent:
			k.State, k.Retires = StateRetired, now.Add(cfg.MaxTTL+Leeway)
		case StateNext:
			if !promoted {
				k.State, k.Activated, promoted = StateCurrent, now, true
			}
		}
	}
	if !promoted {
		k, err := b.newSigningKey(sr.CAs[0], cfg, now)
		if err != nil {
			return err
		}
		k.State, k.Activated = StateCurrent, now
		sr.Keys = append(sr.Keys, k)
	}
	next, err := b.newSigningKey(sr.CAs[0], cfg, now)
	if err != nil {
		return err
	}
	sr.Keys = append(sr.Keys, next)
	prune(sr, now)
	return nil
}

// retireAll retires every key and CA, to be replaced by a new anchor.
func (b *Backend) retireAll(sr *storedRing, cfg *Config) {
	now := b.now().UTC()
	until := now.Add(cfg.MaxTTL + Leeway)
	kept := sr.Keys[:0]
	for _, k := range sr.Keys {
		switch k.State {
		case StateNext:
			continue // never signed anything
		case StateCurrent:
			k.State, k.Retires = StateRetired, until
		}
		kept = append(kept, k)
	}
	sr.Keys = kept
	for i := range sr.CAs {
		if sr.CAs[i].Retires.IsZero() || sr.CAs[i].Retires.After(until) {
			sr.CAs[i].Retires = until
		}
	}
}

// newAnchor puts a new CA first in sr with a current and a next key.
func (b *Backend) newAnchor(sr *storedRing, cfg *Config) error {
	ca, err := newCA(cfg.KeyType, b.now().UTC())
	if err != nil {
		return err
	}
	return b.anchorWith(sr, cfg, ca)
}

// anchorWith puts ca first in sr with a current and a next key it issues.
func (b *Backend) anchorWith(sr *storedRing, cfg *Config, ca storedCA) error {
	now := b.now().UTC()
	sr.CAs = append([]storedCA{ca}, sr.CAs...)
	current, err := b.newSigningKey(ca, cfg, now)
	if err != nil {
		return err
	}
	current.State, current.Activated = StateCurrent, now
	next, err := b.newSigningKey(ca, cfg, now)
	if err != nil {
		return err
	}
	sr.Keys = append([]storedKey{current, next}, sr.Keys...)
	return nil
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

// prune drops retired keys and old CAs whose time has passed.
func prune(sr *storedRing, now time.Time) bool {
	changed := false
	keys := sr.Keys[:0]
	for _, k := range sr.Keys {
		if k.State == StateRetired && !now.Before(k.Retires) {
			changed = true
			continue
		}
		keys = append(keys, k)
	}
	sr.Keys = keys
	cas := sr.CAs[:1]
	for _, ca := range sr.CAs[1:] {
		if !ca.Staged && !now.Before(ca.Retires) {
			changed = true
			continue
		}
		cas = append(cas, ca)
	}
	sr.CAs = cas
	return changed
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
