package migrate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxPEMBytes bounds a key or certificate file: godoauth's are a few KiB.
const maxPEMBytes = 1 << 20

// keyPair is godoauth's token.certificate and token.key, checked to belong
// together.
type keyPair struct {
	certPath, keyPath string
	certPEM, keyPEM   string
	leaf              *x509.Certificate
}

// keyFiles names the key pair and where the names came from, for errors.
type keyFiles struct {
	certificate, key        string
	certSetting, keySetting string // "token.certificate" or "-certificate", …
}

// loadKeyPair reads and checks the pair; nil when neither file is named.
// Relative paths are read from the working directory, as godoauth and the
// relay read theirs.
func loadKeyPair(f keyFiles) (*keyPair, error) {
	switch {
	case f.certificate == "" && f.key == "":
		return nil, nil
	case f.certificate == "":
		return nil, fmt.Errorf("%s is set but %s is not; name both, or use -keys=false", f.keySetting, f.certSetting)
	case f.key == "":
		return nil, fmt.Errorf("%s is set but %s is not; name both, or use -keys=false", f.certSetting, f.keySetting)
	}
	certPEM, err := readPEMFile(f.certSetting, f.certificate)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEMFile(f.keySetting, f.key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s %s and %s %s: %v", f.certSetting, quote(f.certificate), f.keySetting, quote(f.key), err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s %s: %v", f.certSetting, quote(f.certificate), err)
		}
	}
	if time.Now().After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s %s expired on %s; the plugin refuses it (use -keys=false to migrate the users only)",
			f.certSetting, quote(f.certificate), leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return &keyPair{certPath: f.certificate, keyPath: f.key, certPEM: string(certPEM), keyPEM: string(keyPEM), leaf: leaf}, nil
}

func readPEMFile(setting, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !filepath.IsAbs(path) {
			return nil, fmt.Errorf("%s: %v (relative paths are read from the working directory, as godoauth did; -certificate and -key name the files directly)", setting, err)
		}
		return nil, fmt.Errorf("%s: %v", setting, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", setting, err)
	}
	if len(b) > maxPEMBytes {
		return nil, fmt.Errorf("%s %s: larger than %d bytes; is this the right file?", setting, quote(path), maxPEMBytes)
	}
	return b, nil
}

// describe says what the certificate is, for the report.
func (p *keyPair) describe() string {
	return fmt.Sprintf("%s, SHA-256 fingerprint %s, expires %s",
		keyType(p.leaf), fingerprint(p.leaf.Raw), p.leaf.NotAfter.UTC().Format(time.DateOnly))
}

// sameCertificate reports whether the PEM (the certificate field of
// <to>/ca) starts with this pair's certificate.
func (p *keyPair) sameCertificate(certPEM string) bool {
	block, _ := pem.Decode([]byte(certPEM))
	return block != nil && block.Type == "CERTIFICATE" && bytes.Equal(block.Bytes, p.leaf.Raw)
}

func keyType(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return "unknown key type"
}

// fingerprint is the SHA-256 of a DER certificate, as the plugin's ca read
// shows it: hex pairs joined by colons.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := hex.EncodeToString(sum[:])
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}
