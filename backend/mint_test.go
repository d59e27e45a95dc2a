package backend

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/access"
)

func TestMint_tokenVerifiesAndCarriesEveryClaim(t *testing.T) {
	for _, keyType := range []string{KeyTypeEC, KeyTypeRSA, KeyTypeEd25519} {
		t.Run(keyType, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			cfg.KeyType = keyType
			cfg.Issuer = "Token"
			f.saveConfig(cfg)
			f.addUser("alice@example.com", "s3cret", "repository:linux/app:*;repository:linux/db:pull")

			tok, err := f.mint(TokenRequest{
				Username: "alice@example.com", Password: "s3cret", Account: "alice@example.com",
				Scopes: []string{"repository:linux/app:pull,push", "repository:linux/db:pull,push"},
			})
			if err != nil {
				t.Fatal(err)
			}
			ring, err := f.b.Keys(f.ctx, f.s)
			if err != nil {
				t.Fatal(err)
			}
			now := f.clock.Now()
			v := verifyToken(t, tok.JWT, ring.Bundle(), now)

			if v.Claims.Iss != "Token" || v.Claims.Sub != "alice@example.com" {
				t.Errorf("iss, sub = %q, %q", v.Claims.Iss, v.Claims.Sub)
			}
			if aud, ok := v.Claims.Aud.(string); !ok || aud != "registry" {
				t.Errorf("aud = %#v, want the JSON string \"registry\"", v.Claims.Aud)
			}
			if v.Claims.Iat != now.Unix() || v.Claims.Nbf != now.Unix()-1 || v.Claims.Exp != now.Add(5*time.Minute).Unix() {
				t.Errorf("iat, nbf, exp = %d, %d, %d (now %d)", v.Claims.Iat, v.Claims.Nbf, v.Claims.Exp, now.Unix())
			}
			if len(v.Claims.Jti) != 32 {
				t.Errorf("jti %q is not 128 bits in hex", v.Claims.Jti)
			}
			want := []access.Grant{
				{Type: "repository", Name: "linux/app", Actions: []string{"pull", "push"}},
				{Type: "repository", Name: "linux/db", Actions: []string{"pull"}},
			}
			if !reflect.DeepEqual(v.Claims.Access, want) {
				t.Errorf("access = %+v, want %+v", v.Claims.Access, want)
			}
			var raw []map[string]json.RawMessage
			if err := json.Unmarshal(v.RawClaims["access"], &raw); err != nil {
				t.Fatal(err)
			}
			for _, e := range raw {
				for _, k := range []string{"type", "name", "actions"} {
					if _, ok := e[k]; !ok {
						t.Errorf("access entry lacks lowercase key %q: %s", k, v.RawClaims["access"])
					}
				}
			}
			if tok.ExpiresIn != 5*time.Minute || !tok.IssuedAt.Equal(now) {
				t.Errorf("expires_in %s, issued_at %s", tok.ExpiresIn, tok.IssuedAt)
			}
		})
	}
}

func TestMint_loginWithoutScopeGrantsEmptyArray(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:bob/*:*")
	tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := f.b.Keys(f.ctx, f.s)
	v := verifyToken(t, tok.JWT, ring.Bundle(), f.clock.Now())
	if string(v.RawClaims["access"]) != "[]" {
		t.Errorf("access = %s, want []", v.RawClaims["access"])
	}
}

func TestMint_unknownUserAndWrongPasswordLookAlike(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	_, wrong := f.mint(TokenRequest{Username: "bob", Password: "nope"})
	_, unknown := f.mint(TokenRequest{Username: "nobody", Password: "nope"})
	_, badName := f.mint(TokenRequest{Username: "../sys", Password: "nope"})
	if errKind(wrong) != KindUnauthorized || wrong.Error() != unknown.Error() || wrong.Error() != badName.Error() {
		t.Errorf("wrong password %v, unknown user %v, bad name %v: want the same 401", wrong, unknown, badName)
	}
	// Each refusal cost one real bcrypt comparison.
	if got := f.b.BcryptRuns(); got != 3 {
		t.Errorf("bcrypt runs = %d, want 3", got)
	}
}

func TestMint_anonymous(t *testing.T) {
	f := newFixture(t)
	if _, err := f.mint(TokenRequest{Scopes: []string{"repository:public/x:pull"}}); errKind(err) != KindUnauthorized {
		t.Fatalf("anonymous without anonymous_access: %v, want 401", err)
	}
	cfg := f.config()
	cfg.AnonymousAccess = "repository:public/*:pull"
	f.saveConfig(cfg)
	tok, err := f.mint(TokenRequest{Scopes: []string{"repository:public/x:pull,push", "repository:private/x:pull"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []access.Grant{{Type: "repository", Name: "public/x", Actions: []string{"pull"}}}
	if !reflect.DeepEqual(tok.Access, want) || tok.Subject != "" {
		t.Errorf("anonymous grant %+v sub %q, want %+v", tok.Access, tok.Subject, want)
	}

	// Anonymous access is added to every user's grants.
	f.addUser("carol", "pw", "repository:carol/*:*")
	tok, err = f.mint(TokenRequest{Username: "carol", Password: "pw", Scopes: []string{"repository:public/x:pull", "repository:carol/y:push"}})
	if err != nil {
		t.Fatal(err)
	}
	want = []access.Grant{
		{Type: "repository", Name: "public/x", Actions: []string{"pull"}},
		{Type: "repository", Name: "carol/y", Actions: []string{"push"}},
	}
	if !reflect.DeepEqual(tok.Access, want) {
		t.Errorf("user grant %+v, want %+v", tok.Access, want)
	}
}

func TestMint_accountMustMatchUser(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "pw", Account: "alice"}); errKind(err) != KindBadRequest {
		t.Errorf("account mismatch: %v, want 400", err)
	}
}

func TestMint_malformedScopeIsBadRequestNamingIt(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	_, err := f.mint(TokenRequest{Username: "bob", Password: "pw", Scopes: []string{"repository:onlytwo"}})
	if errKind(err) != KindInvalidScope || !strings.Contains(err.Error(), "onlytwo") {
		t.Errorf("malformed scope: %v, want an invalid scope naming it", err)
	}
	if f.b.BcryptRuns() != 0 {
		t.Error("a malformed request cost a password check")
	}
}

func TestMint_ttlIsClampedToMaxTTL(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw", TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != time.Hour {
		t.Errorf("expires_in = %s, want max_ttl 1h", tok.ExpiresIn)
	}
	tok, _ = f.mint(TokenRequest{Username: "bob", Password: "pw", TTL: 90 * time.Second})
	if tok.ExpiresIn != 90*time.Second {
		t.Errorf("expires_in = %s, want 90s", tok.ExpiresIn)
	}
}

func TestMint_clientIDIsChecked(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "pw", ClientID: "bad\x00id"}); errKind(err) != KindBadRequest {
		t.Errorf("control character in client_id: %v, want 400", err)
	}
}

func TestMint_omitX5CLeavesOnlyKid(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.OmitX5C = true
	f.saveConfig(cfg)
	f.addUser("bob", "pw", "")
	tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	var header map[string]any
	decodeSegment(t, strings.Split(tok.JWT, ".")[0], &header)
	ring, _ := f.b.Keys(f.ctx, f.s)
	if _, ok := header["x5c"]; ok || header["kid"] != ring.Current().ID {
		t.Errorf("header %v: want kid %s and no x5c", header, ring.Current().ID)
	}
	if !strings.Contains(string(ring.JWKS()), ring.Current().ID) {
		t.Error("the jwks lacks the kid tokens carry")
	}
}
