package relay

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// tokenVault stands in for Vault's token and AppRole endpoints: it knows
// some tokens (each with a lease), answers lookup-self, renew-self and
// revoke-self for them as Vault does, and an unknown token's call with
// Vault's 403 "permission denied", "invalid token".
type tokenVault struct {
	srv *httptest.Server

	mu      sync.Mutex
	lease   map[string]int      // token → lease_duration; absent: unknown (invalid)
	calls   map[string][]string // path → the tokens that called it, in order
	renewOK func(token string) bool
	logins  []string // tokens AppRole hands out, in order
}

func newTokenVault(t *testing.T) *tokenVault {
	tv := &tokenVault{lease: map[string]int{}, calls: map[string][]string{}}
	tv.srv = httptest.NewServer(http.HandlerFunc(tv.serve))
	t.Cleanup(tv.srv.Close)
	return tv
}

func (tv *tokenVault) known(token string, lease int) {
	tv.mu.Lock()
	defer tv.mu.Unlock()
	tv.lease[token] = lease
}

// called is the tokens that called path.
func (tv *tokenVault) called(path string) []string {
	tv.mu.Lock()
	defer tv.mu.Unlock()
	return append([]string(nil), tv.calls[path]...)
}

func (tv *tokenVault) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	token := r.Header.Get("X-Vault-Token")
	tv.mu.Lock()
	defer tv.mu.Unlock()
	tv.calls[path] = append(tv.calls[path], token)
	if path == "sys/health" {
		writeJSON(w, 200, map[string]any{"initialized": true, "sealed": false})
		return
	}
	if strings.HasSuffix(path, "/login") {
		if len(tv.logins) == 0 {
			vaultError(w, 400, "invalid role or secret ID")
			return
		}
		next := tv.logins[0]
		tv.logins = tv.logins[1:]
		tv.lease[next] = fakeTokenPeriod
		writeJSON(w, 200, map[string]any{"auth": map[string]any{"client_token": next, "renewable": true,
			"lease_duration": fakeTokenPeriod}})
		return
	}
	lease, ok := tv.lease[token]
	if !ok {
		vaultError(w, 403, vaultInvalidToken)
		return
	}
	switch path {
	case "auth/token/lookup-self":
		writeJSON(w, 200, map[string]any{"data": map[string]any{"ttl": lease, "renewable": true}})
	case "auth/token/renew-self":
		if tv.renewOK != nil && !tv.renewOK(token) {
			vaultError(w, 500, "internal error")
			return
		}
		writeJSON(w, 200, map[string]any{"auth": map[string]any{"client_token": token, "renewable": true,
			"lease_duration": lease}})
	case "auth/token/revoke-self":
		delete(tv.lease, token)
		w.WriteHeader(http.StatusNoContent)
	default:
		vaultError(w, 404, "unsupported path")
	}
}
