package backend

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

func states(r *KeyRing) map[string]int {
	m := map[string]int{}
	for _, k := range r.Keys() {
		m[k.State]++
	}
	return m
}

func TestKeys_firstNeedMakesCAWithCurrentAndNext(t *testing.T) {
	f := newFixture(t)
	r, err := f.b.Keys(f.ctx, f.s)
	if err != nil {
		t.Fatal(err)
	}
	if got := states(r); got[StateCurrent] != 1 || got[StateNext] != 1 || got[StateRetired] != 0 {
		t.Fatalf("states %v", got)
	}
	if len(r.CAs()) != 1 || r.CAs()[0].KeyType != KeyTypeEC || r.CAs()[0].Imported {
		t.Fatalf("CAs %+v", r.CAs())
	}
	// A second backend on the same storage (another node) reads the same ring.
	other := New(Options{Now: f.clock.Now})
	r2, err := other.Keys(f.ctx, f.s)
	if err != nil || r2.Current().ID != r.Current().ID {
		t.Fatalf("another node sees current %v, %v", r2.Current().ID, err)
	}
}

func TestKeys_rotateTransitionsAndExpiry(t *testing.T) {
	f := newFixture(t)
	r0, _ := f.b.Keys(f.ctx, f.s)
	first, next := r0.Current().ID, ""
	for _, k := range r0.Keys() {
		if k.State == StateNext {
			next = k.ID
		}
	}
	r1, err := f.b.RotateKeys(f.ctx, f.s)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Current().ID != next {
		t.Fatalf("rotate promoted %s, want the next key %s", r1.Current().ID, next)
	}
	byID := map[string]*SigningKey{}
	for _, k := range r1.Keys() {
		byID[k.ID] = k
	}
	old := byID[first]
	if old == nil || old.State != StateRetired {
		t.Fatalf("old current is %+v, want retired", old)
	}
	wantRetires := f.clock.Now().Add(time.Hour + Leeway) // max_ttl + leeway
	if !old.Retires.Equal(wantRetires) {
		t.Errorf("retired key goes at %s, want %s", old.Retires, wantRetires)
	}
	if got := states(r1); got[StateNext] != 1 || got[StateCurrent] != 1 || got[StateRetired] != 1 {
		t.Fatalf("states after rotate %v", got)
	}
	// The JWKS publishes next, current and retired keys.
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(r1.JWKS(), &set); err != nil || len(set.Keys) != 3 {
		t.Fatalf("jwks %s: %v", r1.JWKS(), err)
	}

	// Just before its time the retired key is still there; after, gone.
	f.clock.Advance(time.Hour + Leeway - time.Second)
	if err := f.b.MaintainKeys(f.ctx, f.s); err != nil {
		t.Fatal(err)
	}
	r2, _ := f.b.Keys(f.ctx, f.s)
	if states(r2)[StateRetired] != 1 {
		t.Fatal("retired key dropped before its last token expired")
	}
	f.clock.Advance(time.Second)
	if err := f.b.MaintainKeys(f.ctx, f.s); err != nil {
		t.Fatal(err)
	}
	r3, _ := f.b.Keys(f.ctx, f.s)
	if states(r3)[StateRetired] != 0 {
		t.Fatal("retired key still published after max_ttl + leeway")
	}
	var set3 struct{ Keys []any }
	json.Unmarshal(r3.JWKS(), &set3)
	if len(set3.Keys) != 2 {
		t.Fatalf("jwks has %d keys after pruning, want 2", len(set3.Keys))
	}
}

