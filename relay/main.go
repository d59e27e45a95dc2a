package relay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vault-registry/vault-plugin-registry/version"
)

// Version is the relay's version, set when building:
// -ldflags "-X github.com/vault-registry/vault-plugin-registry/relay.Version=v1.2.3";
// a `go install …@v1.2.3` build takes it from the build information.
var Version = ""

// Command is a subcommand of godoauth-relay: it gets the arguments after
// its name and returns the exit status.
type Command func(args []string, stdout, stderr io.Writer) int

// Main runs godoauth-relay with args (without the program name) and returns
// the exit status: 0 done, 1 failed while running, 2 bad command line or
// configuration. A first argument that is not a flag names a subcommand:
// "serve" (the default) or one of commands (for example "migrate").
func Main(args []string, stdout, stderr io.Writer, commands map[string]Command) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name := args[0]
		if name == "serve" {
			return serve(args[1:], stdout, stderr)
		}
		if cmd, ok := commands[name]; ok {
			return cmd(args[1:], stdout, stderr)
		}
		names := []string{"serve"}
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(stderr, "godoauth-relay: unknown command %s (commands: %s)\n", quote(name), strings.Join(names, ", "))
		return 2
	}
	return serve(args, stdout, stderr)
}

// serve is the relay itself: godoauth-relay [serve] [-config FILE] [-version].
func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("godoauth-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "godoauth's YAML configuration `file`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	pprofFlag(fs, stderr) // -pprof ADDR: profiling for `make bench`, off by default (pprof.go)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "godoauth-relay: unexpected argument %s\n", quote(fs.Arg(0)))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "godoauth-relay", version.Resolve(Version))
		return 0
	}
	fail := func(status int, err error) int {
		fmt.Fprintln(stderr, "godoauth-relay:", oneLine(err.Error()))
		return status
	}

	cfg, err := LoadConfig(*configPath, os.Getenv)
	if err != nil {
		return fail(2, err)
	}
	var out io.Writer = stderr
	var logFile *LogFile
	if cfg.Log.File != "" {
		if logFile, err = OpenLogFile(cfg.Log.File); err != nil {
			return fail(1, fmt.Errorf("log.file: %w", err))
		}
		defer logFile.Close()
		out = logFile
	}
	logger := NewConfiguredLogger(cfg.Log, out)
	srv, err := New(cfg, logger)
	if err != nil {
		logger.Error("cannot start", "error", err)
		return fail(1, err)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		logger.Error("cannot listen", "error", err)
		return fail(1, fmt.Errorf("http.addr: %w", err))
	}
	if err := srv.ListenMetrics(); err != nil {
		ln.Close()
		logger.Error("cannot listen", "error", err)
		return fail(1, err)
	}
	srv.logStart(*configPath)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			srv.reopen(logFile)
		}
	}()

	if err := srv.Serve(ctx, ln); err != nil {
		logger.Error("server stopped", "error", err)
		return fail(1, err)
	}
	logger.Info("stopped")
	return 0
}

// reopen follows a SIGHUP: a new log file (after rotation) and TLS pair.
func (s *Server) reopen(logFile *LogFile) {
	if logFile != nil {
		if err := logFile.Reopen(); err != nil {
			s.log.Error("cannot reopen log.file; still writing to the old file", "error", err)
		}
	}
	if err := s.ReloadTLS(); err != nil {
		s.log.Error("cannot reload the TLS certificate; keeping the old one", "error", err)
	}
	s.log.Info("SIGHUP: log file reopened, TLS certificate reloaded")
}

// logStart says what the relay serves and what in godoauth's file it no
// longer uses, then checks Vault in the background.
func (s *Server) logStart(configPath string) {
	c := s.cfg
	metricsAt := c.HTTP.MetricsAddr
	if metricsAt == "" {
		metricsAt = c.HTTP.Addr + " (public: set http.metrics_addr to move it)"
	}
	s.log.Info("godoauth-relay starting", "version", version.Resolve(Version), "addr", c.HTTP.Addr,
		"tls", c.HTTP.TLS.Enabled(), "vault", c.VaultAddress(), "log_level", c.Log.Level, "metrics", metricsAt,
		"trusted_proxies", len(c.HTTP.proxies))
	if c.Token.Certificate != "" || c.Token.Key != "" {
		cert, key := c.Token.Certificate, c.Token.Key
		if cert == "" {
			cert = "server.pem"
		}
		if key == "" {
			key = "server.key"
		}
		s.log.Info("token.certificate and token.key are not used: tokens are signed inside Vault. "+
			"To keep the registry's rootcertbundle, import them once into each service's mount "+
			"(or run godoauth-relay migrate)",
			"command", fmt.Sprintf("vault write <service>/ca/import certificate=@%s private_key=@%s", cert, key))
	}
	if fi, err := os.Stat(configPath); err == nil && fi.Mode().Perm()&0o044 != 0 && c.Storage.Vault.AuthToken != "" {
		s.log.Warn("the configuration file holds the relay's Vault token and is readable by others",
			"file", configPath, "mode", fi.Mode().Perm().String())
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.vault.timeout)
		defer cancel()
		start := time.Now()
		if state, ok := s.vault.health(ctx); ok {
			s.log.Info("vault answers", "address", c.VaultAddress(), "state", state, "duration", time.Since(start))
		} else {
			s.log.Warn("vault is not ready; token requests answer 503 until it is",
				"address", c.VaultAddress(), "state", state)
		}
	}()
}
