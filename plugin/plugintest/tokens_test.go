package plugintest_test

import (
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// A token's entity reaches the plugin as Vault sets it: token/identity
// mints for the entity of the token that calls it, its groups' access
// granted; a token without an entity gets the plugin's refusal, an
// unknown one Vault's.
func TestServer_tokensCarryTheirEntity(t *testing.T) {
	s := plugintest.NewServer(t, plugin.Factory, token, "registry")
	s.MustCall("registry", logical.UpdateOperation, "groups/devs", map[string]any{"access": "repository:app/*:pull"})
	s.SetEntity(&logical.Entity{ID: "e-alice", Name: "alice"}, &logical.Group{ID: "g-devs", Name: "devs"})
	s.AddToken("hvs.alice", plugintest.Token{EntityID: "e-alice", TTL: 60})
	s.AddToken("hvs.root", plugintest.Token{})

	body := `{"scope":["repository:app/x:pull,push"]}`
	code, _, m := do(t, s, http.MethodPut, "registry/token/identity", "hvs.alice", body)
	data, _ := m["data"].(map[string]any)
	if code != 200 || data["sub"] != "alice" {
		t.Fatalf("token/identity with alice's token: %d %v", code, m)
	}
	if access, _ := data["access"].([]any); len(access) != 1 || access[0].(map[string]any)["actions"].([]any)[0] != "pull" {
		t.Errorf("granted %v, want the group's pull only", data["access"])
	}
	if code, _, m := do(t, s, http.MethodPut, "registry/token/identity", "hvs.root", body); code != 400 || m["data"].(map[string]any)["code"] != "invalid_request" {
		t.Errorf("a token without an entity: %d %v, want the plugin's 400", code, m)
	}
	if code, _, m := do(t, s, http.MethodPut, "registry/token/identity", "hvs.unknown", body); code != 403 || m["errors"].([]any)[0] != plugintest.InvalidToken {
		t.Errorf("an unknown token: %d %v, want Vault's 403", code, m)
	}
}

// A lease the plugin answers belongs to the calling token: revoking the
// token (or its revoke-self) revokes the identity session with it, at the
// plugin, as Vault does; the token is refused from then on.
func TestServer_revokingATokenRevokesItsLeases(t *testing.T) {
	for _, how := range []string{"RevokeToken", "revoke-self"} {
		t.Run(how, func(t *testing.T) {
			s := plugintest.NewServer(t, plugin.Factory, token, "registry")
			s.SetEntity(&logical.Entity{ID: "e-alice", Name: "alice"})
			s.AddToken("hvs.alice", plugintest.Token{EntityID: "e-alice", TTL: 60})
			code, _, m := do(t, s, http.MethodPut, "registry/token/identity", "hvs.alice", `{"identity_session":true}`)
			session, _ := m["data"].(map[string]any)[tokenapi.FieldIdentitySession].(string)
			if code != 200 || session == "" || m["lease_id"] == nil {
				t.Fatalf("token/identity with identity_session: %d %v", code, m)
			}
			batch := `{"requests":[{"identity_session":"` + session + `"}]}`
			status := func() any {
				code, _, m := do(t, s, http.MethodPut, "registry/token/batch", token, batch)
				if code != 200 {
					t.Fatalf("token/batch: %d %v", code, m)
				}
				return m["data"].(map[string]any)["answers"].([]any)[0].(map[string]any)["status"]
			}
			if got := status(); got != float64(200) {
				t.Fatalf("the session before the revocation: %v", got)
			}
			if how == "RevokeToken" {
				s.RevokeToken("hvs.alice")
			} else if code, _, _ := do(t, s, http.MethodPut, "auth/token/revoke-self", "hvs.alice", ""); code != 204 {
				t.Fatalf("revoke-self: %d", code)
			}
			if got := status(); got != float64(401) {
				t.Errorf("the session after its token's revocation: %v, want 401", got)
			}
			if s.TokenLive("hvs.alice") {
				t.Error("the revoked token is live")
			}
			if code, _, _ := do(t, s, http.MethodGet, "auth/token/lookup-self", "hvs.alice", ""); code != 403 {
				t.Errorf("lookup-self of the revoked token: %d", code)
			}
		})
	}
}

// A login issues a live token with its entity; lookup-self and renew-self
// answer its TTL; a path the token's policies lack is refused.
func TestServer_loginsAndTokenSelfPaths(t *testing.T) {
	s := plugintest.NewServer(t, plugin.Factory, token, "registry")
	s.SetEntity(&logical.Entity{ID: "e-bob", Name: "bob"})
	s.SetLogin("userpass", func(req *plugintest.Request, name string, body map[string]any) (string, plugintest.Token, error) {
		if name != "bob" || body["password"] != "pw" {
			return "", plugintest.Token{}, &plugintest.Error{Status: 400, Message: "invalid username or password"}
		}
		return "", plugintest.Token{EntityID: "e-bob", TTL: 30, Deny: []string{"auth/token/renew-self"}}, nil
	})
	if code, _, m := do(t, s, http.MethodPut, "auth/userpass/login/bob", "", `{"password":"wrong"}`); code != 400 || m["errors"].([]any)[0] != "invalid username or password" {
		t.Errorf("wrong password: %d %v", code, m)
	}
	code, _, m := do(t, s, http.MethodPut, "auth/userpass/login/bob", "", `{"password":"pw"}`)
	auth, _ := m["auth"].(map[string]any)
	tok, _ := auth["client_token"].(string)
	if code != 200 || tok == "" || auth["lease_duration"] != float64(30) || auth["entity_id"] != "e-bob" {
		t.Fatalf("login: %d %v", code, m)
	}
	code, _, m = do(t, s, http.MethodGet, "auth/token/lookup-self", tok, "")
	if data, _ := m["data"].(map[string]any); code != 200 || data["ttl"] != float64(30) || data["entity_id"] != "e-bob" {
		t.Errorf("lookup-self: %d %v", code, m)
	}
	if code, _, m := do(t, s, http.MethodPut, "auth/token/renew-self", tok, ""); code != 403 || m["errors"].([]any)[0] != "permission denied" {
		t.Errorf("renew-self, denied by the token's policy: %d %v", code, m)
	}
	code, _, m = do(t, s, http.MethodPut, "auth/token/renew-self", token, "")
	if auth, _ := m["auth"].(map[string]any); code != 200 || auth["lease_duration"] != float64(plugintest.TokenPeriod) {
		t.Errorf("renew-self of the operator token: %d %v", code, m)
	}
	if code, _, _ := do(t, s, http.MethodPut, "auth/other/login", "", `{}`); code != 404 {
		t.Errorf("a login at a mount the server lacks: %d", code)
	}
	if last := s.Requests(); last[len(last)-1].Status != 404 {
		t.Errorf("the answer's status is not recorded: %+v", last[len(last)-1])
	}
}
