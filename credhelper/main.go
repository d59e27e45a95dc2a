package credhelper

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/docker/docker-credential-helpers/credentials"

	"github.com/vault-registry/vault-plugin-registry/version"
)

// Version is set at build time with -ldflags; else the module's.
var Version string

// Main runs one verb of the protocol (args[0]: get, store, erase, list,
// version) and returns the exit code. As the protocol has it, a failure is
// one line on stdout, which docker shows.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	credentials.Name = Name
	credentials.Package = "github.com/vault-registry/vault-plugin-registry"
	credentials.Version = version.Resolve(Version)
	if len(args) != 1 {
		fmt.Fprintf(stdout, "Usage: %s <get|store|erase|list|version>\n", Name)
		return 1
	}
	switch args[0] {
	case "--version", "-v", "version":
		_ = credentials.PrintVersion(stdout)
		return 0
	case "--help", "-h":
		fmt.Fprintf(stdout, "Usage: %s <get|store|erase|list|version>\n", Name)
		return 0
	}
	h, err := newHelper(stderr)
	if err == nil {
		err = credentials.HandleCommand(h, args[0], stdin, stdout)
	}
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	return 0
}

func newHelper(stderr io.Writer) (*Helper, error) {
	path, err := ConfigPath()
	if err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	h := &Helper{Config: cfg, Stderr: stderr}
	if dir, err := os.UserCacheDir(); err == nil {
		h.NoticeDir = filepath.Join(dir, "vault-registry")
	}
	return h, nil
}
