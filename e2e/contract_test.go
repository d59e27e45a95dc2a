//go:build e2e

package e2e

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// vaultAnswer is a token path's answer as Vault's HTTP API sends it.
type vaultAnswer struct {
	Errors []string        `json:"errors"`
	Data   json.RawMessage `json:"data"`
}

// putToken writes <service>/<path> with the root token, straight to Vault.
func putToken(t *testing.T, v *Vault, path string, body map[string]any) (int, vaultAnswer, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPut, v.Addr+"/v1/"+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", rootToken)
	code, _, raw := doHTTP(t, req)
	var a vaultAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s: %d %q is not JSON", path, code, raw)
	}
	return code, a, string(raw)
}

// TestContract_throughRealVault: what a token path answers arrives through
// a real Vault as the contract says (the refusal's status, its code and
// retry_after in data, the plain message as Vault's error), and the relay
// answers the client from the code, with the plugin's plain words.
func TestContract_throughRealVault(t *testing.T) {
	v := StartVault(t)
	svc := v.EnableService(t, "registry")
	svc.WriteConfig(t, "lockout_threshold=2", "lockout_duration=10m", "issuer=Contract Issuer")
	svc.WriteUser(t, "alice", "alice-pw-1", "repository:alice/*:*")
	svc.WriteUser(t, "bob", "bob-pw-1", "")
	svc.WriteUser(t, "carol", "carol-pw-1", "")

	code, a, raw := putToken(t, v, "registry/token", map[string]any{"username": "alice", "password": "alice-pw-1",
		"scope": []string{"repository:alice/app:pull,push repository:other:pull"}})
	var ans tokenapi.Answer
	if code != 200 || json.Unmarshal(a.Data, &ans) != nil {
		t.Fatalf("token: %d %s", code, raw)
	}
	if ans.Subject != "alice" || ans.Issuer != "Contract Issuer" || len(ans.Access) != 1 ||
		ans.Access[0].Name != "alice/app" || strings.Join(ans.Access[0].Actions, ",") != "pull,push" {
		t.Errorf("answer: sub %q iss %q access %+v", ans.Subject, ans.Issuer, ans.Access)
	}

	refusals := []struct {
		name   string
		path   string
		body   map[string]any
		status int
		code   tokenapi.Code
		msg    string
	}{
		{"wrong password", "registry/token", map[string]any{"username": "alice", "password": "nope"}, 401, tokenapi.CodeInvalidCredentials, "invalid username or password"},
		{"malformed scope", "registry/token", map[string]any{"username": "alice", "password": "alice-pw-1", "scope": []string{"nonsense"}}, 400, tokenapi.CodeInvalidScope, "nonsense"},
		{"unknown refresh token", "registry/token/refresh", map[string]any{"refresh_token": "vpr.nope"}, 400, tokenapi.CodeInvalidGrant, "refresh token"},
		{"bob fails", "registry/token", map[string]any{"username": "bob", "password": "x"}, 401, tokenapi.CodeInvalidCredentials, ""},
		{"bob fails again", "registry/token", map[string]any{"username": "bob", "password": "x"}, 401, tokenapi.CodeInvalidCredentials, ""},
		{"bob locked out", "registry/token", map[string]any{"username": "bob", "password": "bob-pw-1"}, 429, tokenapi.CodeLockedOut, "locked out"},
	}
	var lockRetry int64
	for _, c := range refusals {
		code, a, raw := putToken(t, v, c.path, c.body)
		var r tokenapi.Refusal
		if err := json.Unmarshal(a.Data, &r); err != nil || code != c.status || r.Code != c.code {
			t.Errorf("%s: %d %s, want %d with code %s", c.name, code, raw, c.status, c.code)
			continue
		}
		if len(a.Errors) != 1 || a.Errors[0] != r.Message || !strings.Contains(r.Message, c.msg) ||
			strings.Contains(raw, "error occurred") {
			t.Errorf("%s: errors %q, message %q: want the plain message once", c.name, a.Errors, r.Message)
		}
		if c.code == tokenapi.CodeLockedOut {
			lockRetry = r.RetryAfter
			if lockRetry < 590 || lockRetry > 600 {
				t.Errorf("retry_after = %d, want about 600", lockRetry)
			}
		}
	}

	// Through the relay: the code decides, the words are the plugin's.
	relay := StartRelay(t, RelayOptions{Vault: v, Services: []string{"registry"}})
	code, _, body := relay.Token(t, "registry", "carol", "nope") // alice has one failure already
	if code != 401 || !strings.Contains(string(body), `"message":"invalid username or password"`) ||
		strings.Contains(string(body), "error occurred") {
		t.Errorf("relay, wrong password: %d %s", code, body)
	}
	code, h, body := relay.Token(t, "registry", "bob", "bob-pw-1")
	if ra, _ := strconv.ParseInt(h.Get("Retry-After"), 10, 64); code != 429 || ra < lockRetry-30 || ra > lockRetry {
		t.Errorf("relay, locked out: %d Retry-After %q (plugin said %d): %s", code, h.Get("Retry-After"), lockRetry, body)
	}
	code, _, body = relay.Token(t, "registry", "alice", "alice-pw-1", "nonsense")
	if code != 400 || !strings.Contains(string(body), "nonsense") {
		t.Errorf("relay, malformed scope: %d %s", code, body)
	}
	if code, _, body = relay.Token(t, "registry", "alice", "alice-pw-1", "repository:alice/app:pull"); code != 200 {
		t.Errorf("relay, token: %d %s", code, body)
	}
}

// TestContract_importIntoAFreshMountLeavesOnlyTheImportedCA: Vault makes a
// CA when the mount is enabled; an import into a mount that never signed a
// token replaces it, so ca/pem holds the imported certificate alone.
func TestContract_importIntoAFreshMountLeavesOnlyTheImportedCA(t *testing.T) {
	v := StartVault(t)
	svc := v.EnableService(t, "registry")
	generated := svc.CAPEM(t) // made at enable time, read without writing
	if !bytes.Equal(generated, svc.CAPEM(t)) {
		t.Fatal("a second read of ca/pem answered another CA")
	}
	ca := testcert.New(t, testcert.Options{Subject: pkix.Name{CommonName: "Token"}})
	certPEM, keyPEM := ca.PEM, ca.KeyPEM(t, false)
	v.CLI(t, "write", "registry/ca/import", "certificate="+string(certPEM), "private_key="+string(keyPEM))
	if got := svc.CAPEM(t); !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(certPEM)) {
		t.Fatalf("ca/pem after importing into a fresh mount:\n%s\nwant the imported certificate alone", got)
	}
}
