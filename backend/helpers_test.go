package backend

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// fakeClock is a settable clock for expiry arithmetic.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	b     *Backend
	s     logical.Storage
	clock *fakeClock
	ctx   context.Context
}

// newFixture returns a backend over in-memory storage with a fake clock
// and the cheapest bcrypt cost, so tests run fast.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	clock := newFakeClock()
	f := &fixture{t: t, b: New(Options{Now: clock.Now}), s: &logical.InmemStorage{}, clock: clock, ctx: context.Background()}
	cfg := DefaultConfig()
	cfg.BcryptCost = 4
	f.saveConfig(cfg)
	// As Vault does when the mount is enabled.
	if err := f.b.InitializeKeys(f.ctx, f.s); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) config() *Config {
	f.t.Helper()
	c, err := f.b.Config(f.ctx, f.s)
	if err != nil {
		f.t.Fatal(err)
	}
	cp := *c
	return &cp
}

func (f *fixture) saveConfig(c *Config) {
	f.t.Helper()
	if err := f.b.SaveConfig(f.ctx, f.s, c); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) addUser(name, password, access string) {
	f.t.Helper()
	if _, err := f.b.WriteUser(f.ctx, f.s, name, UserUpdate{Password: &password, Access: &access}); err != nil {
		f.t.Fatalf("add user %s: %v", name, err)
	}
}

func (f *fixture) mint(req TokenRequest) (*Token, error) {
	if req.Service == "" {
		req.Service = "registry"
	}
	return f.b.TokenForLogin(f.ctx, f.s, req)
}

// login mints a token for user and checks the outcome: want is the error's
// kind, 0 for success.
func (f *fixture) login(user, password string, want Kind) {
	f.t.Helper()
	_, err := f.mint(TokenRequest{Username: user, Password: password})
	if errKind(err) != want || (want == 0 && err != nil) {
		f.t.Fatalf("login %s with %q: %v, want kind %d", user, password, err, want)
	}
}

func errKind(err error) Kind {
	if e, ok := AsError(err); ok {
		return e.Kind
	}
	return 0
}

// verifiedToken is a token checked by verifyToken.
type verifiedToken struct {
	Header map[string]any
	Claims struct {
		Iss    string         `json:"iss"`
		Sub    string         `json:"sub"`
		Aud    any            `json:"aud"`
		Exp    int64          `json:"exp"`
		Nbf    int64          `json:"nbf"`
		Iat    int64          `json:"iat"`
		Jti    string         `json:"jti"`
		Access []access.Grant `json:"access"`
	}
	RawClaims map[string]json.RawMessage
	Leaf      *x509.Certificate
}

// verifyToken checks a JWT the way a registry does, without golang-jwt:
// decode, verify the x5c chain against the PEM bundle with crypto/x509,
// verify the signature with the leaf's key.
func verifyToken(t *testing.T, token string, bundle []byte, at time.Time) *verifiedToken {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var v verifiedToken
	decodeSegment(t, parts[0], &v.Header)
	decodeSegment(t, parts[1], &v.Claims)
	decodeSegment(t, parts[1], &v.RawClaims)

	x5c, ok := v.Header["x5c"].([]any)
	if !ok || len(x5c) == 0 {
		t.Fatalf("header has no x5c: %v", v.Header)
	}
	var chain []*x509.Certificate
	for _, c := range x5c {
		der, err := base64.StdEncoding.DecodeString(c.(string))
		if err != nil {
			t.Fatalf("x5c is not standard base64: %v", err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle holds no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	v.Leaf = chain[0]
	if _, err := v.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("x5c chain does not verify against the bundle: %v", err)
	}
	if kid := v.Header["kid"]; kid != KeyID(v.Leaf.PublicKey) {
		t.Fatalf("kid %v is not the libtrust id of the x5c key %s", kid, KeyID(v.Leaf.PublicKey))
	}
	if v.Header["typ"] != "JWT" {
		t.Fatalf("typ = %v", v.Header["typ"])
	}

	signed := []byte(parts[0] + "." + parts[1])
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(signed)
	switch pub := v.Leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if v.Header["alg"] != "ES256" || len(sig) != 64 {
			t.Fatalf("alg %v with a %d-byte signature", v.Header["alg"], len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(pub, sum[:], r, s) {
			t.Fatal("ES256 signature does not verify")
		}
	case *rsa.PublicKey:
		if v.Header["alg"] != "RS256" {
			t.Fatalf("alg %v for an RSA key", v.Header["alg"])
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
			t.Fatalf("RS256 signature does not verify: %v", err)
		}
	case ed25519.PublicKey:
		if v.Header["alg"] != "EdDSA" || !ed25519.Verify(pub, signed, sig) {
			t.Fatal("EdDSA signature does not verify")
		}
	default:
		t.Fatalf("unexpected key type %T", pub)
	}
	return &v
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("segment is not base64url: %v", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("segment is not JSON: %v", err)
	}
}

func pemBlock(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}
