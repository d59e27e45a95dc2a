package relay

import (
	"strings"
	"unicode"
)

// AppRoleConfig is storage.vault.approle, an extension to godoauth's file.
type AppRoleConfig struct {
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
	Mount        string `yaml:"mount"` // the AppRole auth mount; default "approle"
}

// Enabled reports whether the relay logs in with AppRole.
func (a AppRoleConfig) Enabled() bool {
	return a.RoleID != "" || a.SecretIDFile != "" || a.Mount != ""
}

// KubernetesConfig is storage.vault.kubernetes, an extension to godoauth's
// file: the relay logs in as the Kubernetes workload it runs as.
type KubernetesConfig struct {
	Role      string `yaml:"role"`
	Mount     string `yaml:"mount"`      // the Kubernetes (or jwt) auth mount; default "kubernetes"
	TokenFile string `yaml:"token_file"` // default: the pod's service-account token
}

// Enabled reports whether the relay logs in with Kubernetes auth.
func (k KubernetesConfig) Enabled() bool {
	return k.Role != "" || k.Mount != "" || k.TokenFile != ""
}

const (
	defaultAppRoleMount    = "approle"
	defaultKubernetesMount = "kubernetes"
	// DefaultServiceAccountTokenFile is where Kubernetes mounts a pod's token.
	DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// checkLogin checks the settings of the login configured, if any.
func (c *Config) checkLogin() error {
	v := c.Storage.Vault
	if a := v.AppRole; a.Enabled() {
		if a.RoleID == "" {
			return c.errorf("storage.vault.approle.role_id", "required with approle")
		}
		if !printableToken(a.RoleID) {
			return c.errorf("storage.vault.approle.role_id", "holds blanks or control characters")
		}
		if a.SecretIDFile == "" {
			return c.errorf("storage.vault.approle.secret_id_file", "required with approle: a file holding the secret ID")
		}
		if !validAuthMount(a.Mount) {
			return c.errorf("storage.vault.approle.mount", "want an auth mount path such as approle, got %s", quote(a.Mount))
		}
	}
	if k := v.Kubernetes; k.Enabled() {
		if k.Role == "" {
			return c.errorf("storage.vault.kubernetes.role", "required with kubernetes: the Vault role of the relay's service account")
		}
		if !printableToken(k.Role) || strings.Contains(k.Role, "/") {
			return c.errorf("storage.vault.kubernetes.role", "want a role name, got %s", quote(k.Role))
		}
		if !validAuthMount(k.Mount) {
			return c.errorf("storage.vault.kubernetes.mount", "want an auth mount path such as kubernetes, got %s", quote(k.Mount))
		}
	}
	return nil
}

// validAuthMount: empty (the default) or a path without query or blanks.
func validAuthMount(m string) bool {
	return m == "" || (strings.Trim(m, "/") != "" && !strings.ContainsAny(m, "?#% \t\n"))
}

// checkTokenSource checks that exactly one source of the relay's token is
// configured, and that each of its settings is usable.
func (c *Config) checkTokenSource() error {
	v := c.Storage.Vault
	sources := 0
	for _, set := range []bool{v.AuthToken != "", v.AuthTokenFile != "", v.AppRole.Enabled(), v.Kubernetes.Enabled()} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		return c.errorf("storage.vault.auth_token", "required (or set VAULT_TOKEN, or use auth_token_file, approle or kubernetes)")
	case sources > 1:
		return c.errorf("storage.vault", "set only one of auth_token (or VAULT_TOKEN), auth_token_file, approle and kubernetes")
	}
	if v.AuthToken != "" && !printableToken(v.AuthToken) {
		return c.errorf("storage.vault.auth_token", "holds blanks or control characters (a stray newline?)")
	}
	return c.checkLogin()
}

func printableToken(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) < 0
}
