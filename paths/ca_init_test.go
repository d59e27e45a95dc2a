package paths_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/plugin"
)

// mountWithout is a mount set up but not initialized, on a node in the
// given replication state.
func mountWithout(t *testing.T, state consts.ReplicationState) (*mount, *logical.InmemStorage) {
	t.Helper()
	b := plugin.New(backend.Options{Logger: hclog.NewNullLogger()})
	conf := logical.TestBackendConfig()
	conf.System = &logical.StaticSystemView{ReplicationStateVal: state}
	s := &logical.InmemStorage{}
	conf.StorageView = s
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	return &mount{t: t, b: b, storage: s, path: "registry"}, s
}

// TestCA_readsOnlyRead: a read of ca, ca/pem or jwks (two need no token)
// never makes keys; on a mount without a trust anchor it is a 404 that
// says why.
func TestCA_readsOnlyRead(t *testing.T) {
	m, s := mountWithout(t, 0)
	for _, p := range []string{"ca", "ca/pem", "jwks", "keys"} {
		m.fail(read, p, nil, http.StatusNotFound, "no trust anchor yet")
	}
	if keys, _ := s.List(context.Background(), backend.KeyPrefix); len(keys) != 0 {
		t.Fatalf("reads wrote keys: %v", keys)
	}
	// Vault initializes the mount on the active node: from then on ca/pem answers.
	if err := m.b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	m.ok(read, "ca/pem", nil)
}

// TestCA_standbyNeverMakesKeys: Initialize on a node that may not write
// (a performance standby or secondary) leaves storage alone.
func TestCA_standbyNeverMakesKeys(t *testing.T) {
	for _, state := range []consts.ReplicationState{consts.ReplicationPerformanceStandby, consts.ReplicationPerformanceSecondary, consts.ReplicationDRSecondary} {
		m, s := mountWithout(t, state)
		if err := m.b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
			t.Fatal(err)
		}
		if keys, _ := s.List(context.Background(), backend.KeyPrefix); len(keys) != 0 {
			t.Errorf("state %v: Initialize wrote keys %v", state, keys)
		}
	}
}
