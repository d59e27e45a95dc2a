package relay

import (
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// LogFile is log.file, reopened on SIGHUP so that logrotate can move it.
type LogFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// OpenLogFile opens (creating, appending) the log file.
func OpenLogFile(path string) (*LogFile, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &LogFile{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
}

// Write implements io.Writer.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path again and closes the old file. On error the old
// file stays in use.
func (l *LogFile) Reopen() error {
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// Close closes the file.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// NewLogger makes the relay's logger at log.level, as text, writing to out.
func NewLogger(level string, out io.Writer) hclog.Logger {
	return NewConfiguredLogger(LogConfig{Level: level}, out)
}

// NewConfiguredLogger makes the relay's logger from the log section: its
// level, and its format (log.format json: hclog's JSON, one object a line
// with @level, @message, @timestamp and the fields, as Vault's plugins log).
func NewConfiguredLogger(c LogConfig, out io.Writer) hclog.Logger {
	lvl := hclog.LevelFromString(c.Level)
	if lvl == hclog.NoLevel {
		lvl = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "godoauth-relay",
		Level:      lvl,
		Output:     out,
		JSONFormat: strings.EqualFold(c.Format, "json"),
	})
}

// throttle lets a loud message through at most once per interval and
// counts what it held back, so a Vault outage under load logs its cause
// clearly without flooding the log.
type throttle struct {
	interval time.Duration
	next     atomic.Int64 // unix nanoseconds
	held     atomic.Int64
}

// allow reports whether to log now, and how many were held back since.
func (t *throttle) allow(now time.Time) (bool, int64) {
	next := t.next.Load()
	if now.UnixNano() < next || !t.next.CompareAndSwap(next, now.Add(t.interval).UnixNano()) {
		t.held.Add(1)
		return false, 0
	}
	return true, t.held.Swap(0)
}
