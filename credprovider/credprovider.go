// Package credprovider is a kubelet image credential provider
// (credentialprovider.kubelet.k8s.io/v1): it turns the pod's service-account
// token, or the node's own Vault identity, into a Vault token that the
// relay accepts as the password of the user "vault".
package credprovider

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/hashicorp/vault/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	credv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

// Name is the program's name: the kubelet's CredentialProviderConfig names
// the binary by it, and every error line starts with it.
const Name = "vault-registry-credential-provider"

// The fallbacks when a request carries no service-account token.
const (
	FallbackNone      = "none"
	FallbackAppRole   = "approle"
	FallbackTokenFile = "token-file"
)

// Config is what the kubelet passes through the provider's args and env.
type Config struct {
	// AuthMount is the Vault auth mount that takes service-account tokens:
	// a kubernetes or a jwt method (both take {role, jwt}).
	AuthMount string
	// Role is the Vault role to log in with, unless RoleAnnotation names
	// one on the pod's service account.
	Role string
	// RoleAnnotation is the service-account annotation that names the
	// Vault role; the kubelet sends it only when the CredentialProviderConfig
	// lists it in tokenAttributes.
	RoleAnnotation string
	// Fallback is the node's own identity when the request has no
	// service-account token: none, approle or token-file.
	Fallback     string
	AppRoleMount string
	RoleID       string // AppRole role_id, or RoleIDFile
	RoleIDFile   string
	SecretIDFile string
	// TokenFile holds a Vault token kept fresh by Vault Agent.
	TokenFile string
	// Username is the relay's identity.vault_token_user.
	Username string
	// MaxCache bounds the cache duration the kubelet is told.
	MaxCache time.Duration
}

// envPrefix: every flag may also come from the environment, e.g.
// -auth-mount from VAULT_REGISTRY_AUTH_MOUNT. Vault's own variables
// (VAULT_ADDR, VAULT_CACERT, VAULT_NAMESPACE) are read by Vault's client.
const envPrefix = "VAULT_REGISTRY_"

// ParseConfig reads flags, with the environment as their defaults.
func ParseConfig(args []string, getenv func(string) string) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, name, def, usage string) {
		if v := getenv(envName(name)); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage)
	}
	str(&c.AuthMount, "auth-mount", "kubernetes", "Vault auth mount for service-account tokens (kubernetes or jwt method)")
	str(&c.Role, "role", "", "Vault role for service-account tokens")
	str(&c.RoleAnnotation, "role-annotation", "vault-registry.io/role", "service-account annotation naming the Vault role")
	str(&c.Fallback, "fallback", FallbackNone, "without a service-account token: none, approle or token-file")
	str(&c.AppRoleMount, "approle-mount", "approle", "Vault AppRole auth mount")
	str(&c.RoleID, "role-id", "", "AppRole role_id")
	str(&c.RoleIDFile, "role-id-file", "", "file holding the AppRole role_id")
	str(&c.SecretIDFile, "secret-id-file", "", "file holding the AppRole secret_id")
	str(&c.TokenFile, "token-file", "", "file holding a Vault token (Vault Agent's sink)")
	str(&c.Username, "username", "vault", "user name the relay takes a Vault token with")
	maxCache := "1h"
	str(&maxCache, "max-cache", maxCache, "longest cache duration the kubelet is told")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	d, err := time.ParseDuration(maxCache)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("-max-cache: want a duration such as 1h, got %q", maxCache)
	}
	c.MaxCache = d
	return c, c.check()
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

var mountRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)

// roleRE: Vault role names; a role from an annotation goes to Vault only as
// a field of the login, never into a path.
var roleRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

func (c *Config) check() error {
	for name, m := range map[string]string{"-auth-mount": c.AuthMount, "-approle-mount": c.AppRoleMount} {
		if len(m) > 128 || !mountRE.MatchString(m) || strings.Contains(m, "..") {
			return fmt.Errorf("%s: want an auth mount path such as kubernetes or jwt (without auth/), got %q", name, m)
		}
	}
	if c.Role != "" && !roleRE.MatchString(c.Role) {
		return fmt.Errorf("-role: want a Vault role name, got %q", c.Role)
	}
	if c.Username == "" || strings.ContainsAny(c.Username, ": \t") {
		return fmt.Errorf("-username: want a user name without blanks or \":\", got %q", c.Username)
	}
	switch c.Fallback {
	case FallbackNone:
	case FallbackAppRole:
		if (c.RoleID == "") == (c.RoleIDFile == "") || c.SecretIDFile == "" {
			return errors.New("-fallback=approle needs -secret-id-file and one of -role-id or -role-id-file")
		}
	case FallbackTokenFile:
		if c.TokenFile == "" {
			return errors.New("-fallback=token-file needs -token-file")
		}
	default:
		return fmt.Errorf("-fallback: want none, approle or token-file, got %q", c.Fallback)
	}
	return nil
}

// maxRequestBytes bounds what is read from stdin: a request is an image
// name, a token and a few annotations.
const maxRequestBytes = 1 << 20

// ReadRequest decodes the kubelet's CredentialProviderRequest.
func ReadRequest(r io.Reader) (*credv1.CredentialProviderRequest, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxRequestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the request: %w", err)
	}
	if len(b) > maxRequestBytes {
		return nil, fmt.Errorf("the request is over %d bytes", maxRequestBytes)
	}
	var req credv1.CredentialProviderRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("the request is not a CredentialProviderRequest: %v", err)
	}
	if gv := credv1.SchemeGroupVersion.String(); req.APIVersion != gv || req.Kind != "CredentialProviderRequest" {
		return nil, fmt.Errorf("want a CredentialProviderRequest of %s, got kind %q of %q", gv, req.Kind, req.APIVersion)
	}
	if req.Image == "" {
		return nil, errors.New("the request names no image")
	}
	return &req, nil
}

