package paths

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

func configPaths(b *backend.Backend) []*framework.Path {
	h := &configHandler{b: b}
	return []*framework.Path{{
		Pattern: "config",
		Fields: map[string]*framework.FieldSchema{
			"issuer":                     {Type: framework.TypeString, Description: "The tokens' iss claim; must equal the registry's auth.token.issuer.", Default: "Token"},
			"ttl":                        {Type: framework.TypeDurationSecond, Description: "Token lifetime when a request names none.", Default: "5m"},
			"max_ttl":                    {Type: framework.TypeDurationSecond, Description: "Upper bound on any requested token lifetime (at most 24h).", Default: "1h"},
			"key_type":                   {Type: framework.TypeString, Description: "Key type of a generated trust anchor and signing keys: ec (P-256, ES256), rsa (2048, RS256) or ed25519 (EdDSA; registry v3 only).", Default: "ec", AllowedValues: []any{"ec", "rsa", "ed25519"}},
			"anonymous_access":           {Type: framework.TypeString, Description: "Access string granted without credentials, and added to every user's grants. Empty: no anonymous access."},
			"bcrypt_cost":                {Type: framework.TypeInt, Description: "bcrypt cost for newly stored passwords (4 to 16).", Default: 10},
			"credential_cache_ttl":       {Type: framework.TypeDurationSecond, Description: "How long a verified password is remembered in memory, as a keyed MAC; 0 turns the cache off.", Default: "5m"},
			"lockout_threshold":          {Type: framework.TypeInt, Description: "Failed logins of one user before a lockout; 0 turns lockout off.", Default: 5},
			"lockout_duration":           {Type: framework.TypeDurationSecond, Description: "Lockout length; the failure count also resets after this long.", Default: "15m"},
			"refresh_token_ttl":          {Type: framework.TypeDurationSecond, Description: "Refresh token lifetime; 0 turns refresh tokens off.", Default: "720h"},
			"refresh_tokens_per_user":    {Type: framework.TypeInt, Description: "Live refresh tokens one user may hold (1 to 10000); a new one past this revokes the user's oldest.", Default: 100},
			"rotation_period":            {Type: framework.TypeDurationSecond, Description: "Automatic signing-key rotation period (at least 1m); 0 rotates only on keys/rotate.", Default: 0},
			"identity_subject":           {Type: framework.TypeString, Description: "Subject of a Vault identity's token (token/identity), and what ${user} stands for: entity_name (the identity entity's name) or alias_name (its alias name on the auth mount identity_alias_mount).", Default: "entity_name", AllowedValues: []any{"entity_name", "alias_name"}},
			"identity_refresh_tokens":    {Type: framework.TypeBool, Description: "Let token/identity issue refresh tokens (offline_token). Off by default: each one is a Vault lease of the asking Vault token and ends with it.", Default: false},
			"identity_refresh_token_ttl": {Type: framework.TypeDurationSecond, Description: "Lifetime of an identity's refresh token (1m to 768h); also ends the ones already issued when shortened.", Default: "24h"},
			"identity_alias_mount":       {Type: framework.TypeString, Description: "Accessor of the auth mount whose alias names are the subjects when identity_subject is alias_name (vault auth list -format=json shows it), e.g. auth_ldap_1a2b3c4d."},
			"x5c":                        {Type: framework.TypeBool, Description: "Put the signing certificate chain in the token header (x5c). Set false for registries that trust only a JWK set (distribution v3 auth.token.jwks without rootcertbundle): v3 checks x5c against rootcertbundle whenever a token carries it. Registry 2.8 needs x5c.", Default: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   &framework.PathOperation{Callback: h.read, Summary: "Read the mount's settings."},
			logical.UpdateOperation: &framework.PathOperation{Callback: h.write, Summary: "Change the mount's settings; fields not given keep their values."},
		},
		HelpSynopsis:    configHelpSynopsis,
		HelpDescription: configHelpDescription,
	}}
}

type configHandler struct{ b *backend.Backend }

func (h *configHandler) read(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := h.b.Config(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	return &logical.Response{Data: map[string]any{
		"issuer":                     cfg.Issuer,
		"ttl":                        seconds(cfg.TTL),
		"max_ttl":                    seconds(cfg.MaxTTL),
		"key_type":                   cfg.KeyType,
		"anonymous_access":           cfg.AnonymousAccess,
		"bcrypt_cost":                cfg.BcryptCost,
		"credential_cache_ttl":       seconds(cfg.CredentialCacheTTL),
		"lockout_threshold":          cfg.LockoutThreshold,
		"lockout_duration":           seconds(cfg.LockoutDuration),
		"refresh_token_ttl":          seconds(cfg.RefreshTokenTTL),
		"rotation_period":            seconds(cfg.RotationPeriod),
		"x5c":                        !cfg.OmitX5C,
		"identity_subject":           cfg.IdentitySubject,
		"refresh_tokens_per_user":    cfg.RefreshTokensPerUser,
		"identity_alias_mount":       cfg.IdentityAliasMount,
		"identity_refresh_tokens":    cfg.IdentityRefreshTokens,
		"identity_refresh_token_ttl": seconds(cfg.IdentityRefreshTokenTTL),
	}}, nil
}

func (h *configHandler) write(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	old, err := h.b.Config(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	cfg := *old
	setString(d, "issuer", &cfg.Issuer)
	setString(d, "key_type", &cfg.KeyType)
	setString(d, "anonymous_access", &cfg.AnonymousAccess)
	setInt(d, "bcrypt_cost", &cfg.BcryptCost)
	setInt(d, "lockout_threshold", &cfg.LockoutThreshold)
	setString(d, "identity_subject", &cfg.IdentitySubject)
	setInt(d, "refresh_tokens_per_user", &cfg.RefreshTokensPerUser)
	setString(d, "identity_alias_mount", &cfg.IdentityAliasMount)
	setDuration(d, "ttl", &cfg.TTL)
	setDuration(d, "max_ttl", &cfg.MaxTTL)
	setDuration(d, "credential_cache_ttl", &cfg.CredentialCacheTTL)
	setDuration(d, "lockout_duration", &cfg.LockoutDuration)
	setDuration(d, "refresh_token_ttl", &cfg.RefreshTokenTTL)
	setDuration(d, "rotation_period", &cfg.RotationPeriod)
	setDuration(d, "identity_refresh_token_ttl", &cfg.IdentityRefreshTokenTTL)
	if v, ok := d.GetOk("identity_refresh_tokens"); ok {
		cfg.IdentityRefreshTokens = v.(bool)
	}
	if v, ok := d.GetOk("x5c"); ok {
		cfg.OmitX5C = !v.(bool)
	}
	if err := h.b.SaveConfig(ctx, req.Storage, &cfg); err != nil {
		return respond(err)
	}
	return nil, nil
}

// The set helpers copy a field that the request gave; GetOk has already
// parsed it, and a value of the wrong type was refused with a 400 before
// the handler ran.
func setString(d *framework.FieldData, name string, dst *string) {
	if v, ok := d.GetOk(name); ok {
		*dst = v.(string)
	}
}

func setInt(d *framework.FieldData, name string, dst *int) {
	if v, ok := d.GetOk(name); ok {
		*dst = v.(int)
	}
}

func setDuration(d *framework.FieldData, name string, dst *time.Duration) {
	if v, ok := d.GetOk(name); ok {
		*dst = time.Duration(v.(int)) * time.Second
	}
}

const configHelpSynopsis = "Settings of this registry service: issuer, token lifetimes, key type, anonymous access, password and lockout policy."

const configHelpDescription = `
The mount is one registry service; its path is the registry's "service" and
the tokens' "aud". Settings apply at once, on every node.

  issuer               must equal the registry's auth.token.issuer
  ttl, max_ttl         token lifetime by default, and its upper bound
  key_type             ec, rsa or ed25519, for a generated trust anchor
  anonymous_access     access string for requests without credentials
  bcrypt_cost          cost of stored password hashes: new ones, and an
                       existing one of another cost at its user's next
                       successful login
  credential_cache_ttl how long a verified password skips bcrypt (0: never)
  lockout_threshold    failed logins before a lockout (0: no lockout)
  lockout_duration     how long a lockout lasts
  refresh_token_ttl    refresh token lifetime (0: no refresh tokens)
  refresh_tokens_per_user
                       live refresh tokens per user; a new one past it
                       revokes the user's oldest (default 100)
  rotation_period      automatic signing-key rotation (0: only keys/rotate)
  x5c                  certificate chain in tokens (false: jwks-only registries)
  identity_subject     subject of Vault identities' tokens: entity_name or alias_name
  identity_alias_mount auth mount accessor whose alias names are the subjects
  identity_refresh_tokens
                       let token/identity issue refresh tokens (default
                       off); each is a Vault lease of the asking Vault token
  identity_refresh_token_ttl
                       their lifetime (default 24h)
`
