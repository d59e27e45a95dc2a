package migrate

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"
)

// progressEvery bounds how often the progress line is redrawn on a
// terminal.
const progressEvery = 200 * time.Millisecond

// progressLogEvery is how often the count is printed as a line of its own
// when standard error is not a terminal (a file, a pipe, a CI job's log),
// so that a long migration shows it is moving there too. A variable for
// the tests.
var progressLogEvery = 10 * time.Second

// progress shows how far the user migration is, a count and a rate, on
// standard error: on a terminal, one line redrawn in place; otherwise a
// plain line every progressLogEvery (none for a run shorter than that), so
// that standard output, the report, holds nothing extra either way.
type progress struct {
	w           io.Writer // nil: nothing shown
	tty         bool      // w is a terminal: redraw in place
	total, done int
	start, last time.Time
	shown       bool // the line is on the screen
}

func newProgress(stderr io.Writer, total int) *progress {
	p := &progress{w: stderr, total: total, start: time.Now()}
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		p.tty = true
	} else {
		p.last = p.start // the first line after progressLogEvery
	}
	return p
}

// step counts one user and shows the count now and then.
func (p *progress) step() {
	p.done++
	if p.w == nil {
		return
	}
	now := time.Now()
	switch {
	case p.tty && (now.Sub(p.last) >= progressEvery || p.done == p.total):
		p.last = now
		fmt.Fprintf(p.w, "\r\033[K%s", p.line(now))
		p.shown = true
	case !p.tty && now.Sub(p.last) >= progressLogEvery && p.done < p.total:
		p.last = now
		fmt.Fprintf(p.w, "godoauth-relay migrate: %s\n", p.line(now))
	}
}

func (p *progress) line(now time.Time) string {
	return fmt.Sprintf("users: %d/%d (%d%%), %s", p.done, p.total, p.done*100/max(p.total, 1), rate(p.done, now.Sub(p.start)))
}

// clear takes the line off the screen before a report line is printed
// (standard output is likely the same terminal); the next step draws it again.
func (p *progress) clear() {
	if p != nil && p.tty && p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
		p.last = time.Time{}
	}
}

// elapsed is the time since the first user.
func (p *progress) elapsed() time.Duration { return time.Since(p.start) }

func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "- users/s"
	}
	return fmt.Sprintf("%.0f users/s", float64(n)/d.Seconds())
}

// printTable ends the report with the counts as a table, and how long the
// users took.
func (m *migration) printTable() {
	t := &m.tally
	rows := []struct {
		what string
		n    int
	}{{"created", t.created}, {"updated", t.updated}, {"unchanged", t.unchanged}, {"skipped", t.skipped}}
	if m.opts.dryRun {
		rows[0].what, rows[1].what, rows[2].what, rows[3].what =
			"would be created", "would be updated", "same access", "would be skipped"
	}
	total := 0
	for _, r := range rows {
		total += r.n
	}
	tw := tabwriter.NewWriter(m.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "users\t \t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t\n", r.what, r.n)
	}
	var took string
	if m.progress != nil {
		d := m.progress.elapsed()
		took = fmt.Sprintf("   in %s, %s", d.Round(time.Millisecond), rate(total, d))
	}
	fmt.Fprintf(tw, "total\t%d\t\n", total)
	m.progress.clear()
	_ = tw.Flush()
	if took != "" {
		fmt.Fprintln(m.out, took)
	}
}
