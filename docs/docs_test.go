// Package docs holds the documents by audience; its tests check that the
// threat model's claims name tests that exist, that the README stays short
// and links every document, and that relative links resolve.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
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

// maxReadmeLines keeps the README a five-minute read (issue 21); the rest
// lives in docs/ by audience.
const maxReadmeLines = 300

// linkRE is a Markdown link or image: [text](target).
var linkRE = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)\)`)

// TestReadme_shortAndLinksEveryDocument: the README is under 300 lines and
// links every document in docs/ (so a section moved there is reachable).
func TestReadme_shortAndLinksEveryDocument(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(readme), "\n"); n >= maxReadmeLines {
		t.Errorf("README.md has %d lines, want fewer than %d: move detail to docs/", n, maxReadmeLines)
	}
	linked := map[string]bool{}
	for _, m := range linkRE.FindAllStringSubmatch(string(readme), -1) {
		target, _, _ := strings.Cut(m[1], "#")
		linked[filepath.Clean(target)] = true
	}
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if !linked[filepath.Join("docs", d)] {
			t.Errorf("README.md does not link docs/%s", d)
		}
	}
}

// TestDocs_relativeLinksResolve: every relative link of the README, of
// docs/*.md and of CHANGELOG.md names a file that exists and, with a
// #fragment into a Markdown file, a heading of that file.
func TestDocs_relativeLinksResolve(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md", "../CHANGELOG.md")
	checked := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(text), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, fragment, _ := strings.Cut(link, "#")
			path := f
			if target != "" {
				path = filepath.Join(filepath.Dir(f), target)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %s: %v", f, link, err)
				continue
			}
			checked++
			if fragment != "" && strings.HasSuffix(path, ".md") && !anchors(t, path)[fragment] {
				t.Errorf("%s: link %s: %s has no heading #%s", f, link, path, fragment)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d links", checked)
	}
}

// anchors are the fragments GitHub makes of a Markdown file's headings:
// lower case, punctuation dropped, spaces as hyphens.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	inCode := false
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(heading) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}
