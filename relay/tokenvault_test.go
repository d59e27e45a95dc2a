package relay

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

// tokenVault is Vault's token endpoints as plugintest serves them, with no
// plugin mounted: the tokens a test makes known (known), each with its
// lease, lookup-self, renew-self and revoke-self, and an unknown token's
// 403 "permission denied", "invalid token". Two things are written here:
// renewOK, a fault (a renewal Vault fails with a 500), and the logins at
// the approle and jwt (Kubernetes) mounts, which hand out the tokens of
// logins in order: an auth method is Vault's own code, which needs Vault
// (the e2e tests log in at Vault's AppRole).
type tokenVault struct {
	*plugintest.Server

	mu      sync.Mutex
	renewOK func(token string) bool
	logins  []string // tokens the logins hand out, in order
}

func newTokenVault(t *testing.T) *tokenVault {
	tv := &tokenVault{Server: plugintest.NewServer(t, plugin.Factory, relayToken)}
	for _, mount := range []string{defaultAppRoleMount, "jwt"} {
		tv.SetLogin(mount, tv.login)
	}
	tv.SetHook(func(w http.ResponseWriter, _ *http.Request, req *plugintest.Request) bool {
		tv.mu.Lock()
		renewOK := tv.renewOK
		tv.mu.Unlock()
		if req.Path == "auth/token/renew-self" && tv.TokenLive(req.Token) && renewOK != nil && !renewOK(req.Token) {
			vaultError(w, http.StatusInternalServerError, "internal error")
			return true
		}
		return false
	})
	return tv
}

func (tv *tokenVault) known(token string, lease int) {
	tv.AddToken(token, plugintest.Token{TTL: lease})
}

// login hands out the next token of logins, or refuses as AppRole does.
func (tv *tokenVault) login(*plugintest.Request, string, map[string]any) (string, plugintest.Token, error) {
	tv.mu.Lock()
	defer tv.mu.Unlock()
	if len(tv.logins) == 0 {
		return "", plugintest.Token{}, &plugintest.Error{Status: http.StatusBadRequest, Message: "invalid role or secret ID"}
	}
	next := tv.logins[0]
	tv.logins = tv.logins[1:]
	return next, plugintest.Token{TTL: fakeTokenPeriod}, nil
}

// called is the tokens that called path, in order.
func (tv *tokenVault) called(path string) []string {
	var out []string
	for _, r := range tv.Requests() {
		if r.Path == path {
			out = append(out, r.Token)
		}
	}
	return out
}

// loginBodies is each login's path, role and jwt, in order.
func (tv *tokenVault) loginBodies() []map[string]any {
	var out []map[string]any
	for _, r := range tv.Requests() {
		if strings.HasSuffix(r.Path, "/login") {
			var b map[string]any
			_ = json.Unmarshal(r.Body, &b)
			out = append(out, map[string]any{"path": "/v1/" + r.Path, "role": b["role"], "jwt": b["jwt"]})
		}
	}
	return out
}
