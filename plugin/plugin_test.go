package plugin

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"

	"github.com/hashicorp/go-hclog"
	gplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/vault/sdk/logical"
	vaultplugin "github.com/hashicorp/vault/sdk/plugin"

	"vault-plugin-registry/backend"
)

// grpcMount serves the plugin over the real gRPC plugin transport, as
// Vault runs it, and returns Vault's side of the connection.
func grpcMount(t *testing.T) logical.Backend {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr})
	client, _ := gplugin.TestPluginGRPCConn(t, false, map[string]gplugin.Plugin{
		vaultplugin.BackendPluginName: &vaultplugin.GRPCBackendPlugin{Factory: Factory, Logger: logger},
	})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(vaultplugin.BackendPluginName)
	if err != nil {
		t.Fatal(err)
	}
	b := raw.(logical.Backend)
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.Logger = logger
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGRPC_statusesSurviveTheHop(t *testing.T) {
	b := grpcMount(t)
	do := func(op logical.Operation, path string, data map[string]any) (int, *logical.Response) {
		req := &logical.Request{Operation: op, Path: path, Data: data, MountPoint: "registry/"}
		resp, err := b.HandleRequest(context.Background(), req)
		code, _ := logical.RespondErrorCommon(req, resp, err)
		if err != nil {
			logical.AdjustErrorStatusCode(&code, err) // as Vault's HTTP layer does
		}
		if err == logical.ErrUnsupportedPath {
			code = http.StatusNotFound
		}
		if resp != nil && code == 0 {
			// A raw answer, as Vault's HTTP layer reads it: over gRPC the
			// status arrives as a JSON number.
			if c, err := strconv.Atoi(fmt.Sprint(resp.Data[logical.HTTPStatusCode])); err == nil {
				code = c
			}
		}
		if code == 0 && resp == nil && op == logical.ReadOperation {
			code = http.StatusNotFound
		}
		if code == 0 {
			code = http.StatusOK
		}
		return code, resp
	}

	for _, tc := range []struct {
		name string
		op   logical.Operation
		path string
		data map[string]any
		want int
	}{
		{"config", logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4, "lockout_threshold": 1}, 200},
		{"user", logical.UpdateOperation, "users/bob", map[string]any{"password": "pw", "access": "repository:bob/*:*"}, 200},
		{"token", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "pw", "scope": []string{"repository:bob/x:pull"}}, 200},
		{"bad access is 400", logical.UpdateOperation, "users/eve", map[string]any{"password": "pw", "access": "repository:x:fly"}, 400},
		{"bad scope is 400", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "pw", "scope": []string{"nonsense"}}, 400},
		{"wrong password is 401", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "nope"}, 401},
		{"locked out is 429", logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "pw"}, 429},
		{"unknown user is 401", logical.UpdateOperation, "token", map[string]any{"username": "nobody", "password": "pw"}, 401},
		{"no anonymous access is 401", logical.UpdateOperation, "token", map[string]any{}, 401},
		{"missing user is 404", logical.ReadOperation, "users/nobody", nil, 404},
		{"unknown path is 404", logical.ReadOperation, "nothing/here", nil, 404},
		{"bad refresh token is 400", logical.UpdateOperation, "token/refresh", map[string]any{"refresh_token": "x"}, 400},
	} {
		code, resp := do(tc.op, tc.path, tc.data)
		if code != tc.want {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, code, tc.want, resp)
		}
	}

	// The raw PEM body survives the hop too.
	_, resp := do(logical.ReadOperation, "ca/pem", nil)
	if resp == nil || resp.Data[logical.HTTPContentType] != "application/x-pem-file" {
		t.Fatalf("ca/pem over gRPC: %v", resp)
	}
}

func TestBackend_specialPaths(t *testing.T) {
	b := New(backendOptionsForTest())
	sp := b.SpecialPaths()
	if len(sp.Unauthenticated) != 2 || sp.Unauthenticated[0] != "ca/pem" || sp.Unauthenticated[1] != "jwks" {
		t.Errorf("unauthenticated = %v", sp.Unauthenticated)
	}
	if len(sp.SealWrapStorage) != 1 || sp.SealWrapStorage[0] != "keys/" {
		t.Errorf("seal-wrapped = %v", sp.SealWrapStorage)
	}
	if b.RunningVersion != Version {
		t.Errorf("running version %q, want %q", b.RunningVersion, Version)
	}
}

func backendOptionsForTest() backend.Options { return backend.Options{Logger: hclog.NewNullLogger()} }
