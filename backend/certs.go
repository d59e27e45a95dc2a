package backend

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// X.509, PEM and key ids: the certificates and key material the key ring
// is made of, without its states.

func newCA(keyType string, now time.Time) (storedCA, error) {
	key, err := generateKey(keyType)
	if err != nil {
		return storedCA{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "vault-plugin-registry token CA", Organization: []string{"vault-plugin-registry"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return storedCA{}, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return storedCA{}, err
	}
	return storedCA{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		PrivateKey:  keyPEM,
	}, nil
}

// issueSigningCert issues the certificate of a signing key under the CA.
func issueSigningCert(caCert *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, id string, now, notAfter time.Time) (string, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: "token signing key " + id[:14], Organization: []string{"vault-plugin-registry"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		return "", fmt.Errorf("issue signing certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

func generateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case KeyTypeEC:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyTypeRSA:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyTypeEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, errorf(KindBadRequest, "key_type %s: must be ec, rsa or ed25519", quote(keyType))
}

func signingMethod(key crypto.Signer) (jwt.SigningMethod, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jwt.SigningMethodES256, nil
		case elliptic.P384():
			return jwt.SigningMethodES384, nil
		case elliptic.P521():
			return jwt.SigningMethodES512, nil
		}
		return nil, errorf(KindBadRequest, "EC curve %s is not supported (P-256, P-384, P-521)", k.Curve.Params().Name)
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, errorf(KindBadRequest, "RSA key of %d bits is too small (at least 2048)", k.N.BitLen())
		}
		return jwt.SigningMethodRS256, nil
	case ed25519.PrivateKey:
		return jwt.SigningMethodEdDSA, nil
	}
	return nil, errorf(KindBadRequest, "unsupported private key type %T", key)
}

func keyTypeOf(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return KeyTypeEC
	case *rsa.PublicKey:
		return KeyTypeRSA
	case ed25519.PublicKey:
		return KeyTypeEd25519
	}
	return "unknown"
}

func parseCertificatePEM(s string) (*x509.Certificate, error) {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errorf(KindBadRequest, "certificate: no PEM CERTIFICATE block found")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, errorf(KindBadRequest, "certificate: %s", err)
		}
		return cert, nil
	}
}

// parsePrivateKeyPEM reads PKCS#1 (RSA), SEC1 (EC) and PKCS#8 keys.
func parsePrivateKeyPEM(s string) (crypto.Signer, error) {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errorf(KindBadRequest, "private_key: no PEM private key block found (PKCS#1, PKCS#8 or SEC1)")
		}
		var key any
		var err error
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errorf(KindBadRequest, "private_key is encrypted; decrypt it first (openssl pkey -in key.pem)")
		default:
			continue
		}
		if err != nil {
			return nil, errorf(KindBadRequest, "private_key (%s): %s", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, errorf(KindBadRequest, "private_key: unsupported key type %T", key)
		}
		return signer, nil
	}
}

func marshalKey(key crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("backend: no randomness: " + err.Error())
	}
	return n
}

// KeyID is the libtrust key id of a public key, which registries use as
// the token's kid: the SHA-256 of the PKIX DER, truncated to 240 bits,
// base32 without padding, in groups of four joined by colons.
func KeyID(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

func colonHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, len(b)*3)
	for i, c := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[c>>4], digits[c&0xf])
	}
	return string(out)
}
