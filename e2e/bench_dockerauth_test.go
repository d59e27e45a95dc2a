//go:build e2e && bench

package e2e

import (
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/internal/testcert"
)

// docker_auth (cesanta/docker_auth's auth_server) side by side, when
// DOCKER_AUTH_BIN names the binary: the bench's user with the same bcrypt
// hash, an ES256 key, an ACL granting benchScope, the same GET /auth.
// Its module is not on the Go proxy; docs/DEVELOPING.md says how to build it.

type dockerAuth struct {
	URL     string // http://127.0.0.1:PORT
	Version string // from its start-up line; set with -ldflags -X main.Version=…
	Proc    *Process
}

// dockerAuthVersion finds the version in auth_server's first log line.
var dockerAuthVersion = regexp.MustCompile(`docker_auth (\S*) build`)

func (d *dockerAuth) PID() int { return d.Proc.cmd.Process.Pid }

const dockerAuthConfig = `server:
  addr: "127.0.0.1:%d"
token:
  issuer: %q
  expiration: 300
  certificate: %q
  key: %q
users:
  %q:
    password: %q
acl:
  - match: {account: %q, type: "repository", name: "team/app"}
    actions: ["pull", "push"]
`

// startDockerAuth runs DOCKER_AUTH_BIN with the bench's user; nil when it
// is unset.
func startDockerAuth(t *testing.T, hash string) *dockerAuth {
	t.Helper()
	bin := os.Getenv("DOCKER_AUTH_BIN")
	if bin == "" {
		t.Log("docker_auth: skipped, DOCKER_AUTH_BIN is not set")
		return nil
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	// A self-signed P-256 certificate and its key, as docker_auth's
	// token.certificate and token.key.
	ca := testcert.New(t, testcert.Options{Subject: pkix.Name{CommonName: "docker_auth bench"}})
	ca.WriteFiles(t, certPath, keyPath, true)
	port := freePort(t)
	configPath := filepath.Join(dir, "auth_config.yml")
	mustWrite(t, configPath, fmt.Appendf(nil, dockerAuthConfig, port, tokenIssuer, certPath, keyPath,
		benchUser, hash, benchUser))
	d := &dockerAuth{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	d.Proc = StartProcess(t, "docker_auth", baseEnv(dir), bin, "--logtostderr", configPath)
	waitFor(t, "docker_auth", d.Proc, startTimeout, func() error {
		_, err := statusOf(d.URL + "/")
		return err
	})
	code, _, body := httpGet(t, d.URL+tokenQuery, benchUser, benchPassword)
	if code != http.StatusOK {
		t.Fatalf("docker_auth GET %s: %d %s", tokenQuery, code, truncate(body, 300))
	}
	var answer struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		t.Fatalf("docker_auth answer: %v: %s", err, truncate(body, 300))
	}
	if alg := jwtAlg(answer.Token); alg != "ES256" {
		t.Fatalf("docker_auth signs with %q, want ES256", alg)
	}
	if m := dockerAuthVersion.FindStringSubmatch(d.Proc.Log()); m != nil {
		d.Version = m[1]
	}
	t.Logf("docker_auth: %s (%s) serves ES256 tokens at %s", bin, d.Version, d.URL)
	return d
}

// jwtAlg reads the alg of a JWT's header.
func jwtAlg(token string) string {
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(raw, &h)
	return h.Alg
}
