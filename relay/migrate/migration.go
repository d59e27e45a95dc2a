package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/vault/api"
)

// migration is one run: checks, then issuer, keys and users, then the
// summary.
type migration struct {
	opts   options
	vault  *api.Client
	out    io.Writer // the report
	errOut io.Writer // what stopped the run
	addr   string
	issuer string // token.issuer
	ttl    int64  // token.expiration, seconds
	pair   *keyPair

	pluginConfig map[string]any // <to>/config, read by preflight
	failed       bool           // a step failed: exit status 1
	tally        tally
	progress     *progress // users done, on a terminal (progress.go)
}

// preflight checks both mounts before anything is written: <from> must be
// godoauth's KV version 1 mount and <to> a mount of the plugin.
func (m *migration) preflight(ctx context.Context) error {
	from, to := m.opts.from, m.opts.to
	s, err := m.vault.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+from)
	if err != nil {
		return fmt.Errorf("%s/ at %s: %s (is -from right, and may the token list it?)", from, m.addr, describeErr(err))
	}
	if s == nil {
		return fmt.Errorf("%s/ at %s: no such mount", from, m.addr)
	}
	typ, _, _ := stringField(s.Data, "type")
	var version string
	if o, ok := s.Data["options"].(map[string]any); ok {
		version, _, _ = stringField(o, "version")
	}
	switch {
	case (typ == "kv" || typ == "generic") && version != "2":
	case typ == "kv":
		return fmt.Errorf("%s/ is a KV version 2 mount; godoauth read KV version 1 (generic) mounts", from)
	default:
		return fmt.Errorf("%s/ is a %s mount, not godoauth's KV version 1 mount (was it moved already?)", from, quote(typ))
	}

	cfg, err := m.vault.Logical().ReadWithContext(ctx, to+"/config")
	if err != nil && status(err) != 404 && status(err) != 405 {
		return fmt.Errorf("reading %s/config at %s: %s", to, m.addr, describeErr(err))
	}
	if cfg == nil || cfg.Data["issuer"] == nil || cfg.Data["key_type"] == nil {
		return fmt.Errorf("%s/ is not a vault-plugin-registry mount; enable one first: vault secrets enable -path=%s vault-plugin-registry", to, to)
	}
	m.pluginConfig = cfg.Data
	return nil
}

func (m *migration) run(ctx context.Context) int {
	mode := ""
	if m.opts.dryRun {
		mode = " (dry run: nothing is written)"
	}
	m.printf("Migrating godoauth's %s/ to %s/ at %s%s.\n", m.opts.from, m.opts.to, m.addr, mode)
	m.migrateIssuer(ctx)
	m.migrateKeys(ctx)
	stopped := m.migrateUsers(ctx)
	m.summary(ctx, stopped)
	if m.failed || stopped || m.tally.skipped > 0 {
		return exitPartial
	}
	return exitOK
}

func (m *migration) printf(format string, args ...any) {
	m.progress.clear()
	fmt.Fprintf(m.out, format, args...)
}

// migrateIssuer makes the plugin's issuer token.issuer, which the
// registries check, and notes a token.expiration above max_ttl.
func (m *migration) migrateIssuer(ctx context.Context) {
	to := m.opts.to
	if maxTTL, ok := m.pluginConfig["max_ttl"].(json.Number); ok {
		if n, err := maxTTL.Int64(); err == nil && m.ttl > n {
			m.printf("config: note: token.expiration is %ds but %s/config max_ttl is %ds, so tokens last %ds; to keep godoauth's: vault write %s/config max_ttl=%ds\n",
				m.ttl, to, n, n, to, m.ttl)
		}
	}
	if m.issuer == "" {
		return
	}
	current, _, _ := stringField(m.pluginConfig, "issuer")
	switch {
	case current == m.issuer:
		m.printf("config: issuer %s already matches token.issuer\n", quote(current))
	case m.opts.dryRun:
		m.printf("config: would set issuer to %s (token.issuer; now %s)\n", quote(m.issuer), quote(current))
	default:
		if _, err := m.vault.Logical().WriteWithContext(ctx, to+"/config", map[string]any{"issuer": m.issuer}); err != nil {
			m.printf("config: FAILED to set issuer to %s (token.issuer): %s\n", quote(m.issuer), describeErr(err))
			m.failed = true
			return
		}
		m.printf("config: issuer set to %s (token.issuer; was %s)\n", quote(m.issuer), quote(current))
	}
}

