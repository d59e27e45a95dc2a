// Package credhelper is docker-credential-vault-registry, a docker
// credential helper: the user's Vault login becomes the registry login.
// `get` turns the user's Vault token into an identity refresh token of the
// registry's plugin mount (<mount>/token/identity with offline_token), so
// the Vault token never reaches the relay or docker's config.json.
package credhelper

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker-credential-helpers/credentials"
	"github.com/hashicorp/vault/api"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Name is the helper's name: docker runs docker-credential-<name> for
// {"credHelpers": {"<host>": "vault-registry"}}.
const Name = "docker-credential-vault-registry"

// ClientID is the client_id the helper asks its refresh tokens with: the
// operator's list of refresh tokens tells them apart by it.
const ClientID = Name

const (
	// identityTokenUser is docker's user name that says "the secret is an
	// identity token": clients send it as an OAuth2 refresh_token grant.
	identityTokenUser = "<token>"
	// vaultTokenUser is the relay's user name that says "the password is a
	// Vault token" (identity.vault_token_user's default).
	vaultTokenUser = "vault"
)

// getTimeout bounds one `get`: token helper and Vault calls together.
const getTimeout = 30 * time.Second

// Helper answers the credential-helper protocol's four verbs.
type Helper struct {
	Config *Config
	// Stderr takes the one notice the helper ever prints there; never a
	// token.
	Stderr io.Writer
	// NoticeDir keeps the marks of notices already given; empty means
	// give them every time.
	NoticeDir string
}

var _ credentials.Helper = (*Helper)(nil)

// Add stores nothing: the Vault login is the only credential, so `docker
// login` with the helper configured succeeds and changes nothing.
func (h *Helper) Add(*credentials.Credentials) error { return nil }

// Delete stores nothing either: `vault token revoke -self` is the logout.
func (h *Helper) Delete(string) error { return nil }

// List shows the configured registry hosts.
func (h *Helper) List() (map[string]string, error) {
	out := map[string]string{}
	for _, host := range h.Config.Hosts() {
		out[host] = identityTokenUser
	}
	return out, nil
}

// Get answers credentials for a registry: docker's identity-token form
// (user "<token>", the secret an identity refresh token), or, where the
// mount gives no identity refresh tokens, user "vault" and the Vault
// token, with a notice on stderr the first time.
func (h *Helper) Get(server string) (string, string, error) {
	host := registryHost(server)
	e, ok := h.Config.lookup(host)
	if host == "" || !ok {
		return "", "", credentials.NewErrCredentialsNotFound()
	}
	ctx, cancel := context.WithTimeout(context.Background(), getTimeout)
	defer cancel()
	token, from, err := findToken(ctx, e)
	if err != nil {
		return "", "", err
	}
	client, err := vaultClient(e)
	if err != nil {
		return "", "", err
	}
	client.SetToken(token)
	v := &vaultCall{client: client, mount: e.Mount, from: from}
	rt, err := v.identity(ctx, true)
	if err != nil {
		var refused *refusal
		if !errors.As(err, &refused) || refused.status != http.StatusBadRequest {
			return "", "", err
		}
		// The mount refuses offline_token (identity refresh tokens off);
		// whether the Vault token may mint at all decides the answer.
		if _, err := v.identity(ctx, false); err != nil {
			return "", "", err
		}
	}
	if rt != "" {
		return identityTokenUser, rt, nil
	}
	h.noticeOnce(client.Address(), e.Mount)
	return vaultTokenUser, token, nil
}

// lookup is For, and whether the host is served at all: with registries
// listed and no default, other hosts are not (docker then goes on
// without credentials).
func (c *Config) lookup(host string) (Entry, bool) {
	if _, listed := c.Registries[host]; !listed && c.Default == nil && len(c.Registries) > 0 {
		return Entry{}, false
	}
	return c.For(host), true
}

// vaultClient is a Vault API client configured as the vault CLI is (the
// VAULT_* variables), with the entry's address and CA when it names them.
func vaultClient(e Entry) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("the VAULT_* settings: %v", cfg.Error)
	}
	if e.VaultAddr != "" {
		cfg.Address = e.VaultAddr
	}
	if os.Getenv(api.EnvVaultClientTimeout) == "" {
		cfg.Timeout = 15 * time.Second
	}
	if e.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: e.CACert}); err != nil {
			return nil, fmt.Errorf("ca_cert %s: %v", e.CACert, err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("a Vault client for %s: %v", cfg.Address, err)
	}
	return c, nil
}

