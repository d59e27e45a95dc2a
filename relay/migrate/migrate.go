// Package migrate is `godoauth-relay migrate`: it copies godoauth's users
// (a KV version 1 mount of plain passwords and access strings) and its
// signing key pair into a vault-plugin-registry mount, so that registries
// keep their configuration. Running it again changes only what changed.
package migrate

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/vault-registry/vault-plugin-registry/relay"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// Exit statuses.
const (
	exitOK      = 0 // everything migrated (or, in a dry run, would be)
	exitPartial = 1 // some users skipped or a step failed; run again after fixing
	exitUsage   = 2 // nothing changed: bad flags, configuration, key pair or mounts
)

const usageText = `Usage: godoauth-relay migrate -from MOUNT -to MOUNT [flags]

Moves godoauth's users and signing key pair into a vault-plugin-registry
mount, so registries keep their configuration and users their passwords
and access. Run it with -dry-run first; running it again is safe and
changes only what changed.

  users   Every user of the godoauth mount (<from>/<user>, fields password
          and access) is written to <to>/users/<user>; the plugin keeps the
          password as a bcrypt hash. Users in <to> that <from> lacks are
          left alone.
  keys    token.certificate and token.key (the registries' rootcertbundle
          and its key) are imported with <to>/ca/import, unless <to> already
          holds that certificate. Relative paths are read from the working
          directory, as godoauth read them.
  issuer  <to>/config issuer is set to token.issuer when they differ.

Access entries are carried over only when the plugin reads them as godoauth
did. godoauth ignored an entry's type, compared names literally (a "*" in a
name matched nothing), knew only the actions push, pull, "push,pull",
"pull,push" and "*", let a later entry for a name replace an earlier one,
and refused every login of a user whose access string had an entry without
three fields (a stray ";" included). A user with any other entry is skipped
and reported, unless -drop-invalid-entries is given: then those entries are
left out, each one reported, and the user is migrated with the rest. So no
user gets more than godoauth granted, but for one thing: "*" also grants
delete in the plugin, which a registry allows only with
storage.delete.enabled.

Vault: the address and token come from storage.vault of the configuration,
and VAULT_ADDR, VAULT_TOKEN and VAULT_CACERT override them, as for every
Vault client. godoauth's token can usually only read the old mount: run
this with an operator's VAULT_TOKEN. It needs list and read on <from>/*;
read and update on <to>/config; read, create and update on <to>/users/*;
list on <to>/users/; read on <to>/ca; update on <to>/ca/import.

Exit status: 0 everything migrated; 1 some users were skipped or a step
failed (fix it and run again); 2 nothing was changed: bad flags,
configuration, key pair or mounts. A dry run answers as the run would.

Example:
  godoauth-relay migrate -config config.yaml -from registry -to registry-new -dry-run

Flags:
`

type options struct {
	config      string
	from, to    string
	dryRun      bool
	keys        bool
	dropInvalid bool
	certificate string
	key         string
	parallel    int
}

// defaultParallel is how many users are migrated at a time: each is a KV
// read and a plugin write (a bcrypt hash and a storage write), so a few in
// flight keep Vault busy where one at a time leaves it waiting on round
// trips and disk syncs (TestBench_scaleMigrate).
const defaultParallel = 8

// maxParallel bounds -parallel: more would only queue in Vault.
const maxParallel = 64