// registryOf is the key of the answer's auth map: the image's registry
// host, as the kubelet matches it.
func registryOf(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("image %q: %v", truncate(image, 200), err)
	}
	return reference.Domain(named), nil
}

// login is a Vault token and how long it lives (0: no expiry).
type login struct {
	token string
	ttl   time.Duration
}

// Provide answers one request: it logs in to Vault and builds the response.
func Provide(ctx context.Context, c *Config, client *api.Client, req *credv1.CredentialProviderRequest) (*credv1.CredentialProviderResponse, error) {
	registry, err := registryOf(req.Image)
	if err != nil {
		return nil, err
	}
	l, err := c.login(ctx, client, req)
	if err != nil {
		return nil, err
	}
	return &credv1.CredentialProviderResponse{
		TypeMeta: metav1.TypeMeta{
			APIVersion: credv1.SchemeGroupVersion.String(),
			Kind:       "CredentialProviderResponse",
		},
		// The token serves every repository of the registry; what it may
		// pull is the service account's group's access.
		CacheKeyType:  credv1.RegistryPluginCacheKeyType,
		CacheDuration: &metav1.Duration{Duration: cacheDuration(l.ttl, c.MaxCache)},
		Auth:          map[string]credv1.AuthConfig{registry: {Username: c.Username, Password: l.token}},
	}, nil
}

// minUsefulTTL: a token that lives less than this is not cached at all.
const minUsefulTTL = 10 * time.Second

// cacheDuration is half the token's TTL, at most maxCache: the kubelet
// hands out a cached token only while it has at least half its life left,
// enough for a pull to ask the relay for registry tokens.
func cacheDuration(ttl, maxCache time.Duration) time.Duration {
	if ttl == 0 { // a token without expiry (a Vault Agent sink may hold one)
		return maxCache
	}
	if ttl < minUsefulTTL {
		return 0
	}
	return min((ttl / 2).Truncate(time.Second), maxCache)
}

func (c *Config) login(ctx context.Context, client *api.Client, req *credv1.CredentialProviderRequest) (login, error) {
	if req.ServiceAccountToken != "" {
		role := c.Role
		if a := req.ServiceAccountAnnotations[c.RoleAnnotation]; c.RoleAnnotation != "" && a != "" {
			if !roleRE.MatchString(a) {
				return login{}, fmt.Errorf("service-account annotation %s: want a Vault role name, got %q", c.RoleAnnotation, truncate(a, 130))
			}
			role = a
		}
		if role == "" {
			return login{}, fmt.Errorf("no Vault role: set -role or annotate the service account with %s", c.RoleAnnotation)
		}
		return c.loginAt(ctx, client, c.AuthMount, map[string]any{"role": role, "jwt": req.ServiceAccountToken})
	}
	switch c.Fallback {
	case FallbackAppRole:
		roleID := c.RoleID
		if c.RoleIDFile != "" {
			var err error
			if roleID, err = readSecretFile(c.RoleIDFile, "-role-id-file"); err != nil {
				return login{}, err
			}
		}
		secretID, err := readSecretFile(c.SecretIDFile, "-secret-id-file")
		if err != nil {
			return login{}, err
		}
		return c.loginAt(ctx, client, c.AppRoleMount, map[string]any{"role_id": roleID, "secret_id": secretID})
	case FallbackTokenFile:
		token, err := readSecretFile(c.TokenFile, "-token-file")
		if err != nil {
			return login{}, err
		}
		return lookupSelf(ctx, client, token)
	}
	return login{}, errors.New("the request has no service-account token (tokenAttributes missing from the CredentialProviderConfig?) and -fallback is none")
}

// loginAt logs in at auth/<mount>/login.
func (c *Config) loginAt(ctx context.Context, client *api.Client, mount string, body map[string]any) (login, error) {
	s, err := client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", body)
	if err != nil {
		return login{}, fmt.Errorf("Vault login at auth/%s: %w", mount, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return login{}, fmt.Errorf("Vault login at auth/%s: the answer holds no token", mount)
	}
	return login{token: s.Auth.ClientToken, ttl: time.Duration(s.Auth.LeaseDuration) * time.Second}, nil
}

// lookupSelf checks a token from a file and reads its remaining TTL.
func lookupSelf(ctx context.Context, client *api.Client, token string) (login, error) {
	c, err := client.Clone()
	if err != nil {
		return login{}, err
	}
	c.SetToken(token)
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return login{}, fmt.Errorf("Vault token lookup of -token-file: %w", err)
	}
	ttl, err := s.TokenTTL()
	if err != nil || s.Data == nil {
		return login{}, errors.New("Vault token lookup of -token-file: the answer holds no ttl")
	}
	return login{token: token, ttl: ttl}, nil
}

// maxSecretFileBytes bounds a role_id, secret_id or token file.
const maxSecretFileBytes = 4096

// readSecretFile reads a one-line secret; errors name the file, never its
// content.
func readSecretFile(path, flagName string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %v", flagName, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("%s: reading %s: %v", flagName, path, err)
	}
	s := strings.TrimSpace(string(b))
	if len(b) > maxSecretFileBytes || s == "" || strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%s: %s does not hold one line of at most %d bytes", flagName, path, maxSecretFileBytes)
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
