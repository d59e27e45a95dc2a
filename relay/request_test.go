package relay

import (
	"encoding/base64"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func TestValidService(t *testing.T) {
	good := []string{"registry", "a", "R2", "my-registry.example.com", "a_b", "0", strings.Repeat("a", 128)}
	bad := []string{"", "-a", ".a", "_a", "a/b", "a b", "../sys", "sys/mounts", "a%2Fb", "a\x00",
		"é", "a:b", strings.Repeat("a", 129), "a?b", "a#b"}
	for _, s := range good {
		if !validService(s) {
			t.Errorf("validService(%q) = false", s)
		}
	}
	for _, s := range bad {
		if validService(s) {
			t.Errorf("validService(%q) = true", s)
		}
	}
}

func TestParseBasic(t *testing.T) {
	cases := []struct {
		name, header   string
		user, password string
		status         int // 0: accepted
	}{
		{"missing: anonymous", "", "", "", 0},
		{"plain", basic("alice", "s3cret"), "alice", "s3cret", 0},
		{"scheme in any case", "bAsIc " + base64.StdEncoding.EncodeToString([]byte("a:b")), "a", "b", 0},
		{"spaces around", "  Basic   " + base64.StdEncoding.EncodeToString([]byte("a:b")) + " ", "a", "b", 0},
		{"colons in password", basic("alice", "a:b::c"), "alice", "a:b::c", 0},
		{"empty password", basic("alice", ""), "alice", "", 0},
		{"empty user and password: anonymous", basic("", ""), "", "", 0},
		{"non-ASCII", basic("zoë@example.com", "pässwörd✓"), "zoë@example.com", "pässwörd✓", 0},
		{"e-mail user", basic("ci-bot@example.com", "x"), "ci-bot@example.com", "x", 0},
		{"password without user", basic("", "refresh-token-value"), "", "", 401},
		{"bearer", "Bearer abc.def.ghi", "", "", 401},
		{"scheme only", "Basic", "", "", 400},
		{"malformed base64", "Basic !!!notbase64", "", "", 400},
		{"url-safe base64", "Basic " + base64.URLEncoding.EncodeToString([]byte("a?>:b?>")), "", "", 400},
		{"no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), "", "", 400},
		{"invalid UTF-8 password", basic("alice", "\xff\xfe"), "", "", 400},
		{"invalid UTF-8 user", basic("\xffalice", "x"), "", "", 400},
		{"control character in user", basic("ali\nce", "x"), "", "", 400},
		{"oversized user", basic(strings.Repeat("u", maxNameBytes+1), "x"), "", "", 400},
		{"oversized password", basic("alice", strings.Repeat("p", maxPasswordBytes+1)), "", "", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user, password, f := parseBasic(c.header, nil)
			switch {
			case c.status == 0 && f != nil:
				t.Fatalf("refused: %d %s", f.status, f.msg)
			case c.status != 0 && f == nil:
				t.Fatalf("accepted %q:%q", user, password)
			case c.status != 0 && f.status != c.status:
				t.Fatalf("status = %d, want %d (%s)", f.status, c.status, f.msg)
			case c.status == 0 && (user != c.user || password != c.password):
				t.Fatalf("got %q:%q, want %q:%q", user, password, c.user, c.password)
			}
			if f != nil && strings.Contains(f.msg, "s3cret") {
				t.Errorf("message shows the password: %s", f.msg)
			}
		})
	}
}

func TestParseTokenQuery_scopesPassThrough(t *testing.T) {
	q := url.Values{
		"service":   {"registry"},
		"scope":     {"repository:a/b:pull", "repository:c:pull,push registry:catalog:*", "", "  "},
		"account":   {"alice"},
		"client_id": {"docker"},
	}
	req, f := parseTokenQuery(q.Encode(), basic("alice", "pw"), nil)
	if f != nil {
		t.Fatal(f.msg)
	}
	want := &tokenRequest{
		Service: "registry", Username: "alice", Password: "pw", Account: "alice", ClientID: "docker",
		Scopes: []string{"repository:a/b:pull", "repository:c:pull,push registry:catalog:*"},
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("got  %+v\nwant %+v", req, want)
	}
}

func TestParseTokenQuery_refusals(t *testing.T) {
	many := url.Values{"service": {"r"}}
	for range tokenapi.MaxScopes + 1 {
		many.Add("scope", "repository:a:pull")
	}
	cases := []struct {
		name, query string
		status      int
	}{
		{"no service", "scope=repository:a:pull", 400},
		{"empty service", "service=", 400},
		{"service with slash", "service=sys%2Fmounts", 400},
		{"service traversal", "service=..%2Fsys", 400},
		{"repeated service", "service=a&service=b", 400},
		{"repeated account", "service=a&account=x&account=y", 400},
		{"bad offline_token", "service=a&offline_token=maybe", 400},
		{"bad escape", "service=a&scope=%zz", 400},
		{"control in scope", "service=a&scope=repository:a%0A:pull", 400},
		{"long scope", "service=a&scope=" + strings.Repeat("a", tokenapi.MaxScopeBytes+1), 400},
		{"too many scopes", many.Encode(), 400},
		{"control in client_id", "service=a&client_id=%07", 400},
		{"account without credentials", "service=a&account=alice", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, f := parseTokenQuery(c.query, "", nil)
			if f == nil || f.status != c.status {
				t.Fatalf("got %v, want status %d", f, c.status)
			}
		})
	}
}

