package backend

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Signing-key rotation and upkeep: the next key becomes current, the
// current one retires until its tokens expire, expired keys and CAs go.

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
	return b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		if len(sr.CAs) == 0 {
			return false, ErrNoTrustAnchor
		}
		if staged := takeStaged(sr); staged != nil {
			// The operator has put the staged CA into every registry's
			// bundle: sign under it from now on.
			b.retireAll(sr, cfg)
			if err := b.anchorWith(sr, cfg, *staged); err != nil {
				return false, err
			}
			b.logger.Info("activated the staged trust anchor")
			return true, nil
		}
		if sr.CAs[0].Imported {
			return false, errorf(KindBadRequest, "the trust anchor was imported and signs tokens itself, so it cannot be rotated; stage a CA kept in Vault with ca/generate stage=true, put ca/pem into the registries, then rotate")
		}
		return true, b.rotate(sr, cfg)
	})
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

// MaintainKeys drops expired retired keys and old CAs, and rotates when
// rotation_period has passed or the current certificate nears its end. It
// is the periodic task; the caller makes sure this node may write.
func (b *Backend) MaintainKeys(ctx context.Context, s logical.Storage) error {
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return err
	}
	_, err = b.changeRing(ctx, s, func(sr *storedRing) (bool, error) {
		if len(sr.CAs) == 0 {
			return false, nil
		}
		now := b.now()
		changed := prune(sr, now)
		if !sr.CAs[0].Imported && b.rotationDue(sr, cfg, now) {
			if err := b.rotate(sr, cfg); err != nil {
				return false, err
			}
			b.logger.Info("rotated the signing key", "reason", "rotation_period or certificate end")
			changed = true
		}
		return changed, nil
	})
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
