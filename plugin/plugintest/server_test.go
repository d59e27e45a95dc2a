package plugintest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

const token = "hvs.test-token"

func do(t *testing.T, s *plugintest.Server, method, path, tok, body string) (int, string, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+"/v1/"+path, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("X-Vault-Token", tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, resp.Header.Get("Content-Type"), m
}

// The server answers as Vault with the plugin mounted: ca/pem without a
// token, the token path behind one, a refusal as the plugin's raw answer,
// a token in Vault's envelope with a request_id it records.
func TestServer_answersAsVault(t *testing.T) {
	s := plugintest.NewServer(t, plugin.Factory, token, "registry")
	s.MustCall("registry", "update", "users/alice", map[string]any{"password": "pw", "access": "repository:a:pull"})

	if code, ct, _ := do(t, s, http.MethodGet, "registry/ca/pem", "", ""); code != 200 || ct != "application/x-pem-file" {
		t.Errorf("ca/pem without a token: %d %s", code, ct)
	}
	if code, _, m := do(t, s, http.MethodPut, "registry/token", "hvs.other", `{"username":"alice","password":"pw"}`); code != 403 || m["errors"] == nil {
		t.Errorf("token with another token: %d %v", code, m)
	}
	code, _, m := do(t, s, http.MethodPut, "registry/token", token, `{"username":"alice","password":"wrong"}`)
	if data, _ := m["data"].(map[string]any); code != 401 || data["code"] != "invalid_credentials" {
		t.Errorf("wrong password: %d %v, want the plugin's refusal", code, m)
	}
	code, _, m = do(t, s, http.MethodPut, "registry/token", token, `{"username":"alice","password":"pw","scope":["repository:a:pull"]}`)
	if data, _ := m["data"].(map[string]any); code != 200 || data["token"] == nil || m["request_id"] == nil {
		t.Fatalf("token: %d %v", code, m)
	}
	if last := s.Last("token"); last == nil || last.RequestID != m["request_id"] || last.Token != token {
		t.Errorf("recorded %+v, want the answer's request_id %v", last, m["request_id"])
	}
	if code, _, _ := do(t, s, http.MethodGet, "nowhere/at/all", token, ""); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
}

// A hook answers instead of the plugin, or lets it answer.
func TestServer_hook(t *testing.T) {
	s := plugintest.NewServer(t, plugin.Factory, token, "registry")
	s.SetHook(func(w http.ResponseWriter, r *http.Request, req *plugintest.Request) bool {
		if req.Rest == "token" {
			plugintest.WriteError(w, http.StatusServiceUnavailable, "Vault is sealed")
			return true
		}
		return false
	})
	if code, _, m := do(t, s, http.MethodPut, "registry/token", token, `{}`); code != 503 || m["errors"].([]any)[0] != "Vault is sealed" {
		t.Errorf("hooked token: %d %v", code, m)
	}
	if code, _, _ := do(t, s, http.MethodGet, "registry/ca/pem", "", ""); code != 200 {
		t.Errorf("ca/pem past the hook: %d", code)
	}
	if n := len(s.Requests()); n != 2 {
		t.Errorf("%d requests recorded, want 2", n)
	}
}
