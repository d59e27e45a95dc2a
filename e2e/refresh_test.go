//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
)

// Refresh tokens (docker login's identity token) end to end: a client that
// holds only an identity token in its docker config pushes and pulls through
// OAuth2 refresh grants, and loses access when the operator changes the
// user's password or revokes the user's refresh tokens.

// dora holds refresh tokens in these tests; each registry kind starts her
// afresh, since the tests change her password.
var dora = user{"dora", "dora-pw-4e1b7c", "repository:dora/**:*"}

// craneClientID is the client_id go-containerregistry (crane) sends with
// every OAuth2 request (transport.defaultUserAgent); the plugin records it
// as the refresh token's last client.
const craneClientID = "go-containerregistry"

// Log fragments of the relay's one line per token request.
const (
	refreshGrant = "grant=refresh_token"
	minted200    = "status=200"
	refused401   = "status=401"
)

// TestRefresh_identityToken: crane with only an identity token (issued to
// its own client_id) pushes and pulls on registry 2.8 and v3; a password
// change or `vault delete <service>/users/<name>/refresh-tokens` ends that.
func TestRefresh_identityToken(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	for _, rk := range registryKinds {
		t.Run(string(rk), func(t *testing.T) {
			reg := StartRegistry(t, rk, st.Relay, svc)
			testIdentityToken(t, st, svc, reg)
		})
	}
}

// TestRefresh_identityTokenServesEveryClient: a refresh token works from any
// client_id (docs/INTEGRATING.md, "Refresh tokens"). docker login's identity token (issued to
// client_id=docker) serves crane, which sends its own client_id, for a push
// and a pull; the operator's list shows the issuing and the last client.
func TestRefresh_identityTokenServesEveryClient(t *testing.T) {
	st := NewStack(t, "registry")
	svc := st.Services["registry"]
	svc.AddUsers(t, dora)
	reg := StartRegistry(t, Registry28, st.Relay, svc)
	img := NewTestImage(t)

	rt := refreshTokenGET(t, st.Relay, svc.Name, dora, "docker")
	c := NewClient(t, Crane)
	writeIdentityToken(t, c, reg.Host, dora.name, rt)
	mustOK(t, c.Push(reg, "dora/shared:v1", img))
	pullSame(t, c, reg, "dora/shared:v1", img)

	got := listRefreshTokens(t, st.Vault, svc.Name, dora.name, rt)
	want := []refreshTokenClients{{Issued: "docker", Last: craneClientID}}
	if len(got) != 1 || got[0] != want[0] {
		t.Errorf("refresh tokens of %s: %+v, want %+v", dora.name, got, want)
	}
}

