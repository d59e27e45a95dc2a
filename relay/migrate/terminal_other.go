//go:build !linux

package migrate

import "os"

// isTerminal: progress is shown on Linux terminals only.
func isTerminal(*os.File) bool { return false }
