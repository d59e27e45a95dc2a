package credhelper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
)

// The user's Vault token, found the way the vault CLI finds it: VAULT_TOKEN;
// then, when the registry's entry names a Vault Agent sink, that file; then
// the token helper named in the CLI's configuration (VAULT_CONFIG_PATH,
// default ~/.vault), whose `get` prints the token; then ~/.vault-token,
// the CLI's own helper's file.

// errNoToken is a token not found anywhere; the message says what to do.
var errNoToken = errors.New("no Vault token: run `vault login` (or set VAULT_TOKEN)")

// tokenHelperTimeout bounds an external token helper's `get`.
const tokenHelperTimeout = 10 * time.Second

// maxTokenBytes bounds what is read as a token.
const maxTokenBytes = 4096

// findToken returns the Vault token and where it came from.
func findToken(ctx context.Context, e Entry) (token, from string, err error) {
	if t := strings.TrimSpace(os.Getenv("VAULT_TOKEN")); t != "" {
		return t, "VAULT_TOKEN", nil
	}
	if e.TokenFile != "" {
		t, err := readTokenFile(e.TokenFile)
		if err != nil || t == "" {
			return "", "", fmt.Errorf("no Vault token in the Vault Agent sink %s: is vault agent running and logged in?", e.TokenFile)
		}
		return t, e.TokenFile, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", "", errNoToken
	}
	helper, err := cliTokenHelper(home)
	if err != nil {
		return "", "", err
	}
	if helper != "" {
		t, err := runTokenHelper(ctx, helper)
		if err != nil {
			return "", "", err
		}
		if t == "" {
			return "", "", errNoToken
		}
		return t, "the token helper " + helper, nil
	}
	p := filepath.Join(home, ".vault-token")
	t, err := readTokenFile(p)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && t == "") {
		return "", "", errNoToken
	}
	if err != nil {
		return "", "", fmt.Errorf("reading %s: %v: run `vault login`", p, err)
	}
	return t, p, nil
}

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("longer than %d bytes: not a Vault token", maxTokenBytes)
	}
	return strings.TrimSpace(string(b)), nil
}

// cliTokenHelper reads token_helper from the vault CLI's configuration
// file; empty when there is no file or it names no helper.
func cliTokenHelper(home string) (string, error) {
	path := os.Getenv("VAULT_CONFIG_PATH")
	if path == "" {
		path = filepath.Join(home, ".vault")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the vault CLI configuration %s: %v", path, err)
	}
	var c struct {
		TokenHelper string `hcl:"token_helper"`
	}
	if err := hcl.Decode(&c, string(b)); err != nil {
		return "", fmt.Errorf("the vault CLI configuration %s: %v", path, err)
	}
	return c.TokenHelper, nil
}

// runTokenHelper runs `<helper> get` and returns what it printed.
func runTokenHelper(ctx context.Context, helper string) (string, error) {
	path := helper
	if !filepath.IsAbs(path) {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("the vault CLI's token_helper %q is not found: %v", helper, err)
		}
		path = p
	}
	ctx, cancel := context.WithTimeout(ctx, tokenHelperTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "get")
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("the vault CLI's token_helper %q failed: %v: run `vault login`", helper, err)
	}
	if out.Len() > maxTokenBytes {
		return "", fmt.Errorf("the vault CLI's token_helper %q printed more than a token", helper)
	}
	return strings.TrimSpace(out.String()), nil
}
