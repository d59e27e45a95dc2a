package paths_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/paths"
)

const (
	read   = logical.ReadOperation
	update = logical.UpdateOperation
	list   = logical.ListOperation
	del    = logical.DeleteOperation
)

func TestConfig_defaultsAndUpdate(t *testing.T) {
	m := newMount(t, "registry")
	got := m.ok(read, "config", nil).Data
	want := map[string]any{
		"issuer": "Token", "ttl": int64(300), "max_ttl": int64(3600), "key_type": "ec", "anonymous_access": "",
		"bcrypt_cost": 4, "credential_cache_ttl": int64(300), "lockout_threshold": 5, "lockout_duration": int64(900),
		"refresh_token_ttl": int64(2592000), "rotation_period": int64(0), "refresh_tokens_per_user": 100,
	}
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("config %s = %v, want %v", k, got[k], v)
		}
	}
	m.ok(update, "config", map[string]any{"issuer": "Acme", "ttl": "10m", "anonymous_access": "repository:public/*:pull", "refresh_tokens_per_user": 7})
	got = m.ok(read, "config", nil).Data
	if got["issuer"] != "Acme" || got["ttl"] != int64(600) || got["max_ttl"] != int64(3600) || got["anonymous_access"] != "repository:public/*:pull" ||
		got["refresh_tokens_per_user"] != 7 {
		t.Errorf("after update: %v", got)
	}
}

func TestConfig_invalidValuesAre400AndChangeNothing(t *testing.T) {
	m := newMount(t, "registry")
	for _, tc := range []struct {
		field   string
		value   any
		mention string
	}{
		{"issuer", "", "issuer"},
		{"ttl", "2h", "max_ttl"},
		{"max_ttl", "48h", "max_ttl"},
		{"key_type", "dsa", "key_type"},
		{"bcrypt_cost", 3, "bcrypt_cost"},
		{"bcrypt_cost", 31, "bcrypt_cost"},
		{"lockout_threshold", -1, "lockout_threshold"},
		{"rotation_period", "10s", "rotation_period"},
		{"refresh_tokens_per_user", 0, "refresh_tokens_per_user"},
		{"refresh_tokens_per_user", 10001, "refresh_tokens_per_user"},
		{"anonymous_access", "repository:public/*:pul", "pul"},
		{"ttl", "soon", ""},
	} {
		t.Run(fmt.Sprintf("%s=%v", tc.field, tc.value), func(t *testing.T) {
			m.fail(update, "config", map[string]any{tc.field: tc.value}, http.StatusBadRequest, tc.mention)
			if got := m.ok(read, "config", nil).Data; got["issuer"] != "Token" || got["ttl"] != int64(300) || got["key_type"] != "ec" {
				t.Fatalf("a refused write changed the config: %v", got)
			}
		})
	}
}

func TestUsers_lifecycle(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "users/alice.smith@example.com", map[string]any{"password": "pw1", "access": "repository:linux/app:*;repository:linux/db:pull"})
	m.ok(update, "users/bob", map[string]any{"password": "pw2"})

	keys := m.ok(list, "users/", nil).Data["keys"].([]string)
	if strings.Join(keys, ",") != "alice.smith@example.com,bob" {
		t.Errorf("list = %v", keys)
	}
	data := m.ok(read, "users/alice.smith@example.com", nil).Data
	if data["access"] != "repository:linux/app:*;repository:linux/db:pull" || data["created"] == "" || data["updated"] == "" ||
		data["bcrypt_cost"] != 4 {
		t.Errorf("read = %v", data)
	}
	for k, v := range data {
		if strings.Contains(fmt.Sprint(v), "pw1") || strings.Contains(fmt.Sprint(v), "$2a$") || strings.Contains(k, "password") {
			t.Errorf("read returns %s = %v", k, v)
		}
	}
	// Updating access alone keeps the password.
	m.ok(update, "users/alice.smith@example.com", map[string]any{"access": "repository:linux/*:pull"})
	m.ok(update, "token", map[string]any{"username": "alice.smith@example.com", "password": "pw1"})

	m.ok(del, "users/bob", nil)
	m.fail(read, "users/bob", nil, http.StatusNotFound, "")
	m.fail(update, "token", map[string]any{"username": "bob", "password": "pw2"}, http.StatusUnauthorized, "invalid username or password")
}

