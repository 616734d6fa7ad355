package policy

import (
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The checks of a Rego set look at the string literals a policy compares
// directly with an input key (==, !=, =, in), which is how the README's
// rules are written: input.action == "github.pr.write",
// input.action in {"a", "b"}, "<issuer>#eng" in input.user.groups,
// "acme/infra/**" in input.resource.ancestors. A literal reached through
// a helper variable or rule is not seen; the Cedar engine, whose
// references are typed entities, sees them all.

// CheckActions refuses a set comparing input.action with an action that
// is not in the catalog: such a rule would never match, and a deny on it
// would never deny.
func (s *RegoSet) CheckActions(known func(string) bool) error {
	return s.checkLiterals([]string{"input.action"}, "action", unknownAction(known))
}

// CheckGroups refuses a set comparing input.user.groups with a group
// policies are never shown (Set.CheckGroups).
func (s *RegoSet) CheckGroups(userIssuers []string) error {
	return s.checkLiterals([]string{"input.user.groups"}, "group", unshownGroup(userIssuers, ""))
}

// CheckLowerCaseResources refuses a set comparing a resource key with a
// string holding an upper-case letter (Set.CheckLowerCaseResources).
func (s *RegoSet) CheckLowerCaseResources() error {
	return s.checkLiterals([]string{"input.resource.path", "input.resource.head", "input.resource.ancestors"}, "resource", upperCaseResource)
}

// checkLiterals calls bad on every string compared with one of the input
// keys, and returns the first complaint with its file and line.
func (s *RegoSet) checkLiterals(keys []string, what string, bad func(string) string) error {
	var files []string
	for f := range s.modules {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		var found error
		ast.WalkExprs(s.modules[f], func(e *ast.Expr) bool {
			if found != nil || !e.IsCall() {
				return found != nil
			}
			terms := e.Terms.([]*ast.Term)
			op := e.Operator().String()
			if len(terms) != 3 {
				return false
			}
			a, b := terms[1], terms[2]
			var lits []string
			switch op {
			case ast.Equality.Name, ast.Equal.Name, ast.NotEqual.Name:
				if isKey(a, keys) {
					lits = stringLit(b)
				} else if isKey(b, keys) {
					lits = stringLit(a)
				}
			case ast.Member.Name:
				if isKey(a, keys) {
					lits = elements(b)
				} else if isKey(b, keys) {
					lits = stringLit(a)
				}
			}
			for _, l := range lits {
				if why := bad(l); why != "" {
					found = fmt.Errorf("policies: %s:%d: compares %s with the %s %q, %s", f, e.Location.Row, keyOf(a, b, keys), what, l, why)
					return true
				}
			}
			return false
		})
		if found != nil {
			return found
		}
	}
	return nil
}

// isKey reports whether t is a reference to one of keys, or to an element
// of one (input.user.groups[_]).
func isKey(t *ast.Term, keys []string) bool {
	ref, ok := t.Value.(ast.Ref)
	if !ok {
		return false
	}
	g := ref.GroundPrefix().String()
	for _, k := range keys {
		if g == k {
			return true
		}
	}
	return false
}

func keyOf(a, b *ast.Term, keys []string) string {
	if isKey(a, keys) {
		return a.Value.(ast.Ref).GroundPrefix().String()
	}
	return b.Value.(ast.Ref).GroundPrefix().String()
}

// stringLit is t's value when t is a string literal.
func stringLit(t *ast.Term) []string {
	if s, ok := t.Value.(ast.String); ok {
		return []string{string(s)}
	}
	return nil
}

// elements are the string literals of a set or array literal.
func elements(t *ast.Term) []string {
	var out []string
	add := func(x *ast.Term) { out = append(out, stringLit(x)...) }
	switch v := t.Value.(type) {
	case ast.Set:
		v.Foreach(add)
	case *ast.Array:
		v.Foreach(add)
	}
	return out
}
