package storetest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"sort"
	"testing"

	"github.com/errandhq/errand/broker"
)

// The suite calls every method of the storage port: a store cannot pass
// it while one of its methods goes unchecked, and a method added to the
// port without a test here fails this test. (A store missing a method
// does not build against the suite at all: Store embeds the port.)
func TestSuiteCallsEveryPortMethod(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	called := map[string]bool{}
	for name, pkg := range pkgs {
		if name != "storetest" {
			continue
		}
		for fname, f := range pkg.Files {
			if fname == "coverage_test.go" {
				continue
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if sel, ok := c.Fun.(*ast.SelectorExpr); ok {
						called[sel.Sel.Name] = true
					}
				}
				return true
			})
		}
	}
	var missing []string
	for _, port := range []reflect.Type{
		reflect.TypeFor[broker.Store](), reflect.TypeFor[broker.Tx](), reflect.TypeFor[broker.KeyStore](),
	} {
		for i := range port.NumMethod() {
			if m := port.Method(i).Name; !called[m] {
				missing = append(missing, port.Name()+"."+m)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("the suite never calls %v", missing)
	}
}
