//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

// TLS end to end: the relay reaches Vault over TLS, trusting only the CA
// named by VAULT_CACERT, and serves http.tls with a certificate it reloads
// on SIGHUP. Every certificate is made by the test.

// servedSerial is the serial number of the certificate addr serves,
// verified against roots.
func servedSerial(addr string, roots *x509.CertPool) (*big.Int, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// tokenOver asks the relay for a token with Basic credentials and returns
// the status and body.
func tokenOver(t *testing.T, client *http.Client, url, service string, u user, scope string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/auth?service="+service+"&scope="+scope, nil)
	req.SetBasicAuth(u.name, u.password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /auth: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /auth: %v", err)
	}
	return resp.StatusCode, body
}

// TestTLS_relayToVaultTrustsOnlyVaultCACert: Vault listens with TLS on a
// certificate of a CA the test made; the relay with proto https and
// VAULT_CACERT naming that CA mints tokens through it; the same relay with
// VAULT_CACERT naming another CA refuses Vault's certificate (503, and the
// log says why), and so does one trusting only the system roots.
func TestTLS_relayToVaultTrustsOnlyVaultCACert(t *testing.T) {
	dir := t.TempDir()
	vaultCA := testcert.New(t, testcert.Options{Subject: pkix.Name{CommonName: "vault test CA"}})
	otherCA := testcert.New(t, testcert.Options{Subject: pkix.Name{CommonName: "some other CA"}})
	certFile, keyFile, _ := vaultCA.Issue(t, dir, "vault")
	caFile, otherFile := filepath.Join(dir, "vault-ca.pem"), filepath.Join(dir, "other-ca.pem")
	mustWrite(t, caFile, vaultCA.PEM)
	mustWrite(t, otherFile, otherCA.PEM)
	tlsPort := freePort(t)
	listener := filepath.Join(dir, "tls-listener.hcl")
	mustWrite(t, listener, fmt.Appendf(nil, "listener \"tcp\" {\n  address = \"127.0.0.1:%d\"\n  tls_cert_file = %q\n  tls_key_file = %q\n}\n",
		tlsPort, certFile, keyFile))

	v := StartVault(t, "-config="+listener)
	vaultTLS := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: vaultCA.Pool}}}
	waitFor(t, "vault's TLS listener", v.Proc, startTimeout, func() error {
		resp, err := vaultTLS.Get(fmt.Sprintf("https://127.0.0.1:%d/v1/sys/health", tlsPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	svc := v.EnableService(t, "registry")
	tess := user{"tess", "tess-pw-9c1a7e", "repository:tess/*:pull"}
	svc.AddUsers(t, tess)

	// A relay calling Vault's TLS listener, up once it serves (it may not
	// reach Vault).
	viaTLS := func(env ...string) *Relay {
		return StartRelay(t, RelayOptions{Vault: v, Services: []string{svc.Name}, VaultAddr: fmt.Sprintf("https://127.0.0.1:%d", tlsPort),
			Env: env, Ready: "/server-ping"})
	}
	plain := &http.Client{Timeout: 30 * time.Second}

	t.Run("VAULT_CACERT names Vault's CA", func(t *testing.T) {
		r := viaTLS("VAULT_CACERT=" + caFile)
		waitFor(t, "relay healthy over TLS to Vault", r.Proc, 30*time.Second, func() error {
			return wantStatus(r.URL+"/healthz", http.StatusOK)
		})
		code, body := tokenOver(t, plain, r.URL, svc.Name, tess, "repository:tess/app:pull")
		if code != http.StatusOK {
			t.Fatalf("GET /auth through Vault's TLS listener: %d %s", code, truncate(body, 300))
		}
		if c := tokenClaims(t, body); c.Sub != tess.name || c.Aud != svc.Name {
			t.Errorf("token through TLS: sub %q aud %q", c.Sub, c.Aud)
		}
	})

	for _, wrong := range []struct{ name, env string }{
		{"VAULT_CACERT names another CA", "VAULT_CACERT=" + otherFile},
		{"no VAULT_CACERT: the system roots", ""},
	} {
		t.Run(wrong.name, func(t *testing.T) {
			var env []string
			if wrong.env != "" {
				env = []string{wrong.env}
			}
			r := viaTLS(env...)
			code, body := tokenOver(t, plain, r.URL, svc.Name, tess, "repository:tess/app:pull")
			if code != http.StatusServiceUnavailable {
				t.Errorf("GET /auth with Vault's certificate untrusted: %d %s, want 503", code, truncate(body, 300))
			}
			if err := wantStatus(r.URL+"/healthz", http.StatusServiceUnavailable); err != nil {
				t.Errorf("/healthz with Vault's certificate untrusted: %v", err)
			}
			waitFor(t, "the log naming the certificate", r.Proc, 10*time.Second, func() error {
				if !strings.Contains(r.Proc.Log(), "certificate signed by unknown authority") {
					return fmt.Errorf("not in the relay log:\n%s", tail(r.Proc.Log(), 10))
				}
				return nil
			})
		})
	}
}

// TestTLS_relayServesTheNewCertificateAfterSIGHUP: the relay serves
// http.tls; after the files are replaced and the relay gets SIGHUP, new
// connections get the new certificate and tokens are still served; a
// broken pair on SIGHUP keeps the last good one.
func TestTLS_relayServesTheNewCertificateAfterSIGHUP(t *testing.T) {
	v := StartVault(t)
	svc := v.EnableService(t, "registry")
	tess := user{"tess", "tess-pw-9c1a7e", "repository:tess/*:pull"}
	svc.AddUsers(t, tess)

	dir := t.TempDir()
	ca := testcert.New(t, testcert.Options{Subject: pkix.Name{CommonName: "relay test CA"}})
	certFile, keyFile, first := ca.Issue(t, dir, "relay")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, DisableKeepAlives: true}}
	r := StartRelay(t, RelayOptions{Vault: v, Services: []string{svc.Name}, Cert: certFile, Key: keyFile, Client: client, Ready: "/server-ping"})
	addr := strings.TrimPrefix(r.URL, "https://")

	serial, err := servedSerial(addr, ca.Pool)
	if err != nil || serial.Cmp(first) != 0 {
		t.Fatalf("served certificate serial %v (%v), want %v", serial, err, first)
	}

	_, _, second := ca.Issue(t, dir, "relay") // the same files, a new pair
	if err := syscall.Kill(pidOf(r.Proc), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new certificate served", r.Proc, 10*time.Second, func() error {
		serial, err := servedSerial(addr, ca.Pool)
		if err != nil {
			return err
		}
		if serial.Cmp(second) != 0 {
			return fmt.Errorf("serial %v, want %v", serial, second)
		}
		return nil
	})
	if code, body := tokenOver(t, client, r.URL, svc.Name, tess, "repository:tess/app:pull"); code != http.StatusOK {
		t.Errorf("GET /auth over the new certificate: %d %s", code, truncate(body, 300))
	}

	// A broken pair: the relay says so and keeps serving the last good one.
	mustWrite(t, certFile, []byte("not a certificate"))
	if err := syscall.Kill(pidOf(r.Proc), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload error in the log", r.Proc, 10*time.Second, func() error {
		if !strings.Contains(r.Proc.Log(), "cannot reload the TLS certificate") {
			return fmt.Errorf("not in the relay log:\n%s", tail(r.Proc.Log(), 10))
		}
		return nil
	})
	if serial, err := servedSerial(addr, ca.Pool); err != nil || serial.Cmp(second) != 0 {
		t.Errorf("after a broken pair: served serial %v (%v), want the last good %v", serial, err, second)
	}
}
