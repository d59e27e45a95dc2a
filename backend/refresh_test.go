package backend

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func (f *fixture) offlineLogin(user, password, clientID string) string {
	f.t.Helper()
	tok, err := f.mint(TokenRequest{Username: user, Password: password, ClientID: clientID, Offline: true})
	if err != nil {
		f.t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		f.t.Fatal("offline login returned no refresh token")
	}
	return tok.RefreshToken
}

func (f *fixture) refresh(rt, clientID string, scopes ...string) (*Token, error) {
	return f.b.TokenForRefreshToken(f.ctx, f.s, RefreshRequest{Service: "registry", RefreshToken: rt, ClientID: clientID, Scopes: scopes})
}

func TestRefresh_issueAndUse(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:bob/*:*")
	rt := f.offlineLogin("bob", "pw", "docker")
	if !strings.HasPrefix(rt, tokenPrefixes[SubjectUser]) || len(rt) < 43 {
		t.Errorf("refresh token %d chars: want at least 256 bits", len(rt))
	}
	tok, err := f.refresh(rt, "docker", "repository:bob/app:pull")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Subject != "bob" || len(tok.Access) != 1 || tok.RefreshToken != rt {
		t.Errorf("refreshed token: sub %q access %+v", tok.Subject, tok.Access)
	}
	// Only the hash is stored.
	keys, _ := logical.CollectKeys(f.ctx, f.s)
	for _, k := range keys {
		e, _ := f.s.Get(f.ctx, k)
		if strings.Contains(k, rt) || (e != nil && strings.Contains(string(e.Value), rt)) {
			t.Fatalf("refresh token stored in clear under %s", k)
		}
	}
}

func TestRefresh_notIssuedWithoutOfflineOrUserOrWhenOff(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	if tok, _ := f.mint(TokenRequest{Username: "bob", Password: "pw"}); tok.RefreshToken != "" {
		t.Error("refresh token without offline_token")
	}
	cfg := f.config()
	cfg.AnonymousAccess = "repository:public/*:pull"
	f.saveConfig(cfg)
	if tok, _ := f.mint(TokenRequest{Offline: true}); tok.RefreshToken != "" {
		t.Error("refresh token for an anonymous request")
	}
	rt := f.offlineLogin("bob", "pw", "docker")
	cfg.RefreshTokenTTL = 0
	f.saveConfig(cfg)
	if tok, _ := f.mint(TokenRequest{Username: "bob", Password: "pw", Offline: true}); tok.RefreshToken != "" {
		t.Error("refresh token with refresh_token_ttl=0")
	}
	if _, err := f.refresh(rt, "docker"); errKind(err) != KindInvalidGrant {
		t.Errorf("refresh with the feature off: %v", err)
	}
}

func TestRefresh_refused(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(f *fixture, rt string) (string, string) // returns token and client id to use
	}{
		{"unknown token", func(f *fixture, rt string) (string, string) {
			last := "A"
			if strings.HasSuffix(rt, "A") {
				last = "B"
			}
			return rt[:len(rt)-1] + last, "docker"
		}},
		{"garbage", func(f *fixture, rt string) (string, string) { return "x", "docker" }},
		{"expired", func(f *fixture, rt string) (string, string) { f.clock.Advance(721 * time.Hour); return rt, "docker" }},
		{"password changed", func(f *fixture, rt string) (string, string) {
			f.addUser("bob", "new", "repository:bob/*:*")
			return rt, "docker"
		}},
		{"user deleted", func(f *fixture, rt string) (string, string) { f.b.DeleteUser(f.ctx, f.s, "bob"); return rt, "docker" }},
		{"revoked by operator", func(f *fixture, rt string) (string, string) {
			if n, err := f.b.RevokeRefreshTokens(f.ctx, f.s, UserSubject("bob")); n != 1 || err != nil {
				f.t.Fatalf("revoked %d, %v", n, err)
			}
			return rt, "docker"
		}},
		{"other mount", func(f *fixture, rt string) (string, string) {
			f.s = &logical.InmemStorage{}
			f.addUser("bob", "pw", "repository:bob/*:*")
			return rt, "docker"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.addUser("bob", "pw", "repository:bob/*:*")
			rt := f.offlineLogin("bob", "pw", "docker")
			use, client := tc.act(f, rt)
			if _, err := f.refresh(use, client); errKind(err) != KindInvalidGrant {
				t.Fatalf("got %v, want invalid refresh token", err)
			}
		})
	}
}

// A refresh token works from any client_id (docs/INTEGRATING.md, "Refresh tokens"): docker login's
// identity token is read by BuildKit, containerd, crane... each sending its
// own. The issuing and the last client are recorded for the operator.
func TestRefresh_anyClientIDAndLastClientRecorded(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:bob/*:*")
	rt := f.offlineLogin("bob", "pw", "docker")
	list, err := f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob"))
	if err != nil || len(list) != 1 || list[0].ClientID != "docker" || list[0].LastClientID != "" || !list[0].LastUsed.IsZero() {
		t.Fatalf("before any use: %+v, %v", list, err)
	}
	for _, client := range []string{"buildkit-client", "containerd-client", "go-containerregistry", ""} {
		tok, err := f.refresh(rt, client, "repository:bob/app:pull")
		if err != nil {
			t.Fatalf("refresh from client_id %q: %v", client, err)
		}
		if len(tok.Access) != 1 {
			t.Fatalf("refresh from client_id %q granted %+v", client, tok.Access)
		}
		list, err = f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob"))
		if err != nil || len(list) != 1 || list[0].ClientID != "docker" || list[0].LastClientID != client ||
			!list[0].LastUsed.Equal(f.clock.Now()) {
			t.Fatalf("after a refresh from %q: %+v, %v", client, list, err)
		}
		f.clock.Advance(time.Minute)
	}
	// The same client within the hour does not rewrite the record.
	before := list[0].LastUsed
	if _, err := f.refresh(rt, ""); err != nil {
		t.Fatal(err)
	}
	if list, _ = f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob")); !list[0].LastUsed.Equal(before) {
		t.Errorf("last_used rewritten within the hour: %v, was %v", list[0].LastUsed, before)
	}
	f.clock.Advance(lastUsedResolution)
	if _, err := f.refresh(rt, ""); err != nil {
		t.Fatal(err)
	}
	if list, _ = f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob")); !list[0].LastUsed.Equal(f.clock.Now()) {
		t.Errorf("last_used not updated after an hour: %v", list[0].LastUsed)
	}
}

func TestRefresh_samePasswordRewriteKeepsTokens(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	rt := f.offlineLogin("bob", "pw", "docker")
	f.addUser("bob", "pw", "repository:x:pull")
	if _, err := f.refresh(rt, "docker"); err != nil {
		t.Fatalf("rewriting the same password revoked the refresh token: %v", err)
	}
}

func TestRefresh_usesAccessAsItIsNow(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:a:pull")
	rt := f.offlineLogin("bob", "pw", "docker")
	access := "repository:b:pull"
	if _, err := f.b.WriteUser(f.ctx, f.s, "bob", UserUpdate{Access: &access}); err != nil {
		t.Fatal(err)
	}
	tok, err := f.refresh(rt, "docker", "repository:a:pull", "repository:b:pull")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.Access) != 1 || tok.Access[0].Name != "b" {
		t.Errorf("refreshed grant %+v, want only b", tok.Access)
	}
}

func TestRefresh_listAndPrune(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	f.offlineLogin("bob", "pw", "docker")
	f.clock.Advance(24 * time.Hour)
	f.offlineLogin("bob", "pw", "containerd")
	list, err := f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob"))
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v, %v", list, err)
	}
	f.clock.Advance(710 * time.Hour) // the first is past 720h, the second not
	n, err := f.b.PruneRefreshTokens(f.ctx, f.s)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	list, _ = f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob"))
	if len(list) != 1 || list[0].ClientID != "containerd" {
		t.Fatalf("after prune: %+v", list)
	}
	keys, _ := logical.CollectKeys(f.ctx, f.s)
	var stored int
	for _, k := range keys {
		if strings.HasPrefix(k, refreshPrefix) || strings.HasPrefix(k, refreshIndexPrefix) {
			stored++
		}
	}
	if stored != 2 {
		t.Errorf("%d refresh entries left in storage, want 2 (token and index)", stored)
	}
}