func TestUsers_refusedWritesStoreNothing(t *testing.T) {
	m := newMount(t, "registry")
	for _, tc := range []struct {
		name    string
		data    map[string]any
		mention string
	}{
		{"bad access entry", map[string]any{"password": "pw", "access": "repository:a:pull;repository:b:pulll"}, "pulll"},
		{"bad access type", map[string]any{"password": "pw", "access": "repo:a:pull"}, "repo:a:pull"},
		{"no password", map[string]any{"access": "repository:a:pull"}, "password"},
		{"empty password", map[string]any{"password": ""}, "password"},
		{"password too long", map[string]any{"password": strings.Repeat("x", 73)}, "72"},
		{"both password and hash", map[string]any{"password": "pw", "password_hash": "$2a$04$abcdefghijklmnopqrstuuFhTqZ7VlRG7w8LVcIhnLu52m6SBFt3W"}, "not both"},
		{"hash not bcrypt", map[string]any{"password_hash": "{SHA}abc"}, "bcrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.fail(update, "users/carol", tc.data, http.StatusBadRequest, tc.mention)
			m.fail(read, "users/carol", nil, http.StatusNotFound, "")
		})
	}
	// An invalid name does not match the path.
	code, _, _ := m.call(update, "users/../sys", map[string]any{"password": "pw"})
	if code != http.StatusNotFound {
		t.Errorf("users/../sys: status %d, want 404", code)
	}
}

func TestUsers_passwordHashImport(t *testing.T) {
	m := newMount(t, "registry")
	hash, err := bcrypt.GenerateFromPassword([]byte("godoauth"), 5)
	if err != nil {
		t.Fatal(err)
	}
	m.ok(update, "users/legacy", map[string]any{"password_hash": string(hash), "access": "repository:a:pull"})
	m.ok(update, "token", map[string]any{"username": "legacy", "password": "godoauth"})
	m.fail(update, "token", map[string]any{"username": "legacy", "password": "wrong"}, http.StatusUnauthorized, "")
	m.fail(update, "users/legacy", map[string]any{"password_hash": string(hash[:59])}, http.StatusBadRequest, "bcrypt")
}

func TestToken_outcomes(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "users/alice", map[string]any{"password": "pw", "access": "repository:alice/**:*;registry:catalog:*"})

	resp := m.ok(update, "token", map[string]any{
		"username": "alice", "password": "pw", "account": "alice", "client_id": "docker",
		"scope": []string{"repository:alice/a/b:pull,push registry:catalog:*"},
	})
	for _, k := range []string{"token", "access_token", "expires_in", "issued_at"} {
		if _, ok := resp.Data[k]; !ok {
			t.Errorf("token output lacks %s", k)
		}
	}
	if resp.Data["token"] != resp.Data["access_token"] || resp.Data["expires_in"] != int64(300) {
		t.Errorf("token output %v", resp.Data)
	}
	if _, ok := resp.Data["refresh_token"]; ok {
		t.Error("refresh_token without offline_token")
	}
	claims := jwtClaims(t, resp.Data["token"].(string))
	if string(claims["access"]) != `[{"type":"repository","name":"alice/a/b","actions":["pull","push"]},{"type":"registry","name":"catalog","actions":["*"]}]` {
		t.Errorf("access = %s", claims["access"])
	}
	if string(claims["aud"]) != `"registry"` {
		t.Errorf("aud = %s", claims["aud"])
	}

	m.fail(update, "token", map[string]any{"username": "alice", "password": "nope"}, http.StatusUnauthorized, "invalid username or password")
	m.fail(update, "token", map[string]any{"username": "nobody", "password": "nope"}, http.StatusUnauthorized, "invalid username or password")
	m.fail(update, "token", map[string]any{}, http.StatusUnauthorized, "anonymous")
	m.fail(update, "token", map[string]any{"username": "alice", "password": "pw", "account": "bob"}, http.StatusBadRequest, "account")
	m.fail(update, "token", map[string]any{"username": "alice", "password": "pw", "scope": []string{"repository::pull"}}, http.StatusBadRequest, "repository::pull")
	m.fail(update, "token", map[string]any{"username": "alice", "password": "pw", "offline_token": "maybe"}, http.StatusBadRequest, "")

	resp = m.ok(update, "token", map[string]any{"username": "alice", "password": "pw", "offline_token": true, "client_id": "docker"})
	rt, _ := resp.Data["refresh_token"].(string)
	if rt == "" {
		t.Fatal("no refresh_token with offline_token")
	}
	resp = m.ok(update, "token/refresh", map[string]any{"refresh_token": rt, "client_id": "docker", "scope": []string{"repository:alice/x:pull"}})
	if resp.Data["refresh_token"] != rt {
		t.Error("token/refresh does not return the same refresh token")
	}
	// Any client may present it; the operator sees who issued and who used it.
	m.ok(update, "token/refresh", map[string]any{"refresh_token": rt, "client_id": "buildkit-client"})

	tokens := m.ok(list, "users/alice/refresh-tokens", nil).Data
	if keys := tokens["keys"].([]string); len(keys) != 1 {
		t.Fatalf("refresh-tokens list = %v", tokens)
	}
	if info := fmt.Sprint(tokens["key_info"]); !strings.Contains(info, "client_id:docker") ||
		!strings.Contains(info, "last_client_id:buildkit-client") || strings.Contains(info, rt) {
		t.Errorf("key_info = %s", info)
	}
	if got := m.ok(del, "users/alice/refresh-tokens", nil).Data["revoked"]; got != 1 {
		t.Errorf("revoked = %v", got)
	}
	m.fail(update, "token/refresh", map[string]any{"refresh_token": rt, "client_id": "docker"}, http.StatusBadRequest, "invalid refresh token")
}

