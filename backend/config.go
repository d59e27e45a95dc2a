package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"

	"github.com/vault-registry/vault-plugin-registry/access"
)

const configKey = "config"

// maxBcryptCost bounds the work one login can cost: each step doubles it.
const maxBcryptCost = 16

// maxRefreshTokensPerUser bounds the records one login may read to find a
// user's oldest refresh token.
const maxRefreshTokensPerUser = 10000

// maxIdentityRefreshTokenTTL is Vault's default max lease TTL: the lease
// of an identity's refresh token would end there anyway.
const maxIdentityRefreshTokenTTL = 768 * time.Hour

// Key types a trust anchor and its signing keys can have.
const (
	KeyTypeEC      = "ec"
	KeyTypeRSA     = "rsa"
	KeyTypeEd25519 = "ed25519"
)

// Config is the mount's settings (README, "The plugin").
type Config struct {
	Issuer             string        `json:"issuer"`
	TTL                time.Duration `json:"ttl"`
	MaxTTL             time.Duration `json:"max_ttl"`
	KeyType            string        `json:"key_type"`
	AnonymousAccess    string        `json:"anonymous_access"`
	BcryptCost         int           `json:"bcrypt_cost"`
	CredentialCacheTTL time.Duration `json:"credential_cache_ttl"`
	LockoutThreshold   int           `json:"lockout_threshold"`
	LockoutDuration    time.Duration `json:"lockout_duration"`
	RefreshTokenTTL    time.Duration `json:"refresh_token_ttl"`
	// RefreshTokensPerUser caps a user's live refresh tokens: a new one
	// past the cap revokes the oldest.
	RefreshTokensPerUser int           `json:"refresh_tokens_per_user"`
	RotationPeriod       time.Duration `json:"rotation_period"`
	// OmitX5C leaves the certificate chain out of the token header, for
	// registries that trust only a JWK set (distribution v3's jwks option
	// checks x5c against rootcertbundle whenever a token carries it).
	OmitX5C bool `json:"omit_x5c,omitempty"`
	// IdentitySubject and IdentityAliasMount choose the subject of a Vault
	// identity's token (identity.go).
	IdentitySubject    string `json:"identity_subject,omitempty"`
	IdentityAliasMount string `json:"identity_alias_mount,omitempty"`
	// IdentityRefreshTokens lets token/identity issue refresh tokens
	// (identity_refresh.go), each ending IdentityRefreshTokenTTL after its
	// issue at the latest.
	IdentityRefreshTokens   bool          `json:"identity_refresh_tokens,omitempty"`
	IdentityRefreshTokenTTL time.Duration `json:"identity_refresh_token_ttl,omitempty"`

	anonymous access.List // parsed AnonymousAccess
}

// DefaultConfig is what a mount uses until its config is written.
func DefaultConfig() *Config {
	return &Config{
		Issuer:               "Token",
		TTL:                  5 * time.Minute,
		MaxTTL:               time.Hour,
		KeyType:              KeyTypeEC,
		BcryptCost:           bcrypt.DefaultCost,
		CredentialCacheTTL:   5 * time.Minute,
		LockoutThreshold:     5,
		LockoutDuration:      15 * time.Minute,
		RefreshTokenTTL:      720 * time.Hour,
		RefreshTokensPerUser: 100,

		IdentityRefreshTokenTTL: 24 * time.Hour,
	}
}

// Anonymous is the parsed anonymous access.
func (c *Config) Anonymous() access.List { return c.anonymous }

