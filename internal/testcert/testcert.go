// Package testcert makes the X.509 certificates and keys tests need: a CA
// made for one test (self-signed, so also the lone certificate a test
// imports or signs with) and the server certificates it issues. It uses
// the standard library only.
package testcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Options shape a CA; the zero value is a new P-256 key, valid from an
// hour ago for a day, with an empty subject.
type Options struct {
	Key                 crypto.Signer // the CA's key; nil: a new P-256 key
	Subject             pkix.Name
	NotBefore, NotAfter time.Time // zero: an hour ago, a day from now
}

// CA is a self-signed certificate authority and its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte         // the certificate, PEM
	Pool *x509.CertPool // trusting the CA alone
}

// New makes a CA as o says.
func New(t testing.TB, o Options) *CA {
	t.Helper()
	key := o.Key
	if key == nil {
		key = NewKey(t)
	}
	notBefore, notAfter := o.NotBefore, o.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          Serial(t),
		Subject:               o.Subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: x509.NewCertPool()}
	ca.Pool.AddCert(cert)
	return ca
}

// NewKey is a new P-256 key.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// Serial is a random serial number.
func Serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// KeyPEM is the CA's key in PEM: PKCS #8 ("PRIVATE KEY"), or with legacy
// the key's own form ("EC PRIVATE KEY", SEC 1, as libtrust and godoauth's
// users have it; "RSA PRIVATE KEY", PKCS #1).
func (ca *CA) KeyPEM(t testing.TB, legacy bool) []byte {
	t.Helper()
	return keyPEM(t, ca.Key, legacy)
}

func keyPEM(t testing.TB, key crypto.Signer, legacy bool) []byte {
	t.Helper()
	block := &pem.Block{Type: "PRIVATE KEY"}
	var err error
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if legacy {
			block.Type = "EC PRIVATE KEY"
			block.Bytes, err = x509.MarshalECPrivateKey(k)
			break
		}
		block.Bytes, err = x509.MarshalPKCS8PrivateKey(k)
	case *rsa.PrivateKey:
		if legacy {
			block.Type, block.Bytes = "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)
			break
		}
		block.Bytes, err = x509.MarshalPKCS8PrivateKey(k)
	default:
		block.Bytes, err = x509.MarshalPKCS8PrivateKey(k)
	}
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block)
}

// WriteFiles writes the CA's certificate (mode 0644) and key (0600, as
// KeyPEM with legacy) to certFile and keyFile.
func (ca *CA) WriteFiles(t testing.TB, certFile, keyFile string, legacy bool) {
	t.Helper()
	writeAtomic(t, certFile, ca.PEM, 0o644)
	writeAtomic(t, keyFile, ca.KeyPEM(t, legacy), 0o600)
}

// Issue writes a server certificate for 127.0.0.1 and localhost signed by
// the CA, and its key (PKCS #8), into dir as name.pem and name.key; it
// returns their paths and the certificate's serial number. The files are
// written aside and renamed into place, as a certificate manager does, so
// that a reload never reads half a file.
func (ca *CA) Issue(t testing.TB, dir, name string) (certFile, keyFile string, serial *big.Int) {
	t.Helper()
	key := NewKey(t)
	serial = Serial(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	writeAtomic(t, keyFile, keyPEM(t, key, false), 0o600)
	return certFile, keyFile, serial
}

func writeAtomic(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// PublicKeyPEM is key's public half as PKIX PEM ("PUBLIC KEY"), as
// Vault's jwt_validation_pubkeys takes it.
func PublicKeyPEM(t testing.TB, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}
