package relay

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// Every call of the relay to Vault on a client's behalf goes through
// vault.call (issue 22): a second RawRequestWithContext would be a copy
// of the sequence (enter, send, close, map the refusal, read) that drifts.
func TestVaultCall_isTheOnlyRawRequest(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var at []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "RawRequest") {
				at = append(at, fset.Position(sel.Pos()).String())
			}
			return true
		})
	}
	if len(at) != 1 || !strings.HasPrefix(at[0], "plugin_call.go:") {
		t.Errorf("RawRequest* called at %v; want once, in plugin_call.go (vault.call)", at)
	}
}
