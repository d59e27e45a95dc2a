package migrate

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"
)

// progressEvery bounds how often the progress line is redrawn.
const progressEvery = 200 * time.Millisecond

// progress shows how far the user migration is, a count and a rate, on one
// line of standard error redrawn in place: on a terminal only, so that a
// report piped to a file or read by a script holds nothing extra.
type progress struct {
	w           io.Writer // nil: not a terminal, nothing shown
	total, done int
	start, last time.Time
	shown       bool // the line is on the screen
}

func newProgress(stderr io.Writer, total int) *progress {
	p := &progress{total: total, start: time.Now()}
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		p.w = f
	}
	return p
}

// step counts one user and redraws the line now and then.
func (p *progress) step() {
	p.done++
	if p.w == nil {
		return
	}
	if now := time.Now(); now.Sub(p.last) >= progressEvery || p.done == p.total {
		p.last = now
		p.draw(now)
	}
}

func (p *progress) draw(now time.Time) {
	fmt.Fprintf(p.w, "\r\033[Kusers: %d/%d (%d%%), %s", p.done, p.total, p.done*100/max(p.total, 1), rate(p.done, now.Sub(p.start)))
	p.shown = true
}

// clear takes the line off the screen before a report line is printed
// (standard output is likely the same terminal); the next step draws it again.
func (p *progress) clear() {
	if p != nil && p.w != nil && p.shown {
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
