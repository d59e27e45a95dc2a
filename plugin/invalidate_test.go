package plugin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

// node is one instance of the plugin on one node of a Vault cluster: all
// nodes share the storage, each has its own caches.
type node struct {
	t *testing.T
	b logical.Backend
	s logical.Storage
}

func clusterOfTwo(t *testing.T) (active, standby node) {
	t.Helper()
	storage := &logical.InmemStorage{}
	for _, n := range []*node{&active, &standby} {
		b := New(backendOptionsForTest())
		conf := logical.TestBackendConfig()
		conf.StorageView = storage
		if err := b.Setup(context.Background(), conf); err != nil {
			t.Fatal(err)
		}
		*n = node{t: t, b: b, s: storage}
	}
	return active, standby
}

func (n node) ok(op logical.Operation, path string, data map[string]any) *logical.Response {
	n.t.Helper()
	code, resp, msg := plugintest.Call(context.Background(), n.b, &logical.Request{
		Operation: op, Path: path, Data: data, Storage: n.s, MountPoint: "registry/"})
	if code >= 300 {
		n.t.Fatalf("%s %s: %d %s", op, path, code, msg)
	}
	return resp
}

// TestInvalidate_configAndKeyRingSeenByTheOtherNode: a node that read the
// config and the key ring keeps them cached while another node changes
// them in the shared storage, and sees the change once Vault calls its
// Invalidate with the storage key (what Vault does on a standby when the
// active node writes). Without Invalidate the standby would go on minting
// with the old issuer and the retired key.
func TestInvalidate_configAndKeyRingSeenByTheOtherNode(t *testing.T) {
	active, standby := clusterOfTwo(t)
	ctx := context.Background()
	active.ok(logical.UpdateOperation, "ca/generate", nil)
	active.ok(logical.UpdateOperation, "config", map[string]any{"issuer": "first", "bcrypt_cost": 4})

	// The standby reads and caches both.
	if got := standby.ok(logical.ReadOperation, "config", nil).Data["issuer"]; got != "first" {
		t.Fatalf("standby issuer %v, want first", got)
	}
	oldKey := standby.ok(logical.ReadOperation, "keys", nil).Data["current_key"]

	// The active node changes them.
	active.ok(logical.UpdateOperation, "config", map[string]any{"issuer": "second"})
	newKey := active.ok(logical.UpdateOperation, "keys/rotate", nil).Data["current_key"]
	if newKey == oldKey {
		t.Fatalf("rotation kept the current key %v", oldKey)
	}

	// Cached: the standby has not been told yet. (If this fails, the
	// standby reads storage every time and the test below shows nothing.)
	if got := standby.ok(logical.ReadOperation, "config", nil).Data["issuer"]; got != "first" {
		t.Fatalf("standby issuer %v before Invalidate; want the cached first", got)
	}
	if got := standby.ok(logical.ReadOperation, "keys", nil).Data["current_key"]; got != oldKey {
		t.Fatalf("standby current key %v before Invalidate; want the cached %v", got, oldKey)
	}

	standby.b.InvalidateKey(ctx, "config")
	if got := standby.ok(logical.ReadOperation, "config", nil).Data["issuer"]; got != "second" {
		t.Errorf("standby issuer %v after Invalidate(config), want second", got)
	}
	standby.b.InvalidateKey(ctx, "keys/ring")
	if got := standby.ok(logical.ReadOperation, "keys", nil).Data["current_key"]; got != newKey {
		t.Errorf("standby current key %v after Invalidate(keys/ring), want %v", got, newKey)
	}
	// And the standby mints with both.
	standby.ok(logical.UpdateOperation, "users/bob", map[string]any{"password": "pw"})
	tok, _ := standby.ok(logical.UpdateOperation, "token", map[string]any{"username": "bob", "password": "pw"}).Data["token"].(string)
	header, claims := jwtPart(t, tok, 0), jwtPart(t, tok, 1)
	if claims["iss"] != "second" || header["kid"] != newKey {
		t.Errorf("standby mints iss %v kid %v, want second and %v", claims["iss"], header["kid"], newKey)
	}
}

// jwtPart decodes part i (0 header, 1 claims) of a JWT, unverified: the
// signature is checked in TestGRPC_statusesSurviveTheHop.
func jwtPart(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
