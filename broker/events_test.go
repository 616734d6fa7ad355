package broker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Every event type the broker declares is in EventTypes (an auditor can
// filter on it), once.
func TestEventTypesListsEveryEvent(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				vs, ok := n.(*ast.ValueSpec)
				if !ok || len(vs.Names) != 1 || len(vs.Values) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Event") {
					return true
				}
				if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					declared = append(declared, v)
				}
				return true
			})
		}
	}
	if len(declared) < 19 {
		t.Fatalf("found only %d event constants: %v", len(declared), declared)
	}
	for _, e := range declared {
		if !slices.Contains(EventTypes, e) {
			t.Errorf("event type %q is not in EventTypes", e)
		}
	}
	seen := map[string]bool{}
	for _, e := range EventTypes {
		if seen[e] {
			t.Errorf("%q listed twice", e)
		}
		seen[e] = true
	}
}