// migrateKeys imports godoauth's key pair unless <to> holds it already.
func (m *migration) migrateKeys(ctx context.Context) {
	to := m.opts.to
	p := m.pair
	switch {
	case !m.opts.keys:
		m.printf("keys: not imported (-keys=false)\n")
		return
	case p == nil:
		m.printf("keys: nothing to import: the configuration names no token.certificate and token.key\n")
		return
	case m.opts.dryRun:
		// Reading <to>/ca on a new mount would make a trust anchor: a write.
		m.printf("keys: would import %s and %s (%s) into %s/ca/import, unless %s/ holds that certificate already (a dry run does not read %s/ca: on a new mount that creates a trust anchor)\n",
			p.certPath, p.keyPath, p.describe(), to, to, to)
		return
	}
	s, err := m.vault.Logical().ReadWithContext(ctx, to+"/ca")
	if err != nil {
		m.printf("keys: FAILED: reading %s/ca: %s\n", to, describeErr(err))
		m.failed = true
		return
	}
	if s != nil {
		current, _, _ := stringField(s.Data, "certificate")
		if p.sameCertificate(current) {
			m.printf("keys: unchanged: %s/ already uses %s (%s)\n", to, p.certPath, p.describe())
			return
		}
		if imported, _ := s.Data["imported"].(bool); imported {
			fp, _, _ := stringField(s.Data, "fingerprint")
			m.printf("keys: NOT imported: %s/ already holds another imported certificate (fingerprint %s), which registries may trust; to replace it: vault write %s/ca/import certificate=@%s private_key=@%s\n",
				to, fp, to, p.certPath, p.keyPath)
			m.failed = true
			return
		}
	}
	_, err = m.vault.Logical().WriteWithContext(ctx, to+"/ca/import", map[string]any{
		"certificate": p.certPEM,
		"private_key": p.keyPEM,
	})
	if err != nil {
		m.printf("keys: FAILED to import %s: %s\n", p.certPath, describeErr(err, p.keyPEM))
		m.failed = true
		return
	}
	m.printf("keys: imported %s and %s (%s): tokens are signed with godoauth's key, so the registries' rootcertbundle stays\n",
		p.certPath, p.keyPath, p.describe())
}

// summary prints the counts, then what the operator should know.
func (m *migration) summary(ctx context.Context, stopped bool) {
	t := &m.tally
	if m.opts.dryRun {
		m.printf("Dry run, nothing written: %d would be created, %d would be updated, %d exist with the same access, %d would be skipped.\n",
			t.created, t.updated, t.unchanged, t.skipped)
		if t.unchanged+t.updated > 0 {
			m.printf("Passwords of existing users are not compared in a dry run; a real run rewrites a password only if it differs.\n")
		}
	} else {
		m.printf("Summary: %d created, %d updated, %d unchanged, %d skipped.\n", t.created, t.updated, t.unchanged, t.skipped)
	}
	m.printTable()
	if t.dropped > 0 {
		m.printf("%s left out (-drop-invalid-entries); %d of them granted something in godoauth, the others nothing: see above.\n",
			count(t.dropped, "access entry", "access entries"), t.lost)
	}
	if t.skipped > 0 {
		m.printf("Skipped users are not in %s/. Fix them in %s/ (or use -drop-invalid-entries) and run this again: migrated users stay unchanged.\n", m.opts.to, m.opts.from)
	}
	if t.star > 0 {
		m.printf("Note: %s carried over with the actions \"*\", which in the plugin include delete (godoauth granted push and pull); registries refuse deletes unless storage.delete.enabled is true.\n",
			count(t.star, "entry", "entries"))
	}
	if !stopped {
		m.noteExtraUsers(ctx)
	}
}

// noteExtraUsers names the users of <to> that <from> lacks: the migration
// leaves them alone, which an operator re-running it should know.
func (m *migration) noteExtraUsers(ctx context.Context) {
	s, err := m.vault.Logical().ListWithContext(ctx, m.opts.to+"/users/")
	if err != nil {
		return // only a note
	}
	var extra []string
	for _, name := range stringList(s, "keys") {
		if !m.tally.seen[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) == 0 {
		return
	}
	shown := extra
	if len(shown) > 10 {
		shown = shown[:10]
	}
	more := ""
	if len(extra) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(extra)-len(shown))
	}
	m.printf("Note: %d users of %s/ are not in %s/ and were left as they are: %s%s.\n",
		len(extra), m.opts.to, m.opts.from, strings.Join(shown, ", "), more)
}
