package relay

import (
	"regexp"
	"strings"
	"time"
)

// IdentityConfig is the `identity` section of the relay's YAML.
type IdentityConfig struct {
	// VaultTokenUser is the user name that says "the password is a Vault
	// token"; default "vault".
	VaultTokenUser string `yaml:"vault_token_user"`
	// PasswordMounts are Vault auth mounts of password kind (userpass,
	// ldap, okta, radius), tried in order.
	PasswordMounts []string `yaml:"password_mounts"`
	// JWTLogins are user names whose password is a JWT (a CI job's
	// identity token), logged in at a Vault jwt auth mount with a role.
	JWTLogins []JWTLogin `yaml:"jwt_logins"`
	// TokenReuse is how long a password or JWT proven at an auth mount
	// reuses its Vault token (at most half the token's TTL); default 1m,
	// 0s: never.
	TokenReuse Duration `yaml:"token_reuse"`
}

// JWTLogin is one item of identity.jwt_logins: a Basic login as User
// sends its password, a JWT, to auth/<Mount>/login with Role.
type JWTLogin struct {
	User  string `yaml:"user"`
	Mount string `yaml:"mount"`
	Role  string `yaml:"role"`
}

// Defaults and bounds of the identity section.
const (
	DefaultVaultTokenUser = "vault"
	DefaultTokenReuse     = time.Minute
	maxPasswordMounts     = 16
	maxJWTLogins          = 16
	// maxVaultTokenBytes bounds a Vault token sent as a password: batch
	// tokens are the longest, a few hundred bytes.
	maxVaultTokenBytes = 1024
	// maxJWTBytes bounds the password of a jwt_logins user, a JWT: CI
	// identity tokens are 1-4 KiB.
	maxJWTBytes = 8 << 10
)

// roleNameRE is a Vault role name as the jwt auth method's role paths take
// it (framework.GenericNameRegex), at most 128 bytes.
var roleNameRE = regexp.MustCompile(`^\w([\w.-]{0,126}\w)?$`)

var mountNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)

func (c *Config) checkIdentity() error {
	id := c.Identity
	if u := id.VaultTokenUser; u != "" && (strings.ContainsAny(u, ": \t") || checkName("user", u) != nil) {
		return c.errorf("identity.vault_token_user", "want a user name without blanks or \":\", got %s", quote(u))
	}
	if len(id.PasswordMounts) > maxPasswordMounts {
		return c.errorf("identity.password_mounts", "at most %d mounts", maxPasswordMounts)
	}
	seen := map[string]bool{}
	for _, m := range id.PasswordMounts {
		m = strings.TrimSuffix(m, "/")
		if !authMountPath(m) {
			return c.errorf("identity.password_mounts", "want auth mount paths such as ldap or userpass (without auth/), got %s", quote(m))
		}
		if seen[m] {
			return c.errorf("identity.password_mounts", "mount %s listed twice", quote(m))
		}
		seen[m] = true
	}
	if err := c.checkJWTLogins(); err != nil {
		return err
	}
	if err := checkTimeout(time.Duration(id.TokenReuse)); err != nil {
		return c.errorf("identity.token_reuse", "%s", err)
	}
	return nil
}

// authMountPath reports whether m (without a trailing "/") may name an
// auth mount: auth/<m>/login is the only path it becomes.
func authMountPath(m string) bool {
	return len(m) <= 128 && mountNameRE.MatchString(m) && !strings.Contains(m, "..")
}

func (c *Config) checkJWTLogins() error {
	const key = "identity.jwt_logins"
	logins := c.Identity.JWTLogins
	if len(logins) > maxJWTLogins {
		return c.errorf(key, "at most %d logins", maxJWTLogins)
	}
	tokenUser := c.Identity.VaultTokenUser
	if tokenUser == "" {
		tokenUser = DefaultVaultTokenUser
	}
	users := map[string]bool{}
	for _, l := range logins {
		switch {
		case !loginName(l.User):
			return c.errorf(key, "user: want a user name of letters, digits and _.@+-, got %s", quote(l.User))
		case l.User == tokenUser:
			return c.errorf(key, "user %s is identity.vault_token_user", quote(l.User))
		case users[l.User]:
			return c.errorf(key, "user %s listed twice", quote(l.User))
		case !authMountPath(strings.TrimSuffix(l.Mount, "/")):
			return c.errorf(key, "mount: want a jwt auth mount path such as jwt or gitlab (without auth/), got %s", quote(l.Mount))
		case !roleNameRE.MatchString(l.Role):
			return c.errorf(key, "role: want a Vault role name, got %s", quote(l.Role))
		}
		users[l.User] = true
	}
	return nil
}

// identityDefaults is the identity section with defaults filled in; the
// file's section stays as written, like godoauth's own sections would.
func (c *Config) identityDefaults() IdentityConfig {
	id := c.Identity
	if id.VaultTokenUser == "" {
		id.VaultTokenUser = DefaultVaultTokenUser
	}
	id.PasswordMounts = make([]string, len(c.Identity.PasswordMounts))
	for i, m := range c.Identity.PasswordMounts {
		id.PasswordMounts[i] = strings.TrimSuffix(m, "/")
	}
	id.JWTLogins = make([]JWTLogin, len(c.Identity.JWTLogins))
	for i, l := range c.Identity.JWTLogins {
		l.Mount = strings.TrimSuffix(l.Mount, "/")
		id.JWTLogins[i] = l
	}
	if _, set := c.lines["identity.token_reuse"]; !set && id.TokenReuse == 0 {
		id.TokenReuse = Duration(DefaultTokenReuse)
	}
	return id
}
