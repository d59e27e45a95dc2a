// Package docs holds the operator documents; its test checks that the
// threat model's claims name tests that exist.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	testNameRE = regexp.MustCompile(`\b(?:Test|Fuzz)[A-Za-z0-9_]+\*?|\b(?:Test|Fuzz)[A-Za-z0-9]*_\*`)
	testFuncRE = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
)

// TestSecurity_everyClaimNamesATestThatExists: each row of
// SECURITY.md's tables names at least one test (or says "—": nothing
// to test), and every test it names (TestX_* for a family) is in the code.
func TestSecurity_everyClaimNamesATestThatExists(t *testing.T) {
	checkClaims(t, "SECURITY.md", "shown by")
}

// TestFaults_everyPromiseNamesATestThatExists: the same for FAULTS.md,
// whose rows name their test in the last column.
func TestFaults_everyPromiseNamesATestThatExists(t *testing.T) {
	checkClaims(t, "FAULTS.md", "test")
}

// checkClaims checks the document's tables (the last column, headed
// header, names the tests) and every test named elsewhere in it.
func checkClaims(t *testing.T, file, header string) {
	t.Helper()
	doc, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	have := testFuncs(t, "..")
	for i, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		shown := cells[len(cells)-1]
		if shown == header {
			continue
		}
		names := testNameRE.FindAllString(shown, -1)
		if len(names) == 0 && shown != "—" {
			t.Errorf("%s:%d: the claim names no test: %q", file, i+1, shown)
		}
		for _, name := range names {
			if !exists(have, name) {
				t.Errorf("%s:%d: %s names no test in the code", file, i+1, name)
			}
		}
	}
	for i, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "| ") {
			continue
		}
		for _, name := range testNameRE.FindAllString(line, -1) {
			if !exists(have, name) {
				t.Errorf("%s:%d: %s names no test in the code", file, i+1, name)
			}
		}
	}
}

// testFuncs returns the names of the Test and Fuzz functions under root.
func testFuncs(t *testing.T, root string) map[string]bool {
	t.Helper()
	have := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || d.Name() == "dist" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range testFuncRE.FindAllStringSubmatch(string(src), -1) {
			have[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(have) < 100 {
		t.Fatalf("found only %d tests under %s", len(have), root)
	}
	return have
}

// exists reports whether name is a test, or, ending in *, the prefix of one.
func exists(have map[string]bool, name string) bool {
	if prefix, ok := strings.CutSuffix(name, "*"); ok {
		for h := range have {
			if strings.HasPrefix(h, prefix) {
				return true
			}
		}
		return false
	}
	return have[name]
}
