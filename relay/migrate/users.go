package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vault-registry/vault-plugin-registry/access"
	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// maxPasswordLen is bcrypt's limit, which the plugin enforces.
const maxPasswordLen = tokenapi.MaxPasswordBytes

// tally counts what happened to the users, for the summary.
type tally struct {
	created, updated, unchanged, skipped int
	dropped                              int // access entries left out
	lost                                 int // of which godoauth had granted something
	star                                 int // carried-over entries granting "*"
	seen                                 map[string]bool
}

// migrateUsers migrates every user of <from>, opts.parallel at a time,
// and reports them in godoauth's order. It reports true when it stopped
// early: Vault failed in a way that is not about one user (unreachable,
// token refused), which the next users would meet too.
func (m *migration) migrateUsers(ctx context.Context) (stopped bool) {
	from := m.opts.from
	m.tally.seen = map[string]bool{}
	names, err := listKeys(ctx, m.vault, from, "", 0)
	if err != nil {
		fmt.Fprintf(m.errOut, "godoauth-relay migrate: listing %s/: %s\n", from, describeErr(err))
		return true
	}
	if len(names) == 0 {
		m.printf("users: %s/ has none\n", from)
		return false
	}
	m.printf("users (%d):\n", len(names))
	m.progress = newProgress(m.errOut, len(names))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for r := range m.startUsers(ctx, names) {
		<-r.done
		m.progress.clear()
		_, _ = m.out.Write(r.report.Bytes())
		m.tally.add(&r.tally)
		m.progress.step()
		if r.err != nil {
			m.printf("  %s: FAILED: %s\n", r.name, r.err)
			fmt.Fprintf(m.errOut, "godoauth-relay migrate: stopped at user %s: %s\n"+
				"The users after it were not migrated, but for those already under way (-parallel); "+
				"run this again once that is fixed (migrated users stay unchanged).\n",
				quote(r.name), r.err)
			return true
		}
	}
	return false
}

// userRun is one user's migration, done apart: its report lines and
// counts, and the Vault failure that stops the run.
type userRun struct {
	name   string
	report bytes.Buffer
	tally  tally
	err    error
	done   chan struct{} // closed when the fields are set
}

