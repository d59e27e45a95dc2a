//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

// TestVaultStatus_sameAsHTTP: the status that plugintest.Status (the one
// mapping every in-process test reads) gives for each kind of answer is the
// status the real Vault server answers over HTTP for the same request. The
// same calls, in the same order, go to a plugin mount of a dev server and
// to the plugin in process.
func TestVaultStatus_sameAsHTTP(t *testing.T) {
	v := StartVault(t)
	svc := v.EnableService(t, "registry")

	local := plugin.New(backend.Options{Logger: hclog.NewNullLogger()})
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	if err := local.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	// EnableService made a trust anchor on the server's mount.
	if code, _, msg := plugintest.Call(context.Background(), local, &logical.Request{
		Operation: logical.UpdateOperation, Path: "ca/generate", Storage: conf.StorageView, MountPoint: svc.Name + "/"}); code != http.StatusOK {
		t.Fatalf("ca/generate in process: %d %s", code, msg)
	}

	methods := map[logical.Operation]string{
		logical.ReadOperation: http.MethodGet, logical.ListOperation: "LIST",
		logical.UpdateOperation: http.MethodPost, logical.DeleteOperation: http.MethodDelete,
	}
	for _, c := range []struct {
		what string
		op   logical.Operation
		path string
		data map[string]any
	}{
		{"list with no user", logical.ListOperation, "users/", nil},
		{"read a missing user", logical.ReadOperation, "users/nobody", nil},
		{"update with no response", logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4, "lockout_threshold": 2}},
		{"read", logical.ReadOperation, "config", nil},
		{"create", logical.UpdateOperation, "users/bob", map[string]any{"password": "bob-pw-1", "access": "repository:bob/*:*"}},
		{"update", logical.UpdateOperation, "users/bob", map[string]any{"access": "repository:bob/*:pull"}},
		{"invalid write", logical.UpdateOperation, "users/eve", map[string]any{"password": "pw", "access": "repository:x:fly"}},
		{"list", logical.ListOperation, "users/", nil},
		{"token", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "bob-pw-1", "scope": []string{"repository:bob/x:pull"}}},
		{"malformed scope", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "bob-pw-1", "scope": []string{"nonsense"}}},
		{"wrong password", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "wrong-1"}},
		{"unknown user", logical.UpdateOperation, "token", map[string]any{"username": "nobody", "password": "wrong"}},
		{"locked out", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "bob-pw-1"}},
		{"no credentials, no anonymous access", logical.UpdateOperation, "token", map[string]any{}},
		{"list refresh tokens, none", logical.ListOperation, "users/bob/refresh-tokens", nil},
		{"delete refresh tokens, none", logical.DeleteOperation, "users/bob/refresh-tokens", nil},
		{"raw body", logical.ReadOperation, "ca/pem", nil},
		{"rotate", logical.UpdateOperation, "keys/rotate", nil},
		{"delete", logical.DeleteOperation, "users/bob", nil},
		{"delete a missing user", logical.DeleteOperation, "users/bob", nil},
		{"unknown path", logical.ReadOperation, "nothing/here", nil},
	} {
		req := &logical.Request{Operation: c.op, Path: c.path, Data: c.data, Storage: conf.StorageView, MountPoint: svc.Name + "/"}
		want, _, msg := plugintest.Call(context.Background(), local, req)
		got := vaultHTTPStatus(t, v, methods[c.op], svc.Name+"/"+c.path, c.data)
		if got != want {
			t.Errorf("%s (%s %s): Vault answers %d over HTTP, plugintest.Status says %d (%s)", c.what, methods[c.op], c.path, got, want, msg)
		}
	}
}

// vaultHTTPStatus is the status of one call to Vault's HTTP API as root.
func vaultHTTPStatus(t *testing.T, v *Vault, method, path string, data map[string]any) int {
	t.Helper()
	var body bytes.Reader
	if data != nil {
		body.Reset(mustJSON(t, data))
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", rootToken)
	code, _, _ := doHTTP(t, req)
	return code
}
