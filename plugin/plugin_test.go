package plugin

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
	gplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/vault/sdk/logical"
	vaultplugin "github.com/hashicorp/vault/sdk/plugin"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
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
		code, resp, _ := plugintest.Call(context.Background(), b, &logical.Request{Operation: op, Path: path, Data: data, MountPoint: "registry/"})
		return code, resp
	}

	var minted *logical.Response
	for _, tc := range []struct {
		name string
		op   logical.Operation
		path string
		data map[string]any
		want int
	}{
		{"config", logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4, "lockout_threshold": 1}, 204},
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
		if tc.name == "token" {
			minted = resp
		}
	}

	// The raw PEM body survives the hop too.
	_, resp := do(logical.ReadOperation, "ca/pem", nil)
	if resp == nil || resp.Data[logical.HTTPContentType] != "application/x-pem-file" {
		t.Fatalf("ca/pem over gRPC: %v", resp)
	}
	// Over gRPC the raw body arrives as the base64 string JSON makes of
	// bytes; Vault's HTTP layer decodes it.
	raw, _ := resp.Data[logical.HTTPRawBody].(string)
	pem, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatalf("ca/pem over gRPC: %v", err)
	}

	// And the token minted over gRPC is one a registry accepts: verified
	// as a registry does, against ca/pem.
	if minted == nil {
		t.Fatal("no token minted over gRPC")
	}
	tok, _ := minted.Data["token"].(string)
	verifyAsRegistry(t, tok, pem, "registry", "bob", `[{"type":"repository","name":"bob/x","actions":["pull"]}]`)
}

// verifyAsRegistry checks tok the way registry 2.8 does with a
// rootcertbundle: the x5c chain leads to a certificate of the bundle, its
// key verifies the signature, and iss, aud, sub and access are as wanted.
func verifyAsRegistry(t *testing.T, tok string, bundle []byte, aud, sub, access string) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatalf("ca/pem holds no certificate: %q", bundle)
	}
	var claims struct {
		jwt.RegisteredClaims
		Access json.RawMessage `json:"access"`
	}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"ES256", "RS256", "EdDSA"}), jwt.WithAudience(aud),
		jwt.WithIssuer("Token"), jwt.WithExpirationRequired()).ParseWithClaims(tok, &claims, func(tk *jwt.Token) (any, error) {
		chain, _ := tk.Header["x5c"].([]any)
		if len(chain) == 0 {
			return nil, errors.New("no x5c header")
		}
		var certs []*x509.Certificate
		for _, c := range chain {
			s, _ := c.(string)
			der, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, err
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, err
			}
			certs = append(certs, cert)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, err
		}
		return certs[0].PublicKey, nil
	})
	if err != nil {
		t.Fatalf("token minted over gRPC does not verify: %v", err)
	}
	if claims.Subject != sub {
		t.Errorf("sub %q, want %q", claims.Subject, sub)
	}
	if string(claims.Access) != access {
		t.Errorf("access %s, want %s", claims.Access, access)
	}
}

func TestBackend_specialPaths(t *testing.T) {
	b := New(backendOptionsForTest())
	sp := b.SpecialPaths()
	if len(sp.Unauthenticated) != 2 || sp.Unauthenticated[0] != "ca/pem" || sp.Unauthenticated[1] != "jwks" {
		t.Errorf("unauthenticated = %v", sp.Unauthenticated)
	}
	if len(sp.SealWrapStorage) != 2 || sp.SealWrapStorage[0] != "keys/" || sp.SealWrapStorage[1] != "robot-key" {
		t.Errorf("seal-wrapped = %v", sp.SealWrapStorage)
	}
	if b.RunningVersion != Version {
		t.Errorf("running version %q, want %q", b.RunningVersion, Version)
	}
}

func backendOptionsForTest() backend.Options { return backend.Options{Logger: hclog.NewNullLogger()} }