func TestKeys_tokenFromRetiredKeyStillVerifies(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:x:pull")
	before, err := f.mint(TokenRequest{Username: "bob", Password: "pw", Scopes: []string{"repository:x:pull"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.b.RotateKeys(f.ctx, f.s)
	if err != nil {
		t.Fatal(err)
	}
	verifyToken(t, before.JWT, r.Bundle(), f.clock.Now().Add(4*time.Minute))
	after, _ := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	v := verifyToken(t, after.JWT, r.Bundle(), f.clock.Now())
	if v.Header["kid"] != r.Current().ID {
		t.Errorf("new token kid %v, want the new current %s", v.Header["kid"], r.Current().ID)
	}
}

func TestKeys_rotationPeriodRotatesInMaintenance(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.RotationPeriod = time.Hour
	f.saveConfig(cfg)
	r0, _ := f.b.Keys(f.ctx, f.s)
	f.clock.Advance(59 * time.Minute)
	f.b.MaintainKeys(f.ctx, f.s)
	if r, _ := f.b.Keys(f.ctx, f.s); r.Current().ID != r0.Current().ID {
		t.Fatal("rotated before rotation_period")
	}
	f.clock.Advance(time.Minute)
	f.b.MaintainKeys(f.ctx, f.s)
	r1, _ := f.b.Keys(f.ctx, f.s)
	if r1.Current().ID == r0.Current().ID {
		t.Fatal("not rotated after rotation_period")
	}
	// The new current key's certificate covers its use plus the longest token.
	if min := f.clock.Now().Add(cfg.RotationPeriod + cfg.MaxTTL + Leeway); r1.Current().NotAfter.Before(min) {
		t.Errorf("signing certificate ends %s, before %s", r1.Current().NotAfter, min)
	}
}

func TestKeys_generateCAKeepsOldCAInBundleUntilItsTokensExpire(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	old, _ := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	r, err := f.b.GenerateCA(f.ctx, f.s, KeyTypeRSA, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.CAs()) != 2 || r.CAs()[0].KeyType != KeyTypeRSA || strings.Count(string(r.Bundle()), "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("after ca/generate: %d CAs, bundle %d certs", len(r.CAs()), strings.Count(string(r.Bundle()), "BEGIN CERTIFICATE"))
	}
	verifyToken(t, old.JWT, r.Bundle(), f.clock.Now())
	tok, _ := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	verifyToken(t, tok.JWT, r.Bundle(), f.clock.Now())

	f.clock.Advance(time.Hour + Leeway)
	f.b.MaintainKeys(f.ctx, f.s)
	r2, _ := f.b.Keys(f.ctx, f.s)
	if len(r2.CAs()) != 1 || strings.Count(string(r2.Bundle()), "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("old CA still in the bundle after its tokens expired")
	}
}

// selfSigned is a certificate of key's, valid 2020 to 2036.
func selfSigned(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	return testcert.New(t, testcert.Options{Key: key, Subject: pkix.Name{CommonName: "godoauth"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC)}).Cert
}

func TestKeys_importGodoauthKeyPair(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaCert := selfSigned(t, rsaKey)
	ecCert := selfSigned(t, ecKey)
	pkcs8 := func(k any) string {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return pemBlock("PRIVATE KEY", der)
	}
	sec1, _ := x509.MarshalECPrivateKey(ecKey)

	for _, tc := range []struct {
		name, cert, key string
	}{
		{"rsa pkcs1", pemBlock("CERTIFICATE", rsaCert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))},
		{"rsa pkcs8", pemBlock("CERTIFICATE", rsaCert.Raw), pkcs8(rsaKey)},
		{"ec sec1", pemBlock("CERTIFICATE", ecCert.Raw), pemBlock("EC PRIVATE KEY", sec1)},
		{"ec pkcs8", pemBlock("CERTIFICATE", ecCert.Raw), pkcs8(ecKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.addUser("bob", "pw", "")
			r, err := f.b.ImportCA(f.ctx, f.s, tc.cert, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if !r.CAs()[0].Imported || !strings.HasPrefix(string(r.Bundle()), tc.cert) {
				t.Fatalf("bundle does not start with the imported certificate")
			}
			tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw"})
			if err != nil {
				t.Fatal(err)
			}
			// Verify against the imported certificate alone, as a godoauth
			// registry's rootcertbundle holds it.
			v := verifyToken(t, tok.JWT, []byte(tc.cert), f.clock.Now())
			if x5c := v.Header["x5c"].([]any); len(x5c) != 1 {
				t.Errorf("x5c has %d certificates, want the imported one", len(x5c))
			}
			if _, err := f.b.RotateKeys(f.ctx, f.s); errKind(err) != KindBadRequest {
				t.Errorf("rotating an imported key: %v, want 400", err)
			}
		})
	}
}

func TestKeys_importRefusesBadInput(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := pemBlock("CERTIFICATE", selfSigned(t, rsaKey).Raw)
	smallKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallCert := pemBlock("CERTIFICATE", selfSigned(t, smallKey).Raw)
	sec1, _ := x509.MarshalECPrivateKey(otherKey)
	for _, tc := range []struct{ name, cert, key, want string }{
		{"garbage certificate", "hello", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), "certificate"},
		{"garbage key", cert, "hello", "private_key"},
		{"key of another certificate", cert, pemBlock("EC PRIVATE KEY", sec1), "does not belong"},
		{"encrypted key", cert, pemBlock("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), "encrypted"},
		{"small rsa", smallCert, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(smallKey)), "too small"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			before, _ := f.b.Keys(f.ctx, f.s)
			_, err := f.b.ImportCA(f.ctx, f.s, tc.cert, tc.key)
			if errKind(err) != KindBadRequest || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a 400 mentioning %q", err, tc.want)
			}
			after, _ := f.b.Keys(f.ctx, f.s)
			if after.Current().ID != before.Current().ID {
				t.Fatal("a refused import changed the keys")
			}
		})
	}
}

func TestKeys_concurrentMintingDuringRotation(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:x:pull")
	f.mint(TokenRequest{Username: "bob", Password: "pw"}) // warm the cache
	var wg sync.WaitGroup
	tokens := make(chan string, 400)
	errs := make(chan error, 400)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw", Scopes: []string{"repository:x:pull"}})
				if err != nil {
					errs <- err
					continue
				}
				tokens <- tok.JWT
			}
		}()
	}
	for i := 0; i < 10; i++ {
		if _, err := f.b.RotateKeys(f.ctx, f.s); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(tokens)
	close(errs)
	for err := range errs {
		t.Fatalf("minting failed during rotation: %v", err)
	}
	r, _ := f.b.Keys(f.ctx, f.s)
	n := 0
	for tok := range tokens {
		verifyToken(t, tok, r.Bundle(), f.clock.Now())
		n++
	}
	if n != 400 {
		t.Fatalf("%d tokens, want 400", n)
	}
}

