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

// Subcommand is a command that the binary adds to serve, help and version
// (migrate, healthcheck): its one-line summary for the usage, and itself.
type Subcommand struct {
	Summary string
	Run     Command
}

// Main runs godoauth-relay with args (without the program name) and returns
// the exit status: 0 done, 1 failed while running, 2 bad command line or
// configuration. A first argument that is not a flag names a command:
// "serve" (the default), "help", "version" or one of commands (for
// example "migrate").
func Main(args []string, stdout, stderr io.Writer, commands map[string]Subcommand) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return serve(args, stdout, stderr, commands)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "serve":
		return serve(rest, stdout, stderr, commands)
	case "version":
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "godoauth-relay version: unexpected argument %s\n", quote(rest[0]))
			return 2
		}
		fmt.Fprintln(stdout, "godoauth-relay", version.Resolve(Version))
		return 0
	case "help":
		return help(rest, stdout, stderr, commands)
	}
	if cmd, ok := commands[name]; ok {
		return cmd.Run(rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "godoauth-relay: unknown command %s (commands: %s; run 'godoauth-relay help')\n",
		quote(name), strings.Join(commandNames(commands), ", "))
	return 2
}

// builtin are the commands Main itself serves, with their summaries.
var builtin = map[string]string{
	"serve":   "serve /auth from godoauth's YAML file (the default command)",
	"help":    "show this help, or a command's: godoauth-relay help migrate",
	"version": "print the version",
}

func commandNames(commands map[string]Subcommand) []string {
	var names []string
	for n := range builtin {
		names = append(names, n)
	}
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// help is `godoauth-relay help [command]`: the usage, or a command's own
// (its -h).
func help(args []string, stdout, stderr io.Writer, commands map[string]Subcommand) int {
	switch {
	case len(args) == 0:
		usage(stdout, commands)
		return 0
	case len(args) > 1:
		fmt.Fprintf(stderr, "godoauth-relay help: unexpected argument %s\n", quote(args[1]))
		return 2
	}
	switch name := args[0]; {
	case name == "serve" || name == "help":
		usage(stdout, commands)
		return 0
	case name == "version":
		fmt.Fprintln(stdout, "usage: godoauth-relay version (or godoauth-relay -version): prints the version")
		return 0
	case commands[name].Run != nil:
		return commands[name].Run([]string{"-h"}, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "godoauth-relay help: unknown command %s (commands: %s)\n",
			quote(name), strings.Join(commandNames(commands), ", "))
		return 2
	}
}

// usage is the top-level help: the commands, then serve's flags.
func usage(w io.Writer, commands map[string]Subcommand) {
	fmt.Fprint(w, `usage: godoauth-relay [command] [flags]

godoauth's token endpoint: reads godoauth's YAML file unchanged and mints
registry tokens in Vault with the vault-plugin-registry mounts.

Commands:
`)
	for _, n := range commandNames(commands) {
		summary := builtin[n]
		if c, ok := commands[n]; ok {
			summary = c.Summary
		}
		fmt.Fprintf(w, "  %-12s %s\n", n, summary)
	}
	fmt.Fprint(w, `
'godoauth-relay <command> -h' shows a command's flags. Flags of serve,
also when no command is given:
`)
	fs, _, _ := serveFlags()
	pprofFlag(fs, io.Discard)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// serveFlags are serve's flags: the configuration file and -version
// (-pprof: pprof.go).
func serveFlags() (fs *flag.FlagSet, configPath *string, showVersion *bool) {
	fs = flag.NewFlagSet("godoauth-relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	configPath = fs.String("config", "config.yaml", "godoauth's YAML configuration `file`")
	showVersion = fs.Bool("version", false, "print the version and exit")
	return fs, configPath, showVersion
}

// parseFlags parses a command's flags: -h prints help (exit 0), a bad flag
// is one line naming it (exit 2), as the configuration's errors are.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, help func()) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		help()
		return 0, false
	case err != nil:
		fmt.Fprintf(stderr, "%s: %s (run '%s -h' for help)\n", fs.Name(), oneLine(err.Error()), fs.Name())
		return 2, false
	}
	return 0, true
}

// serve is the relay itself: godoauth-relay [serve] [-config FILE] [-version].
func serve(args []string, stdout, stderr io.Writer, commands map[string]Subcommand) int {
	fs, configPath, showVersion := serveFlags()
	pprofFlag(fs, stderr) // -pprof ADDR: profiling for `make bench`, off by default (pprof.go)
	if code, ok := parseFlags(fs, args, stderr, func() { usage(stdout, commands) }); !ok {
		return code
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