// startUsers migrates the users opts.parallel at a time, each into a
// userRun of its own, and hands the runs over in the order of names, a
// few ahead of the reader at most; it stops starting them when ctx ends.
func (m *migration) startUsers(ctx context.Context, names []string) <-chan *userRun {
	runs := make(chan *userRun, 2*m.opts.parallel)
	slots := make(chan struct{}, m.opts.parallel)
	go func() {
		defer close(runs)
		for _, name := range names {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			r := &userRun{name: name, tally: tally{seen: map[string]bool{}}, done: make(chan struct{})}
			go func() {
				defer func() { <-slots; close(r.done) }()
				// The same options and client; its own report and counts.
				w := &migration{opts: m.opts, vault: m.vault, out: &r.report, errOut: m.errOut, addr: m.addr,
					issuer: m.issuer, ttl: m.ttl, pair: m.pair, pluginConfig: m.pluginConfig, tally: tally{seen: r.tally.seen}}
				r.err = w.migrateUser(ctx, name)
				r.tally = w.tally
			}()
			select {
			case runs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return runs
}

// add counts another run's users in t.
func (t *tally) add(o *tally) {
	t.created += o.created
	t.updated += o.updated
	t.unchanged += o.unchanged
	t.skipped += o.skipped
	t.dropped += o.dropped
	t.lost += o.lost
	t.star += o.star
	for name := range o.seen {
		t.seen[name] = true
	}
}

// migrateUser migrates one user, or reports why not. The error is a Vault
// failure that stops the run; everything about the user itself is reported
// and counted here.
func (m *migration) migrateUser(ctx context.Context, name string) error {
	from, to := m.opts.from, m.opts.to
	skip := func(format string, args ...any) error {
		m.tally.skipped++
		m.printf("  %s: skipped: %s\n", name, fmt.Sprintf(format, args...))
		return nil
	}
	switch {
	case strings.HasSuffix(name, "/"):
		m.tally.skipped++
		m.printf("  %s: skipped: a folder nested more than %d deep\n", quote(name), maxFolderDepth)
		return nil
	case !access.ValidUserName(name):
		m.tally.skipped++
		m.printf("  %s: skipped: the plugin's user names are 1 to 256 letters, digits, _ - . @\n", quote(name))
		return nil
	}
	m.tally.seen[name] = true

	s, err := m.vault.Logical().ReadWithContext(ctx, from+"/"+name)
	if err != nil {
		return fmt.Errorf("reading %s/%s: %s", from, name, describeErr(err))
	}
	if s == nil {
		return skip("it disappeared from %s/ during the migration", from)
	}
	password, _, err := stringField(s.Data, "password")
	if err != nil {
		return skip("%s: godoauth refused every login of this user", err)
	}
	godoauthAccess, _, err := stringField(s.Data, "access")
	if err != nil {
		return skip("%s: godoauth refused every login of this user", err)
	}
	switch {
	case password == "":
		return skip("no password: godoauth refused every login of this user")
	case len(password) > maxPasswordLen:
		return skip("the password is longer than %d bytes, which bcrypt cannot take; give the user a new one in %s/users/%s", maxPasswordLen, to, name)
	}

	tr := translateAccess(godoauthAccess)
	if len(tr.Problems) > 0 && !m.opts.dropInvalid {
		m.tally.skipped++
		m.printf("  %s: skipped: %s the plugin would read differently (-drop-invalid-entries migrates the user without them):\n",
			name, count(len(tr.Problems), "access entry", "access entries"))
		m.printProblems(tr.Problems)
		return nil
	}
	parsed, err := access.Parse(tr.Access)
	if err != nil {
		return skip("access: %s", err)
	}

	var outcome string
	if m.opts.dryRun {
		outcome, err = m.previewUser(ctx, name, parsed.String())
	} else {
		outcome, err = m.writeUser(ctx, name, password, tr.Access)
	}
	if err != nil {
		if status(err) == 400 {
			return skip("the plugin refused it: %s", describeErr(err, password))
		}
		return errors.New(describeErr(err, password))
	}
	m.tally.star += tr.Star
	if len(tr.Problems) == 0 {
		m.printf("  %s: %s\n", name, outcome)
		return nil
	}
	m.tally.dropped += len(tr.Problems)
	for _, p := range tr.Problems {
		if p.Lost {
			m.tally.lost++
		}
	}
	m.printf("  %s: %s, without %s (-drop-invalid-entries):\n", name, outcome, count(len(tr.Problems), "access entry", "access entries"))
	m.printProblems(tr.Problems)
	return nil
}

// writeUser writes the user; the plugin says what changed (it compares the
// password with the stored hash).
func (m *migration) writeUser(ctx context.Context, name, password, access string) (string, error) {
	s, err := m.vault.Logical().WriteWithContext(ctx, m.opts.to+"/users/"+name, map[string]any{
		"password": password,
		"access":   access,
	})
	if err != nil {
		return "", err
	}
	if s == nil {
		m.tally.updated++
		return "written (the plugin did not say what changed)", nil
	}
	created, _ := s.Data["created"].(bool)
	pw, _ := s.Data["password_changed"].(bool)
	acc, _ := s.Data["access_changed"].(bool)
	var what []string
	if pw {
		what = append(what, "password")
	}
	if acc {
		what = append(what, "access")
	}
	switch {
	case created:
		m.tally.created++
		return "created", nil
	case len(what) > 0:
		m.tally.updated++
		return "updated (" + strings.Join(what, ", ") + ")", nil
	}
	m.tally.unchanged++
	return "unchanged", nil
}

// previewUser says what writeUser would do, reading only. The password
// cannot be compared without writing it.
func (m *migration) previewUser(ctx context.Context, name, access string) (string, error) {
	s, err := m.vault.Logical().ReadWithContext(ctx, m.opts.to+"/users/"+name)
	if err != nil {
		return "", err
	}
	if s == nil {
		m.tally.created++
		return "would be created", nil
	}
	if stored, _, _ := stringField(s.Data, "access"); stored == access {
		m.tally.unchanged++
		return "exists with the same access", nil
	}
	m.tally.updated++
	return "would be updated (access)", nil
}

func (m *migration) printProblems(ps []entryProblem) {
	for _, p := range ps {
		m.printf("      %s\n", p)
	}
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