func TestParseTokenQuery_offlineToken(t *testing.T) {
	for in, want := range map[string]bool{"true": true, "1": true, "TRUE": true, "false": false, "0": false} {
		req, f := parseTokenQuery("service=r&offline_token="+in, "", nil)
		if f != nil || req.Offline != want {
			t.Errorf("offline_token=%s: got %v %v", in, req, f)
		}
	}
}

func TestParseTokenForm(t *testing.T) {
	req, f := parseTokenForm(url.Values{
		"grant_type": {"password"}, "username": {"alice"}, "password": {"p:w"}, "service": {"registry"},
		"client_id": {"containerd-client"}, "scope": {"repository:a:pull  repository:b:push"}, "access_type": {"offline"},
	}, nil)
	if f != nil {
		t.Fatal(f.msg)
	}
	want := &tokenRequest{Service: "registry", Username: "alice", Password: "p:w", ClientID: "containerd-client",
		Scopes: []string{"repository:a:pull", "repository:b:push"}, Offline: true, OAuth: true}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("got  %+v\nwant %+v", req, want)
	}
	if req.vaultPath() != "registry/token" {
		t.Errorf("path = %s", req.vaultPath())
	}

	req, f = parseTokenForm(url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {"rt"}, "service": {"registry"}, "client_id": {"docker"},
	}, nil)
	if f != nil {
		t.Fatal(f.msg)
	}
	if req.vaultPath() != "registry/token/refresh" || req.RefreshToken != "rt" {
		t.Errorf("refresh request = %+v", req)
	}
	body := req.vaultBody(800)
	if _, ok := body["password"]; ok || body["refresh_token"] != "rt" || body["client_id"] != "docker" {
		t.Errorf("refresh body = %v", body)
	}
}

func TestParseTokenForm_refusals(t *testing.T) {
	ok := func() url.Values {
		return url.Values{"grant_type": {"password"}, "username": {"u"}, "password": {"p"}, "service": {"r"}}
	}
	with := func(k string, v ...string) url.Values { f := ok(); f[k] = v; return f }
	without := func(k string) url.Values { f := ok(); delete(f, k); return f }
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"no grant_type", without("grant_type"), 400, "invalid_request"},
		{"client_credentials", with("grant_type", "client_credentials"), 400, "unsupported_grant_type"},
		{"authorization_code", with("grant_type", "authorization_code"), 400, "unsupported_grant_type"},
		{"repeated grant_type", with("grant_type", "password", "password"), 400, "invalid_request"},
		{"repeated scope", with("scope", "a", "b"), 400, "invalid_request"},
		{"no service", without("service"), 400, "invalid_request"},
		{"bad service", with("service", "a/b"), 400, "invalid_request"},
		{"no username", without("username"), 400, "invalid_request"},
		{"bad access_type", with("access_type", "forever"), 400, "invalid_request"},
		{"invalid UTF-8 password", with("password", "\xff"), 400, "invalid_request"},
		{"refresh without token", url.Values{"grant_type": {"refresh_token"}, "service": {"r"}}, 400, "invalid_request"},
		{"refresh token too long", url.Values{"grant_type": {"refresh_token"}, "service": {"r"},
			"refresh_token": {strings.Repeat("x", maxRefreshBytes+1)}}, 401, "invalid_grant"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, f := parseTokenForm(c.form, nil)
			if f == nil || f.status != c.status || f.oauthCode != c.code {
				t.Fatalf("got %+v, want %d %s", f, c.status, c.code)
			}
		})
	}
}

func TestTokenRequest_vaultBody(t *testing.T) {
	req := &tokenRequest{Service: "r", Username: "u", Password: "p", Account: "u", ClientID: "c", Offline: true}
	body := req.vaultBody(800)
	want := map[string]any{"username": "u", "password": "p", "scope": []string{}, "account": "u",
		"client_id": "c", "offline_token": true, "ttl": int64(800)}
	if !reflect.DeepEqual(body, want) {
		t.Errorf("got  %v\nwant %v", body, want)
	}
	if _, ok := req.vaultBody(0)["ttl"]; ok {
		t.Error("ttl sent although token.expiration is 0")
	}
}