func TestToken_lockedOutIs429(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "config", map[string]any{"lockout_threshold": 2})
	m.ok(update, "users/bob", map[string]any{"password": "pw"})
	m.fail(update, "token", map[string]any{"username": "bob", "password": "x"}, http.StatusUnauthorized, "")
	m.fail(update, "token", map[string]any{"username": "bob", "password": "x"}, http.StatusUnauthorized, "")
	m.fail(update, "token", map[string]any{"username": "bob", "password": "pw"}, http.StatusTooManyRequests, "retry after 900s")
	if m.ok(read, "users/bob", nil).Data["locked_until"] == nil {
		t.Error("read does not show locked_until")
	}
	m.ok(update, "users/bob", map[string]any{"password": "pw-new"})
	m.ok(update, "token", map[string]any{"username": "bob", "password": "pw-new"})
}

func TestCA_pathsAndJWKS(t *testing.T) {
	m := newMount(t, "registry")
	resp := m.ok(read, "ca/pem", nil)
	if resp.Data[logical.HTTPContentType] != "application/x-pem-file" ||
		!strings.HasPrefix(string(resp.Data[logical.HTTPRawBody].([]byte)), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("ca/pem = %v", resp.Data)
	}
	ca := m.ok(read, "ca", nil).Data
	if ca["key_type"] != "ec" || ca["fingerprint"] == "" || ca["expires"] == "" || ca["imported"] != false {
		t.Errorf("ca = %v", ca)
	}

	m.ok(update, "users/bob", map[string]any{"password": "pw"})
	tok := m.ok(update, "token", map[string]any{"username": "bob", "password": "pw"}).Data["token"].(string)
	kid := jwtHeader(t, tok)["kid"]
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(m.ok(read, "jwks", nil).Data[logical.HTTPRawBody].([]byte), &set); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range set.Keys {
		found = found || k["kid"] == kid
		if _, ok := k["d"]; ok {
			t.Error("jwks publishes a private key")
		}
	}
	if !found {
		t.Errorf("jwks lacks the token's kid %v", kid)
	}

	keys := m.ok(read, "keys", nil).Data
	if keys["current_key"] != kid {
		t.Errorf("keys current_key %v, token kid %v", keys["current_key"], kid)
	}
	rotated := m.ok(update, "keys/rotate", nil).Data
	if rotated["current_key"] == kid {
		t.Error("keys/rotate did not change the current key")
	}
	gen := m.ok(update, "ca/generate", map[string]any{"key_type": "rsa"}).Data
	if gen["key_type"] != "rsa" || strings.Count(gen["bundle"].(string), "BEGIN CERTIFICATE") != 2 {
		t.Errorf("ca/generate = %v", gen)
	}
	m.fail(update, "ca/generate", map[string]any{"key_type": "dsa"}, http.StatusBadRequest, "key_type")
	m.fail(update, "ca/import", map[string]any{"certificate": "x", "private_key": "y"}, http.StatusBadRequest, "certificate")
}

