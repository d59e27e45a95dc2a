package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMain lets the test binary check certificates in a process whose
// environment hides the system's CA certificates, as the FROM scratch
// image has none.
func TestMain(m *testing.M) {
	if path := os.Getenv("RELAY_TEST_VERIFY_ROOT"); path != "" {
		os.Exit(verifyRoot(path))
	}
	os.Exit(m.Run())
}

// verifyRoot verifies the certificate in path against the system roots.
func verifyRoot(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 3
	}
	block, _ := pem.Decode(b)
	if block == nil {
		os.Stderr.WriteString("no PEM block\n")
		return 3
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 3
	}
	if _, err := cert.Verify(x509.VerifyOptions{}); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// TestRelay_carriesPublicRootsWhereTheSystemHasNone: with no system CA
// certificates (SSL_CERT_FILE and SSL_CERT_DIR naming nothing, as in the
// FROM scratch image), a public CA's root (Let's Encrypt's ISRG Root X1)
// still verifies: the relay carries Mozilla's bundle, so a Vault with a
// public certificate (HCP Vault, ACME) needs no CA mount.
func TestRelay_carriesPublicRootsWhereTheSystemHasNone(t *testing.T) {
	empty := t.TempDir()
	root, err := filepath.Abs("testdata/isrg-root-x1.pem")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RELAY_TEST_VERIFY_ROOT="+root,
		"SSL_CERT_FILE="+filepath.Join(empty, "none.pem"), "SSL_CERT_DIR="+empty)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ISRG Root X1 does not verify without system roots: %v\n%s", err, out)
	}
}
