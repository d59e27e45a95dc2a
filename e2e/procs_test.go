//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// statFields returns the fields of /proc/<pid>/stat after the command name
// (which may hold blanks): state, ppid, …
func statFields(pid int) []string {
	if pid <= 0 {
		return nil
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
}

// findPluginPID finds the plugin process, the child of Vault whose
// executable is the plugin binary; 0 when there is none.
func findPluginPID(vaultPID int) int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fields := statFields(pid)
		if len(fields) < 2 || fields[1] != strconv.Itoa(vaultPID) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		if err == nil && filepath.Base(exe) == pluginName {
			return pid
		}
	}
	return 0
}