func TestPaths_noResponseHoldsPrivateKeyMaterial(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "users/bob", map[string]any{"password": "pw"})
	for _, c := range []struct {
		op   logical.Operation
		path string
		data map[string]any
	}{
		{read, "ca", nil}, {read, "ca/pem", nil}, {read, "jwks", nil}, {read, "keys", nil},
		{update, "keys/rotate", nil}, {update, "ca/generate", nil}, {read, "config", nil},
		{read, "users/bob", nil}, {update, "token", map[string]any{"username": "bob", "password": "pw"}},
	} {
		code, resp, msg := m.call(c.op, c.path, c.data)
		if code != http.StatusOK || resp == nil {
			// A failed call returns nothing, and nothing holds no key.
			t.Errorf("%s %s: status %d (%s), want 200 with a response to look into", c.op, c.path, code, msg)
			continue
		}
		raw, _ := json.Marshal(resp)
		if resp != nil {
			if b, ok := resp.Data[logical.HTTPRawBody].([]byte); ok {
				raw = append(raw, b...)
			}
		}
		s := string(raw)
		if strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, `"d":`) || strings.Contains(s, "$2a$") {
			t.Errorf("%s %s returns private material: %.200s", c.op, c.path, s)
		}
	}
}

func TestMounts_keepUsersAndKeysApart(t *testing.T) {
	a, b := newMount(t, "registry"), newMount(t, "second")
	a.ok(update, "users/alice", map[string]any{"password": "pw"})
	b.fail(update, "token", map[string]any{"username": "alice", "password": "pw"}, http.StatusUnauthorized, "")
	pemA := string(a.ok(read, "ca/pem", nil).Data[logical.HTTPRawBody].([]byte))
	pemB := string(b.ok(read, "ca/pem", nil).Data[logical.HTTPRawBody].([]byte))
	if pemA == pemB {
		t.Error("two mounts share a trust anchor")
	}
	// aud is the mount path, on a mount not named like the default too.
	b.ok(update, "users/alice", map[string]any{"password": "pw"})
	for _, m := range []*mount{a, b} {
		tok := m.ok(update, "token", map[string]any{"username": "alice", "password": "pw"}).Data["token"].(string)
		if aud := string(jwtClaims(t, tok)["aud"]); aud != `"`+m.path+`"` {
			t.Errorf("mount %s: aud %s, want the mount path", m.path, aud)
		}
	}
}

func TestHelp_everyPathAndFieldIsDescribed(t *testing.T) {
	for _, p := range paths.All(backend.New(backend.Options{})) {
		if p.HelpSynopsis == "" || p.HelpDescription == "" {
			t.Errorf("path %s lacks help", p.Pattern)
		}
		for name, f := range p.Fields {
			if f.Description == "" {
				t.Errorf("path %s field %s lacks a description", p.Pattern, name)
			}
		}
		for op, h := range p.Operations {
			if h.(*framework.PathOperation).Summary == "" {
				t.Errorf("path %s %s lacks a summary", p.Pattern, op)
			}
		}
	}
}

func jwtSegment(t *testing.T, tok string, i int) map[string]json.RawMessage {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64URL(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jwtClaims(t *testing.T, tok string) map[string]json.RawMessage { return jwtSegment(t, tok, 1) }

func jwtHeader(t *testing.T, tok string) map[string]any {
	h := map[string]any{}
	for k, v := range jwtSegment(t, tok, 0) {
		var x any
		json.Unmarshal(v, &x)
		h[k] = x
	}
	return h
}

func TestCA_generateStagedThenRotate(t *testing.T) {
	m := newMount(t, "registry")
	before := m.ok(read, "ca", nil).Data
	staged := m.ok(update, "ca/generate", map[string]any{"stage": true}).Data
	if staged["fingerprint"] != before["fingerprint"] || staged["staged"] == nil ||
		strings.Count(staged["bundle"].(string), "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("ca/generate stage=true: %v", staged)
	}
	m.ok(update, "keys/rotate", nil)
	after := m.ok(read, "ca", nil).Data
	if after["fingerprint"] == before["fingerprint"] || after["staged"] != nil {
		t.Fatalf("keys/rotate did not activate the staged CA: %v", after)
	}
}