func TestKeyID_isLibtrustFormat(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := KeyID(&k.PublicKey)
	groups := strings.Split(id, ":")
	if len(groups) != 12 {
		t.Fatalf("kid %q has %d groups, want 12", id, len(groups))
	}
	for _, g := range groups {
		if len(g) != 4 || strings.Trim(g, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("kid %q: group %q is not 4 base32 characters", id, g)
		}
	}
}

func TestKeys_stagedCAIsPublishedFirstAndActivatedByRotate(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "")
	r0, _ := f.b.Keys(f.ctx, f.s)
	oldBundle := r0.Bundle()

	r1, err := f.b.GenerateCA(f.ctx, f.s, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Current().ID != r0.Current().ID || strings.Count(string(r1.Bundle()), "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("staging changed the signer or did not publish the CA")
	}
	// Tokens still verify against the old bundle: registries not yet
	// restarted keep working.
	tok, _ := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	verifyToken(t, tok.JWT, oldBundle, f.clock.Now())
	// Maintenance (automatic rotation) never activates a staged CA.
	f.clock.Advance(2 * time.Hour)
	if err := f.b.MaintainKeys(f.ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.b.Keys(f.ctx, f.s); strings.Count(string(r.Bundle()), "BEGIN CERTIFICATE") != 2 || r.CAs()[0].Staged {
		t.Fatal("maintenance dropped or activated the staged CA")
	}
	newBundle := r1.Bundle()

	r2, err := f.b.RotateKeys(f.ctx, f.s)
	if err != nil {
		t.Fatal(err)
	}
	if r2.CAs()[0].Fingerprint == r0.CAs()[0].Fingerprint || r2.CAs()[0].Staged {
		t.Fatal("keys/rotate did not activate the staged CA")
	}
	after, _ := f.mint(TokenRequest{Username: "bob", Password: "pw"})
	// A registry that loaded the bundle with the staged CA verifies the new
	// tokens and the old ones.
	verifyToken(t, after.JWT, newBundle, f.clock.Now())
	verifyToken(t, tok.JWT, newBundle, f.clock.Now())
}

func TestKeys_importedAnchorMovesToStagedCA(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	cert := pemBlock("CERTIFICATE", selfSigned(t, rsaKey).Raw)
	f := newFixture(t)
	if _, err := f.b.ImportCA(f.ctx, f.s, cert, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.RotateKeys(f.ctx, f.s); errKind(err) != KindBadRequest {
		t.Fatalf("rotating an imported anchor without a staged CA: %v", err)
	}
	if _, err := f.b.GenerateCA(f.ctx, f.s, KeyTypeEC, true); err != nil {
		t.Fatal(err)
	}
	r, err := f.b.RotateKeys(f.ctx, f.s)
	if err != nil || r.CAs()[0].Imported || r.CAs()[0].KeyType != KeyTypeEC {
		t.Fatalf("after activating the staged CA: %v imported=%v", err, r != nil && r.CAs()[0].Imported)
	}
	if !strings.Contains(string(r.Bundle()), cert) {
		t.Error("the imported certificate left the bundle before its tokens expired")
	}
}
