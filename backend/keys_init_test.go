package backend

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestKeys_readOfAFreshMountWritesNothing(t *testing.T) {
	b := New(Options{})
	s := &logical.InmemStorage{}
	if _, err := b.Keys(t.Context(), s); !errors.Is(err, ErrNoTrustAnchor) {
		t.Fatalf("Keys on a mount never initialized: %v, want ErrNoTrustAnchor", err)
	}
	if keys, _ := s.List(t.Context(), KeyPrefix); len(keys) != 0 {
		t.Fatalf("a read wrote %v", keys)
	}
	if err := b.InitializeKeys(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	r1, err := b.Keys(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	// Initialize again (an unseal, a reload, another node): the same CA.
	other := New(Options{})
	if err := other.InitializeKeys(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	r2, _ := other.Keys(t.Context(), s)
	if r1.CAs()[0].Fingerprint != r2.CAs()[0].Fingerprint || len(r2.CAs()) != 1 {
		t.Fatal("a second Initialize made another CA")
	}
}

func godoauthPair(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := selfSigned(t, key)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	return pemBlock("CERTIFICATE", cert.Raw), pemBlock("PRIVATE KEY", der)
}

// TestKeys_importIntoAFreshMountReplacesTheUnusedCA: a migration into a new
// mount leaves only godoauth's certificate in ca/pem; into a mount that
// signed tokens, the old CA stays until they expire.
func TestKeys_importIntoAFreshMountReplacesTheUnusedCA(t *testing.T) {
	f := newFixture(t)
	cert, key := godoauthPair(t)
	r, err := f.b.ImportCA(f.ctx, f.s, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(r.Bundle()), "BEGIN CERTIFICATE"); n != 1 || len(r.Keys()) != 1 || !r.CAs()[0].Imported {
		t.Fatalf("after import into a fresh mount: %d certificates, %d keys", n, len(r.Keys()))
	}

	used := newFixture(t)
	used.addUser("bob", "pw", "")
	if _, err := used.mint(TokenRequest{Username: "bob", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	r, err = used.b.ImportCA(used.ctx, used.s, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(r.Bundle()), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("after import into a mount that signed a token: %d certificates, want the old CA kept", n)
	}
}

// TestKeys_keyTypeRemakesOnlyAnUnusedCA: the first config after enabling
// decides the CA's type; once a token is signed, key_type no longer
// touches the CA the registries trust.
func TestKeys_keyTypeRemakesOnlyAnUnusedCA(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.KeyType = KeyTypeRSA
	f.saveConfig(cfg)
	r, _ := f.b.Keys(f.ctx, f.s)
	if r.CAs()[0].KeyType != KeyTypeRSA || len(r.CAs()) != 1 {
		t.Fatalf("unused CA after key_type=rsa: %s, %d CAs", r.CAs()[0].KeyType, len(r.CAs()))
	}
	f.addUser("bob", "pw", "")
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	before, _ := f.b.Keys(f.ctx, f.s)
	cfg.KeyType = KeyTypeEC
	f.saveConfig(cfg)
	after, _ := f.b.Keys(f.ctx, f.s)
	if after.CAs()[0].Fingerprint != before.CAs()[0].Fingerprint {
		t.Fatal("key_type replaced a CA that had signed a token")
	}
}
