package relay

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/.

func FuzzParseBasic(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string) {
		user, password, fl := parseBasic(header, nil)
		if fl != nil {
			if fl.status != 400 && fl.status != 401 {
				t.Fatalf("status %d", fl.status)
			}
			if user != "" || password != "" {
				t.Fatal("credentials returned with a refusal")
			}
			return
		}
		if !utf8.ValidString(user) || !utf8.ValidString(password) ||
			len(user) > maxNameBytes || len(password) > maxPasswordBytes || strings.IndexFunc(user, isControl) >= 0 {
			t.Fatalf("accepted %q:%q", user, password)
		}
		if user == "" && password != "" {
			t.Fatal("a password without a user was accepted")
		}
		if header == "" {
			return
		}
		u2, p2, f2 := parseBasic(basic(user, password), nil)
		if f2 != nil || u2 != user || p2 != password {
			t.Fatalf("round trip of %q:%q gave %q:%q %v", user, password, u2, p2, f2)
		}
	})
}

func FuzzParseForm(f *testing.F) {
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return // the handler answers 400 before parsing
		}
		req, fl := parseTokenForm(form, nil)
		if fl != nil {
			if (fl.status != 400 && fl.status != 401) || fl.oauthCode == "" || fl.msg == "" {
				t.Fatalf("refusal %+v", fl)
			}
			if strings.Contains(fl.msg, form.Get("password")) && form.Get("password") != "" && len(form.Get("password")) > 3 {
				t.Fatalf("refusal shows the password: %q", fl.msg)
			}
			return
		}
		if !validService(req.Service) || !req.OAuth {
			t.Fatalf("accepted %+v", req)
		}
		if req.RefreshToken == "" && req.Username == "" {
			t.Fatal("neither a user nor a refresh token")
		}
		if len(req.Scopes) > tokenapi.MaxScopes {
			t.Fatalf("%d scopes", len(req.Scopes))
		}
		for _, s := range req.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				t.Fatalf("scope %q not split", s)
			}
		}
		if !strings.HasPrefix(req.vaultPath(), req.Service+"/token") {
			t.Fatalf("path %s", req.vaultPath())
		}
		data, err := json.Marshal(req.vaultBody(800))
		if err != nil {
			t.Fatal(err)
		}
		var back map[string]any
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if req.RefreshToken == "" && back["password"] != req.Password {
			t.Fatal("the password does not survive JSON unchanged")
		}
	})
}

func FuzzLoadConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		if err := cfg.checkValues(); err != nil {
			t.Fatalf("accepted then refused: %v", err)
		}
		if cfg.Storage.Vault.Timeout <= 0 || cfg.HTTP.Timeout <= 0 || cfg.Storage.Vault.Pool <= 0 {
			t.Fatalf("defaults missing: %+v", cfg)
		}
		if _, err := ParseConfig(data); err != nil {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}