// vaultCall asks one mount's token/identity with the user's token.
type vaultCall struct {
	client *api.Client
	mount  string
	from   string // where the token came from, for messages
}

// refusal is Vault's or the plugin's refusal of a token/identity call.
type refusal struct {
	status int
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// identity calls <mount>/token/identity and returns the refresh token
// (empty when offline is false or the mount answered none).
func (v *vaultCall) identity(ctx context.Context, offline bool) (string, error) {
	path := v.mount + "/" + tokenapi.PathIdentityToken
	body := map[string]any{tokenapi.FieldClientID: ClientID}
	if offline {
		body[tokenapi.FieldOfflineToken] = true
	}
	secret, err := v.client.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return "", v.explain(ctx, err)
	}
	if secret == nil || secret.Data == nil {
		return "", fmt.Errorf("Vault at %s answered %s with no token: is %s a vault-plugin-registry mount?", v.client.Address(), path, v.mount)
	}
	rt, _ := secret.Data[tokenapi.FieldRefreshToken].(string)
	return rt, nil
}

// explain turns a failed call into one line that says what to do; it
// holds the plugin's message (never a secret) and no token.
func (v *vaultCall) explain(ctx context.Context, err error) error {
	addr := v.client.Address()
	var re *api.ResponseError
	if !errors.As(err, &re) {
		if ctx.Err() != nil {
			return fmt.Errorf("Vault at %s did not answer in time: check vault_addr or VAULT_ADDR, then `vault login`", addr)
		}
		return fmt.Errorf("Vault at %s does not answer (%s): check vault_addr or VAULT_ADDR, then `vault login`", addr, shortCause(err))
	}
	msg := tokenapi.OneLine(strings.Join(re.Errors, "; "))
	switch {
	case re.StatusCode == http.StatusForbidden:
		return &refusal{re.StatusCode, fmt.Sprintf("Vault refused the token from %s: it expired or was revoked, or its policies lack update on %s/%s: run `vault login`",
			v.from, v.mount, tokenapi.PathIdentityToken)}
	case re.StatusCode == http.StatusBadRequest && strings.Contains(msg, "entity"):
		return &refusal{re.StatusCode, fmt.Sprintf("Vault: %s: run `vault login` with your own login method (a root token has no identity)", msg)}
	case re.StatusCode == http.StatusNotFound || re.StatusCode == http.StatusMethodNotAllowed:
		return &refusal{re.StatusCode, fmt.Sprintf("Vault at %s has no %s/%s: is the mount name right in the helper's configuration?", addr, v.mount, tokenapi.PathIdentityToken)}
	case re.StatusCode == http.StatusServiceUnavailable:
		return &refusal{re.StatusCode, fmt.Sprintf("Vault at %s is sealed or unavailable: try again later", addr)}
	default:
		return &refusal{re.StatusCode, fmt.Sprintf("Vault at %s answered %d: %s", addr, re.StatusCode, msg)}
	}
}

// shortCause is the last part of a transport error ("connection refused").
func shortCause(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return tokenapi.OneLine(s)
}

// noticeOnce says, the first time for this Vault and mount, that the
// Vault token goes to the relay.
func (h *Helper) noticeOnce(addr, mount string) {
	if h.Stderr == nil {
		return
	}
	if h.NoticeDir != "" {
		sum := sha256.Sum256([]byte(addr + "\x00" + mount))
		mark := filepath.Join(h.NoticeDir, "vault-token-notice-"+hex.EncodeToString(sum[:8]))
		if err := os.MkdirAll(h.NoticeDir, 0o700); err == nil {
			f, err := os.OpenFile(mark, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return // said before (or cannot tell: stay quiet rather than say it every call)
			}
			f.Close()
		}
	}
	fmt.Fprintf(h.Stderr, "%s: %s/%s at %s gives no identity refresh tokens (its operator can turn them on with identity_refresh_tokens=true), "+
		"so your Vault token is sent to the registry's token server as the password of user %q; this notice is shown once\n",
		Name, mount, tokenapi.PathIdentityToken, addr, vaultTokenUser)
}
