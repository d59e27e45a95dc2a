package paths_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// mount is one plugin mount over in-memory storage, called the way Vault
// calls it, with Vault's own mapping of responses to HTTP statuses.
type mount struct {
	t       *testing.T
	b       logical.Backend
	storage logical.Storage
	path    string
}

func newMount(t *testing.T, path string) *mount {
	t.Helper()
	m := startMount(t, path, backend.Options{}, &logical.InmemStorage{})
	m.ok(logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4})
	return m
}

// startMount starts the plugin on storage (a new mount's, or one a mount
// used before, as after a plugin restart), with opts.
func startMount(t *testing.T, path string, opts backend.Options, storage logical.Storage) *mount {
	t.Helper()
	opts.Logger = hclog.NewNullLogger()
	b := plugin.New(opts)
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	// As Vault does when the mount is enabled.
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: conf.StorageView}); err != nil {
		t.Fatal(err)
	}
	return &mount{t: t, b: b, storage: conf.StorageView, path: path}
}

// call runs one request the way Vault does and returns Vault's HTTP
// status for it, the response, and the error text a client would see.
func (m *mount) call(op logical.Operation, path string, data map[string]any) (int, *logical.Response, string) {
	m.t.Helper()
	req := &logical.Request{
		Operation:  op,
		Path:       path,
		Data:       data,
		Storage:    m.storage,
		MountPoint: m.path + "/",
	}
	return m.do(req)
}

// do runs req the way Vault does (plugintest.Call); a token path's
// refusal reads as "code: message".
func (m *mount) do(req *logical.Request) (int, *logical.Response, string) {
	code, resp, msg := plugintest.Call(context.Background(), m.b, req)
	if text := errText(resp); text != "" {
		msg = text
	}
	return code, resp, msg
}

func (m *mount) ok(op logical.Operation, path string, data map[string]any) *logical.Response {
	m.t.Helper()
	code, resp, msg := m.call(op, path, data)
	if code >= 300 {
		m.t.Fatalf("%s %s: status %d: %s", op, path, code, msg)
	}
	return resp
}

// fail runs a request that must fail with want, and whose error must
// mention mention.
func (m *mount) fail(op logical.Operation, path string, data map[string]any, want int, mention string) {
	m.t.Helper()
	code, _, msg := m.call(op, path, data)
	if code != want {
		m.t.Fatalf("%s %s: status %d, want %d (%s)", op, path, code, want, msg)
	}
	if mention != "" && !strings.Contains(msg, mention) {
		m.t.Fatalf("%s %s: error %q does not mention %q", op, path, msg, mention)
	}
}

// errText is the message of an error response, or of a token path's
// refusal (its code first, as "code: message").
func errText(resp *logical.Response) string {
	if resp == nil || resp.Data == nil {
		return ""
	}
	if raw, ok := resp.Data[logical.HTTPRawBody].(string); ok {
		var body struct {
			Data tokenapi.Refusal `json:"data"`
		}
		if json.Unmarshal([]byte(raw), &body) == nil && body.Data.Code != "" {
			return string(body.Data.Code) + ": " + body.Data.Message
		}
	}
	s, _ := resp.Data["error"].(string)
	return s
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