func testIdentityToken(t *testing.T, st *Stack, svc *Service, reg *Registry) {
	svc.AddUsers(t, dora) // also revokes refresh tokens of an earlier run
	relay := st.Relay
	repo := "dora/" + string(reg.Kind)

	rt := refreshTokenGET(t, relay, svc.Name, dora, craneClientID)
	c := NewClient(t, Crane)
	writeIdentityToken(t, c, reg.Host, dora.name, rt)

	img := NewTestImage(t)
	before := relay.Proc.Log()
	mustOK(t, c.Push(reg, repo+":v1", img))
	pullSame(t, c, reg, repo+":v1", img)
	during := strings.TrimPrefix(relay.Proc.Log(), before)
	refreshes := countLines(during, "token request", refreshGrant, minted200)
	others := countLines(during, "token request") - refreshes
	t.Logf("MEASURE refresh %s crane_push_pull_refresh_grants=%d other_token_requests=%d", reg.Kind, refreshes, others)
	if refreshes == 0 || others != 0 {
		t.Errorf("crane push and pull with an identity token: %d minted refresh grants and %d other token requests in the relay log, "+
			"want only refresh grants", refreshes, others)
	}

	// The operator sees the token's id and client, never the token.
	ids := listRefreshTokens(t, st.Vault, svc.Name, dora.name, rt)
	if len(ids) != 1 || ids[0].Issued != craneClientID {
		t.Errorf("refresh tokens of %s: %+v, want one issued to %s", dora.name, ids, craneClientID)
	}

	// A password change revokes the refresh tokens: the same pull is refused.
	st.Vault.CLI(t, "write", svc.Name+"/users/"+dora.name, "password=new-"+dora.password)
	before = relay.Proc.Log()
	r, _ := c.Pull(reg, repo+":v1", img)
	mustFail(t, "crane pull with an identity token after a password change", r)
	during = strings.TrimPrefix(relay.Proc.Log(), before)
	if n := countLines(during, "token request", refreshGrant, refused401); n == 0 {
		t.Errorf("after the password change the relay answered no refresh grant with 401; its lines:\n%s", during)
	}
	if !strings.Contains(r.Stderr, "invalid_grant") {
		t.Errorf("crane's error does not show the relay's invalid_grant: %s", r.Stderr)
	}
	code, body := postRefreshGrant(t, relay, svc.Name, rt, craneClientID)
	if code != http.StatusUnauthorized || oauthError(body) != "invalid_grant" {
		t.Errorf("refresh grant after the password change: %d %s, want 401 invalid_grant", code, truncate(body, 200))
	}
	if ids := listRefreshTokens(t, st.Vault, svc.Name, dora.name, rt); len(ids) != 0 {
		t.Errorf("refresh tokens left after the password change: %v", ids)
	}

	// A new identity token from the OAuth2 password grant, then revoked by
	// deleting the user's refresh tokens.
	newPassword := user{dora.name, "new-" + dora.password, dora.access}
	rt = refreshTokenPOST(t, relay, svc.Name, newPassword, craneClientID)
	writeIdentityToken(t, c, reg.Host, dora.name, rt)
	pullSame(t, c, reg, repo+":v1", img)
	if ids := listRefreshTokens(t, st.Vault, svc.Name, dora.name, rt); len(ids) != 1 {
		t.Errorf("refresh tokens after a new login: %v, want one", ids)
	}
	out := st.Vault.CLI(t, "delete", svc.Name+"/users/"+dora.name+"/refresh-tokens")
	if strings.Contains(out, rt) {
		t.Errorf("vault delete printed the refresh token")
	}
	r, _ = c.Pull(reg, repo+":v1", img)
	mustFail(t, "crane pull with a revoked identity token", r)
	if code, body := postRefreshGrant(t, relay, svc.Name, rt, craneClientID); code != http.StatusUnauthorized || oauthError(body) != "invalid_grant" {
		t.Errorf("refresh grant after vault delete: %d %s, want 401 invalid_grant", code, truncate(body, 200))
	}
	if ids := listRefreshTokens(t, st.Vault, svc.Name, dora.name, rt); len(ids) != 0 {
		t.Errorf("refresh tokens left after vault delete: %v", ids)
	}
	assertLogsFree(t, []string{rt, dora.password, newPassword.password}, relay.Proc, st.Vault.Proc)
}

// refreshTokenGET logs in the way docker login does: GET /auth with Basic
// credentials, offline_token=true and the client's id.
func refreshTokenGET(t testing.TB, relay *Relay, service string, u user, clientID string) string {
	t.Helper()
	q := url.Values{"service": {service}, "offline_token": {"true"}, "client_id": {clientID}}
	code, _, body := httpGet(t, relay.URL+"/auth?"+q.Encode(), u.name, u.password)
	if code != http.StatusOK {
		t.Fatalf("GET /auth with offline_token: %d %s", code, truncate(body, 300))
	}
	return refreshTokenOf(t, body)
}

// refreshTokenPOST logs in with the OAuth2 password grant and
// access_type=offline.
func refreshTokenPOST(t testing.TB, relay *Relay, service string, u user, clientID string) string {
	t.Helper()
	code, body := postForm(t, relay, url.Values{
		"grant_type": {"password"}, "username": {u.name}, "password": {u.password},
		"access_type": {"offline"}, "client_id": {clientID}, "service": {service},
	})
	if code != http.StatusOK {
		t.Fatalf("POST /auth grant_type=password access_type=offline: %d %s", code, truncate(body, 300))
	}
	return refreshTokenOf(t, body)
}

