//go:build linux

package migrate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sys/unix"
)

// manyUsers fills godoauth's mount with n users (cheap bcrypt in the plugin).
func manyUsers(t *testing.T, n int) (*fakeVault, string) {
	f := newFakeVault(t, "registry", "registry-new")
	f.pluginOK(logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4})
	for i := range n {
		f.putKV(fmt.Sprintf("user%05d", i), user(fmt.Sprintf("pw-%d", i), "repository:app:pull"))
	}
	return f, f.writeConfig(t, testToken, "")
}

// progressUsers is enough users for the progress line to be redrawn
// several times (the tool does tens to hundreds a second here).
const progressUsers = 400

var summaryTable = regexp.MustCompile(`(?m)^ +created +400 *\n +updated +0 *\n +unchanged +0 *\n +skipped +0 *\n +total +400 *\n +in [0-9.hmµs]+, [0-9]+ users/s$`)

// TestMigrate_progressWithoutATerminal: with standard error a file (or a
// pipe), the count comes as plain lines there, every progressLogEvery;
// standard output holds the report and the summary table only.
func TestMigrate_progressWithoutATerminal(t *testing.T) {
	_, cfg := manyUsers(t, progressUsers)
	defer func(every time.Duration) { progressLogEvery = every }(progressLogEvery)
	progressLogEvery = time.Nanosecond // a line after every user but the last
	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK {
		t.Fatalf("%s", r)
	}
	if strings.ContainsAny(r.stderr+r.stdout, "\r\033") {
		t.Errorf("terminal control characters without a terminal: stderr %q", truncate(r.stderr, 200))
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	line := regexp.MustCompile(`^godoauth-relay migrate: users: ([0-9]+)/400 \([0-9]+%\), [0-9]+ users/s$`)
	last := 0
	for _, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("stderr line %q is not a progress line", l)
		}
		n, _ := strconv.Atoi(m[1])
		if n <= last || n >= progressUsers {
			t.Fatalf("progress %d after %d (of %d): want a rising count below the total", n, last, progressUsers)
		}
		last = n
	}
	if len(lines) < progressUsers/2 {
		t.Errorf("%d progress lines, want one after nearly every user", len(lines))
	}
	if strings.Contains(r.stdout, "400 (") {
		t.Error("progress went to standard output")
	}
	if !summaryTable.MatchString(r.stdout) {
		t.Errorf("no summary table at the end:\n%s", lastLines(r.stdout, 8))
	}
}

// TestMigrate_progressQuietWhenShort: a run shorter than progressLogEvery
// prints nothing on a standard error that is not a terminal.
func TestMigrate_progressQuietWhenShort(t *testing.T) {
	_, cfg := manyUsers(t, 3)
	r := migrateCmd(noEnv, "-config", cfg, "-from", "registry", "-to", "registry-new")
	if r.code != exitOK || r.stderr != "" {
		t.Errorf("exit %d, stderr %q: want 0 and nothing", r.code, truncate(r.stderr, 200))
	}
}

// TestMigrate_progressOnATerminal: standard error on a pseudo-terminal
// shows the count, the share and the rate, redrawn in place.
func TestMigrate_progressOnATerminal(t *testing.T) {
	_, cfg := manyUsers(t, progressUsers)
	master, tty := openPTY(t)
	screen := make(chan string)
	go func() {
		b, _ := io.ReadAll(master) // until the terminal closes
		screen <- string(b)
	}()
	var stdout bytes.Buffer
	code := run(context.Background(), []string{"-config", cfg, "-from", "registry", "-to", "registry-new"},
		&stdout, tty, func(string) string { return "" })
	tty.Close()
	shown := <-screen
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stdout.String())
	}
	final := regexp.MustCompile(`\r\x1b\[Kusers: 400/400 \(100%\), [0-9]+ users/s`)
	if !final.MatchString(shown) {
		t.Errorf("the terminal did not show the final count and rate: %q", lastLines(shown, 3))
	}
	if n := strings.Count(shown, "users: "); n < 2 {
		t.Errorf("the progress line was drawn %d times, want it redrawn as users go", n)
	}
	if strings.ContainsAny(stdout.String(), "\r\033") {
		t.Error("progress went to standard output, which is not the terminal")
	}
	if !summaryTable.MatchString(stdout.String()) {
		t.Errorf("no summary table:\n%s", lastLines(stdout.String(), 8))
	}
}

// openPTY opens a pseudo-terminal pair: the master to read, the tty to write.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); tty.Close() })
	return master, tty
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
