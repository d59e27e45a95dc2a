package paths_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// refusalOf reads a token path's refusal as Vault sends it to the relay:
// the raw body holds Vault's error list and the refusal as data.
func refusalOf(t *testing.T, resp *logical.Response) (int, []string, tokenapi.Refusal) {
	t.Helper()
	if resp == nil {
		t.Fatal("no response")
	}
	raw, ok := resp.Data[logical.HTTPRawBody].(string)
	if !ok || resp.Data[logical.HTTPContentType] != "application/json" {
		t.Fatalf("not a raw JSON answer: %v", resp.Data)
	}
	var body struct {
		Errors []string         `json:"errors"`
		Data   tokenapi.Refusal `json:"data"`
	}
	if err := json.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatalf("body %q: %v", raw, err)
	}
	return resp.Data[logical.HTTPStatusCode].(int), body.Errors, body.Data
}

func TestToken_answerCarriesSubjectIssuerAndAccess(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "config", map[string]any{"issuer": "My Issuer", "anonymous_access": "repository:pub/*:pull"})
	m.ok(update, "users/alice", map[string]any{"password": "pw", "access": "repository:alice/**:*"})
	d := m.ok(update, "token", map[string]any{"username": "alice", "password": "pw",
		"scope": []string{"repository:alice/app:pull,push repository:other:pull"}}).Data
	if d["sub"] != "alice" || d["iss"] != "My Issuer" {
		t.Errorf("sub %v iss %v", d["sub"], d["iss"])
	}
	want := []tokenapi.Grant{{Type: "repository", Name: "alice/app", Actions: []string{"pull", "push"}}}
	if !reflect.DeepEqual(d["access"], want) {
		t.Errorf("access = %#v, want %#v", d["access"], want)
	}
	// The answer says what the token says.
	claims := jwtClaims(t, d["token"].(string))
	var access []tokenapi.Grant
	if err := json.Unmarshal(claims["access"], &access); err != nil || !reflect.DeepEqual(access, want) {
		t.Errorf("the token's access %s differs from the answer's", claims["access"])
	}

	anon := m.ok(update, "token", map[string]any{"scope": []string{"repository:pub/x:pull,push"}}).Data
	if anon["sub"] != "" || anon["iss"] != "My Issuer" ||
		!reflect.DeepEqual(anon["access"], []tokenapi.Grant{{Type: "repository", Name: "pub/x", Actions: []string{"pull"}}}) {
		t.Errorf("anonymous answer %v", anon)
	}
	login := m.ok(update, "token", map[string]any{"username": "alice", "password": "pw"}).Data
	if a, ok := login["access"].([]tokenapi.Grant); !ok || a == nil || len(a) != 0 {
		t.Errorf("a login's access = %#v, want an empty list", login["access"])
	}
}

// TestToken_refusalsCarryACode: every refusal of the token paths has a
// code, the code's status, and the plain message both as Vault's error and
// in the data; 429s say when to retry.
func TestToken_refusalsCarryACode(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "config", map[string]any{"lockout_threshold": 2, "lockout_duration": "10m"})
	m.ok(update, "users/alice", map[string]any{"password": "pw"})
	m.ok(update, "users/bob", map[string]any{"password": "pw"})
	cases := []struct {
		name  string
		path  string
		data  map[string]any
		code  tokenapi.Code
		retry int64
	}{
		{"wrong password", "token", map[string]any{"username": "alice", "password": "nope"}, tokenapi.CodeInvalidCredentials, 0},
		{"unknown user", "token", map[string]any{"username": "nobody", "password": "nope"}, tokenapi.CodeInvalidCredentials, 0},
		{"no anonymous access", "token", map[string]any{}, tokenapi.CodeInvalidCredentials, 0},
		{"malformed scope", "token", map[string]any{"username": "alice", "password": "pw", "scope": []string{"repository::pull"}}, tokenapi.CodeInvalidScope, 0},
		{"account mismatch", "token", map[string]any{"username": "alice", "password": "pw", "account": "bob"}, tokenapi.CodeInvalidRequest, 0},
		{"unknown refresh token", "token/refresh", map[string]any{"refresh_token": "vpr.nope"}, tokenapi.CodeInvalidGrant, 0},
		{"bob's first failure", "token", map[string]any{"username": "bob", "password": "x"}, tokenapi.CodeInvalidCredentials, 0},
		{"bob's second failure", "token", map[string]any{"username": "bob", "password": "x"}, tokenapi.CodeInvalidCredentials, 0},
		{"bob locked out", "token", map[string]any{"username": "bob", "password": "pw"}, tokenapi.CodeLockedOut, 600},
	}
	for _, c := range cases {
		_, resp, _ := m.call(update, c.path, c.data)
		status, errs, r := refusalOf(t, resp)
		if r.Code != c.code || status != c.code.Status() {
			t.Errorf("%s: %d %s, want %d %s", c.name, status, r.Code, c.code.Status(), c.code)
		}
		if r.Message == "" || len(errs) != 1 || errs[0] != r.Message {
			t.Errorf("%s: errors %q, message %q: want the same plain message", c.name, errs, r.Message)
		}
		// The lockout began a moment ago: up to ten seconds of it may have passed.
		if r.RetryAfter > c.retry || r.RetryAfter < c.retry-10 || (c.retry == 0) != (r.RetryAfter == 0) {
			t.Errorf("%s: retry_after %d, want %d", c.name, r.RetryAfter, c.retry)
		}
	}
	if s, _, _ := m.call(update, "token", map[string]any{"username": "alice", "password": "nope"}); s != http.StatusUnauthorized {
		t.Errorf("Vault's status for a wrong password: %d", s)
	}
}