func postRefreshGrant(t testing.TB, relay *Relay, service, rt, clientID string) (int, []byte) {
	t.Helper()
	return postForm(t, relay, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}, "service": {service},
		"scope": {"repository:dora/app:pull"},
	})
}

func postForm(t testing.TB, relay *Relay, form url.Values) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, relay.URL+"/auth", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, _, body := doHTTP(t, req)
	return code, body
}

func refreshTokenOf(t testing.TB, body []byte) string {
	t.Helper()
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.RefreshToken == "" {
		t.Fatalf("no refresh_token in the relay's answer: %v %q", err, truncate(body, 200))
	}
	return out.RefreshToken
}

func oauthError(body []byte) string {
	var out struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &out)
	return out.Error
}

// writeIdentityToken writes the client's docker config.json as docker login
// leaves it when the token server returned a refresh token: the user name
// with an empty password, and the refresh token as identitytoken.
func writeIdentityToken(t testing.TB, c *Client, host, userName, rt string) {
	t.Helper()
	config := map[string]any{"auths": map[string]any{host: map[string]string{
		"auth":          base64.StdEncoding.EncodeToString([]byte(userName + ":")),
		"identitytoken": rt,
	}}}
	mustWrite(t, c.path(".docker/config.json"), mustJSON(t, config))
}

// refreshTokenClients are the clients the operator's list shows for one
// refresh token: the one it was issued to and the last one that used it.
type refreshTokenClients struct{ Issued, Last string }

// listRefreshTokens lists a user's refresh tokens as an operator does, with
// the CLI and the API (for their details), checks neither shows the token
// itself, and returns their clients.
func listRefreshTokens(t testing.TB, v *Vault, service, userName, rt string) []refreshTokenClients {
	t.Helper()
	path := service + "/users/" + userName + "/refresh-tokens"
	out, errOut, err := v.TryCLI("", "list", "-format=json", path)
	if strings.Contains(out+errOut, rt) {
		t.Errorf("vault list %s shows the refresh token itself", path)
	}
	// The CLI exits 2 when there is nothing to list, saying "No value
	// found", or with -format=json printing {}; any other failure is no
	// answer at all. The LIST below checks the empty answer itself.
	var keys []string
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		if jerr := json.Unmarshal([]byte(out), &keys); jerr != nil {
			t.Fatalf("vault list %s: %v: %s", path, jerr, out)
		}
	case !errors.As(err, &exitErr) || exitErr.ExitCode() != 2 || !(strings.Contains(errOut, "No value found") || strings.TrimSpace(out) == "{}"):
		t.Fatalf("vault list %s: %v\n%s%s", path, err, out, errOut)
	}
	code, answer := v.RootCall(t, "LIST", path, nil)
	if code == http.StatusNotFound {
		// An empty list is a 404 without an error; an unknown path or a
		// failing handler is a 404 or other status with one.
		if errs, ok := answer["errors"].([]any); !ok || len(errs) != 0 {
			t.Fatalf("LIST %s: 404 %v, want the empty list's 404 (no error)", path, answer)
		}
		if len(keys) != 0 {
			t.Errorf("vault list %s shows %v but the API answers 404", path, keys)
		}
		return nil
	}
	if code != http.StatusOK {
		t.Fatalf("LIST %s: %d %v", path, code, answer)
	}
	if strings.Contains(string(mustJSON(t, answer)), rt) {
		t.Errorf("LIST %s answers the refresh token itself", path)
	}
	var clients []refreshTokenClients
	for _, id := range keys {
		info, _ := answer["data"].(map[string]any)
		keyInfo, _ := info["key_info"].(map[string]any)
		one, _ := keyInfo[id].(map[string]any)
		if one == nil {
			t.Errorf("LIST %s: no key_info for %s", path, id)
			continue
		}
		issued, _ := one["client_id"].(string)
		last, _ := one["last_client_id"].(string)
		if one["created"] == nil || one["expires"] == nil || one["last_used"] == nil {
			t.Errorf("LIST %s: key_info of %s lacks created, expires or last_used: %v", path, id, one)
		}
		clients = append(clients, refreshTokenClients{Issued: issued, Last: last})
	}
	return clients
}