// Main runs `godoauth-relay migrate` with the arguments after "migrate" and
// returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(context.Background(), args, stdout, stderr, os.Getenv)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	opts, code, ok := parseFlags(args, stdout, stderr)
	if !ok {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "godoauth-relay migrate:", oneLine(err.Error()))
		fmt.Fprintln(stderr, "Nothing was changed.")
		return exitUsage
	}
	cfg, err := loadConfig(opts.config, getenv)
	if err != nil {
		return fail(err)
	}
	var pair *keyPair
	if opts.keys {
		files := keyFiles{certificate: cfg.Token.Certificate, key: cfg.Token.Key, certSetting: "token.certificate", keySetting: "token.key"}
		if opts.certificate != "" {
			files = keyFiles{certificate: opts.certificate, key: opts.key, certSetting: "-certificate", keySetting: "-key"}
		}
		if pair, err = loadKeyPair(files); err != nil {
			return fail(err)
		}
	}
	client, err := relay.NewVaultClient(cfg, func(vc *api.Config) error {
		// An idle connection for each user in flight, none dialled anew.
		if t, ok := vc.HttpClient.Transport.(*http.Transport); ok {
			t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, opts.parallel)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	m := &migration{
		opts:   opts,
		vault:  client,
		out:    stdout,
		errOut: stderr,
		addr:   cfg.VaultAddress(),
		issuer: cfg.Token.Issuer,
		ttl:    cfg.Token.Expiration,
		pair:   pair,
	}
	if err := m.preflight(ctx); err != nil {
		return fail(err)
	}
	return m.run(ctx)
}

func parseFlags(args []string, stdout, stderr io.Writer) (options, int, bool) {
	var o options
	fs := flag.NewFlagSet("godoauth-relay migrate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.config, "config", "config.yaml", "godoauth's YAML configuration `file`, the one the relay reads; \"\" for none (Vault from VAULT_ADDR and VAULT_TOKEN)")
	fs.StringVar(&o.from, "from", "", "godoauth's KV version 1 `mount`, named after the registry service (required)")
	fs.StringVar(&o.to, "to", "", "the vault-plugin-registry `mount` to fill, e.g. registry-new (required)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "write nothing; say what would change")
	fs.BoolVar(&o.keys, "keys", true, "import token.certificate and token.key into <to>/ca/import")
	fs.BoolVar(&o.dropInvalid, "drop-invalid-entries", false, "migrate users without the access entries the plugin would read differently, instead of skipping them")
	fs.StringVar(&o.certificate, "certificate", "", "PEM certificate `file` to import instead of token.certificate (with -key)")
	fs.StringVar(&o.key, "key", "", "PEM private key `file` to import instead of token.key (with -certificate)")
	fs.IntVar(&o.parallel, "parallel", defaultParallel, fmt.Sprintf("users migrated at a time, 1 to %d; the report keeps godoauth's order", maxParallel))

	usageErr := func(format string, args ...any) (options, int, bool) {
		fmt.Fprintf(stderr, "godoauth-relay migrate: "+format+"\n", args...)
		fmt.Fprintln(stderr, "Run 'godoauth-relay migrate -h' for help.")
		return o, exitUsage, false
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return o, exitOK, false
		}
		return usageErr("%s", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %s", quote(fs.Arg(0)))
	}
	var err error
	if o.from, err = cleanMount("-from", o.from); err != nil {
		return usageErr("%s", err)
	}
	if o.to, err = cleanMount("-to", o.to); err != nil {
		return usageErr("%s", err)
	}
	if o.from == o.to {
		return usageErr("-from and -to name the same mount %s", quote(o.from))
	}
	if (o.certificate == "") != (o.key == "") {
		return usageErr("-certificate and -key go together")
	}
	if !o.keys && o.certificate != "" {
		return usageErr("-certificate and -key make no sense with -keys=false")
	}
	if o.parallel < 1 || o.parallel > maxParallel {
		return usageErr("-parallel %d: want 1 to %d", o.parallel, maxParallel)
	}
	return o, exitOK, true
}

// cleanMount checks a mount path given on the command line and drops the
// slashes around it.
func cleanMount(flagName, s string) (string, error) {
	p := strings.Trim(s, "/")
	if p == "" {
		return "", fmt.Errorf("%s is required: the mount path, e.g. registry", flagName)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("%s %s: not a mount path", flagName, quote(s))
		}
	}
	if strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune("?#%\\", r) }) >= 0 {
		return "", fmt.Errorf("%s %s: not a mount path", flagName, quote(s))
	}
	return p, nil
}

// loadConfig reads godoauth's YAML as the relay does; with no file, the
// Vault address and token come from the environment alone.
func loadConfig(path string, getenv func(string) string) (*relay.Config, error) {
	if path != "" {
		return relay.LoadConfig(path, getenv)
	}
	cfg := &relay.Config{}
	if err := cfg.ApplyEnv(getenv); err != nil {
		return nil, err
	}
	if cfg.Storage.Vault.Addr == "" || cfg.Storage.Vault.AuthToken == "" {
		return nil, errors.New(`with -config "", set VAULT_ADDR and VAULT_TOKEN`)
	}
	return cfg, nil
}

// oneLine folds a message into one line.
var oneLine = tokenapi.OneLine
