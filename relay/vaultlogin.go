package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// The relay logs in to Vault itself with one of Vault's auth methods,
// through vault/api's AuthMethod (api/auth/approle, api/auth/kubernetes):
// AppRole with a secret ID file, or a Kubernetes service-account token (a
// projected token file, read again at each login so that the kubelet's
// rotation is seen). The token keeper (vaulttoken.go) renews the token it
// gets and logs in again when it can no longer be renewed.
//
// The Kubernetes login sends {role, jwt} to auth/<mount>/login, which is
// also what Vault's jwt auth method takes: a relay outside a cluster can log
// in with a service-account-shaped token at a jwt mount that knows the
// cluster's issuer key.

// logsIn reports whether the relay gets its token by logging in.
func (k *tokenKeeper) logsIn() bool {
	return k.cfg.AppRole.Enabled() || k.cfg.Kubernetes.Enabled()
}

// loginName names the login in the log.
func (k *tokenKeeper) loginName() string {
	if k.cfg.Kubernetes.Enabled() {
		return "Kubernetes auth"
	}
	return "AppRole"
}

// loginMount is the auth mount the relay logs in at.
func (k *tokenKeeper) loginMount() string {
	mount, fallback := k.cfg.AppRole.Mount, defaultAppRoleMount
	if k.cfg.Kubernetes.Enabled() {
		mount, fallback = k.cfg.Kubernetes.Mount, defaultKubernetesMount
	}
	if m := strings.Trim(mount, "/"); m != "" {
		return m
	}
	return fallback
}

// loginMethod is the AuthMethod for the next login, with its secret (the
// secret ID, the service-account token) read from its file now, so that a
// new secret dropped in, or a rotated projected token, is used.
func (k *tokenKeeper) loginMethod() (api.AuthMethod, error) {
	if kc := k.cfg.Kubernetes; kc.Enabled() {
		file := kc.TokenFile
		if file == "" {
			file = DefaultServiceAccountTokenFile
		}
		jwt, err := readSmallFile(file)
		if err != nil {
			return nil, fmt.Errorf("token_file: %w", err)
		}
		return kubernetes.NewKubernetesAuth(kc.Role, kubernetes.WithServiceAccountToken(jwt),
			kubernetes.WithMountPath(k.loginMount()))
	}
	secretID, err := readSmallFile(k.cfg.AppRole.SecretIDFile)
	if err != nil {
		return nil, fmt.Errorf("secret_id_file: %w", err)
	}
	return approle.NewAppRoleAuth(k.cfg.AppRole.RoleID, &approle.SecretID{FromString: secretID},
		approle.WithMountPath(k.loginMount()))
}

// login logs in and makes the token the relay's.
func (k *tokenKeeper) login(ctx context.Context) (*api.Secret, error) {
	method, err := k.loginMethod()
	if err != nil {
		return nil, err
	}
	// A client without the relay's (maybe expired) token: login paths need none.
	c, err := k.client.Clone()
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	lctx, cancel := context.WithTimeout(ctx, k.callTimeout())
	defer cancel()
	secret, err := method.Login(lctx, c)
	if err != nil {
		return nil, err
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, errors.New("vault answered the login with no token")
	}
	k.client.SetToken(secret.Auth.ClientToken)
	k.accept()
	k.logins.Inc()
	k.extended(secret.Auth.LeaseDuration)
	k.log.Info("logged in to Vault with "+k.loginName(), "mount", k.loginMount(),
		"ttl", seconds(secret.Auth.LeaseDuration), "renewable", secret.Auth.Renewable,
		"policies", strings.Join(secret.Auth.TokenPolicies, ","))
	return secret, nil
}
