package backend

import (
	"context"
	"encoding/pem"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Replacing the trust anchor: a new CA made inside Vault, or godoauth's
// imported, with fresh signing keys; the old CA stays in the bundle until
// its tokens expire.

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
	return b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		takeStaged(sr) // a new CA replaces a staged one
		if stage {
			if len(sr.CAs) == 0 {
				return false, errorf(KindBadRequest, "nothing to stage against: no trust anchor yet; use ca/generate without stage")
			}
			ca, err := newCA(cfg.KeyType, b.now().UTC())
			if err != nil {
				return false, err
			}
			ca.Staged = true
			sr.CAs = append(sr.CAs, ca)
			return true, nil
		}
		dropUnused(sr)
		b.retireAll(sr, cfg)
		return true, b.newAnchor(sr, cfg)
	})
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

	return b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		// A migration into a new mount: the CA made when it was enabled
		// signed nothing, so it leaves the bundle at once.
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
		return true, nil
	})
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