// Validate checks every field and parses the anonymous access string.
func (c *Config) Validate() error {
	switch {
	case c.Issuer == "" || len(c.Issuer) > 256 || !printable(c.Issuer):
		return errorf(KindBadRequest, "issuer %s: must be 1 to 256 printable characters", quote(c.Issuer))
	case c.TTL <= 0:
		return errorf(KindBadRequest, "ttl must be positive")
	case c.MaxTTL <= 0:
		return errorf(KindBadRequest, "max_ttl must be positive")
	case c.TTL > c.MaxTTL:
		return errorf(KindBadRequest, "ttl (%s) exceeds max_ttl (%s)", c.TTL, c.MaxTTL)
	case c.MaxTTL > 24*time.Hour:
		return errorf(KindBadRequest, "max_ttl (%s) exceeds 24h: registry tokens are meant to be short-lived", c.MaxTTL)
	case c.KeyType != KeyTypeEC && c.KeyType != KeyTypeRSA && c.KeyType != KeyTypeEd25519:
		return errorf(KindBadRequest, "key_type %s: must be ec, rsa or ed25519", quote(c.KeyType))
	case c.BcryptCost < bcrypt.MinCost || c.BcryptCost > maxBcryptCost:
		return errorf(KindBadRequest, "bcrypt_cost %d: must be %d to %d", c.BcryptCost, bcrypt.MinCost, maxBcryptCost)
	case c.CredentialCacheTTL < 0:
		return errorf(KindBadRequest, "credential_cache_ttl must not be negative")
	case c.LockoutThreshold < 0:
		return errorf(KindBadRequest, "lockout_threshold must not be negative")
	case c.LockoutDuration < 0 || (c.LockoutThreshold > 0 && c.LockoutDuration == 0):
		return errorf(KindBadRequest, "lockout_duration must be positive when lockout_threshold is set")
	case c.RefreshTokenTTL < 0:
		return errorf(KindBadRequest, "refresh_token_ttl must not be negative")
	case c.RefreshTokensPerUser < 1 || c.RefreshTokensPerUser > maxRefreshTokensPerUser:
		return errorf(KindBadRequest, "refresh_tokens_per_user %d: must be 1 to %d", c.RefreshTokensPerUser, maxRefreshTokensPerUser)
	case c.IdentityRefreshTokenTTL < time.Minute || c.IdentityRefreshTokenTTL > maxIdentityRefreshTokenTTL:
		return errorf(KindBadRequest, "identity_refresh_token_ttl (%s): must be 1m to %s", c.IdentityRefreshTokenTTL, maxIdentityRefreshTokenTTL)
	case c.RotationPeriod < 0:
		return errorf(KindBadRequest, "rotation_period must not be negative")
	case c.RotationPeriod > 0 && c.RotationPeriod < time.Minute:
		return errorf(KindBadRequest, "rotation_period (%s) must be at least 1m", c.RotationPeriod)
	}
	if err := c.validateIdentity(); err != nil {
		return err
	}
	anon, err := access.Parse(c.AnonymousAccess)
	if err != nil {
		return errorf(KindBadRequest, "anonymous_access: %s", err)
	}
	c.anonymous = anon
	c.AnonymousAccess = anon.String()
	return nil
}

// Config returns the mount's settings, cached after the first read. The
// returned value is shared: callers must not change it.
func (b *Backend) Config(ctx context.Context, s logical.Storage) (*Config, error) {
	b.configMu.RLock()
	c := b.config
	b.configMu.RUnlock()
	if c != nil {
		return c, nil
	}

	b.configMu.Lock()
	defer b.configMu.Unlock()
	if b.config != nil {
		return b.config, nil
	}
	c, err := loadConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	b.config = c
	return c, nil
}

func loadConfig(ctx context.Context, s logical.Storage) (*Config, error) {
	c := DefaultConfig()
	entry, err := s.Get(ctx, configKey)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if entry != nil {
		if err := json.Unmarshal(entry.Value, c); err != nil {
			return nil, fmt.Errorf("decode config: %w", err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("stored config is invalid: %w", err)
	}
	return c, nil
}

// SaveConfig validates c and stores it; the cache is replaced so this node
// sees the change at once (Invalidate covers the other nodes).
func (b *Backend) SaveConfig(ctx context.Context, s logical.Storage, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	entry, err := logical.StorageEntryJSON(configKey, c)
	if err != nil {
		return err
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	b.config = c
	b.dropCredentials() // anonymous access or cache settings may have changed
	return b.FollowKeyType(ctx, s, c)
}

func (b *Backend) dropConfig() {
	b.configMu.Lock()
	b.config = nil
	b.configMu.Unlock()
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}
