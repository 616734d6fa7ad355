package broker

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "no resource means **", in: "github.repo.read", want: "github.repo.read:**"},
		{name: "literal path", in: "github.repo.read:acme/api", want: "github.repo.read:acme/api"},
		{name: "action is lower-cased", in: "GitHub.Repo.Read:acme/api", want: "github.repo.read:acme/api"},
		{name: "resource case is kept", in: "github.repo.read:Acme/API", want: "github.repo.read:Acme/API"},
		{name: "one-segment wildcard", in: "a.b:acme/*/x", want: "a.b:acme/*/x"},
		{name: "final double wildcard", in: "a.b:acme/**", want: "a.b:acme/**"},
		{name: "colon in resource", in: "db.read:orders:2024", want: "db.read:orders:2024"},
		{name: "empty", in: "", wantErr: true},
		{name: "empty resource", in: "a.b:", wantErr: true},
		{name: "empty segment", in: "a.b:acme//api", wantErr: true},
		{name: "trailing slash", in: "a.b:acme/", wantErr: true},
		{name: "leading slash", in: "a.b:/acme", wantErr: true},
		{name: "dot-dot segment", in: "a.b:acme/api/../b", wantErr: true},
		{name: "dot segment", in: "a.b:acme/./api", wantErr: true},
		{name: "percent encoding", in: "a.b:acme/%2e%2e", wantErr: true},
		{name: "white space", in: "a.b:acme/ api", wantErr: true},
		{name: "backslash", in: "a.b:acme\\api", wantErr: true},
		{name: "non-ASCII confusable", in: "a.b:аcme/api", wantErr: true},
		{name: "non-ASCII action", in: "gіthub.repo.read", wantErr: true},
		{name: "** not last", in: "a.b:acme/**/x", wantErr: true},
		{name: "partial wildcard", in: "a.b:acme/api*", wantErr: true},
		{name: "wildcard action", in: "*:acme", wantErr: true},
		{name: "empty action part", in: "a..b:acme", wantErr: true},
		{name: "too long", in: "a.b:" + strings.Repeat("x", MaxScopeLen), wantErr: true},
		{name: "NUL byte", in: "a.b:acme\x00", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScope(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseScope(%q) = %v, want invalid_scope", tt.in, got)
				}
				if CodeOf(err) != "invalid_scope" {
					t.Fatalf("code = %q, want invalid_scope", CodeOf(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseScope(%q): %v", tt.in, err)
			}
			if got.String() != tt.want {
				t.Fatalf("ParseScope(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := ParseScope(got.String())
			if err != nil || again.String() != got.String() {
				t.Fatalf("canonical form is not a fixed point: %q -> %q, %v", got, again, err)
			}
		})
	}
}

func TestScopeCoveredBy(t *testing.T) {
	tests := []struct {
		name, a, b string
		want       bool
	}{
		{"equal literal", "r.read:acme/api", "r.read:acme/api", true},
		{"literal under **", "r.read:acme/api", "r.read:acme/**", true},
		{"deep literal under **", "r.read:acme/api/x/y", "r.read:acme/**", true},
		{"** does not cover its own prefix", "r.read:acme", "r.read:acme/**", false},
		{"prefix trick: sibling with shared prefix", "r.read:acme/api-x", "r.read:acme/api", false},
		{"prefix trick: org with shared prefix", "r.read:acme-evil/api", "r.read:acme/**", false},
		{"child of a literal", "r.read:acme/api/x", "r.read:acme/api", false},
		{"case variant", "r.read:Acme/api", "r.read:acme/**", false},
		{"wildcard widening: ** vs literal", "r.read:acme/**", "r.read:acme/api", false},
		{"wildcard widening: * vs literal", "r.read:acme/*", "r.read:acme/api", false},
		{"wildcard widening: ** vs *", "r.read:acme/**", "r.read:acme/*", false},
		{"* under *", "r.read:acme/*", "r.read:acme/*", true},
		{"literal under *", "r.read:acme/api", "r.read:acme/*", true},
		{"* is one segment only", "r.read:acme/api/x", "r.read:acme/*", false},
		{"* under **", "r.read:acme/*/x", "r.read:acme/**", true},
		{"everything under everything", "r.read", "r.read", true},
		{"everything not under a subtree", "r.read", "r.read:acme/**", false},
		{"subtree under everything", "r.read:acme/**", "r.read", true},
		{"other action", "r.write:acme/api", "r.read:acme/**", false},
		{"action prefix", "r.read.all:acme/api", "r.read:acme/**", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := MustParseScope(tt.a), MustParseScope(tt.b)
			if got := a.CoveredBy(b); got != tt.want {
				t.Fatalf("%s ⊆ %s = %v, want %v", a, b, got, tt.want)
			}
		})
	}
}

// concrete lists concrete resources that a pattern matches, using the
// given literal alphabet for wildcards and depths up to 3.
func concrete(p []string, alphabet []string) [][]string {
	var out [][]string
	var walk func(i int, acc []string)
	walk = func(i int, acc []string) {
		if i == len(p) {
			out = append(out, append([]string(nil), acc...))
			return
		}
		switch p[i] {
		case "*":
			for _, a := range alphabet {
				walk(i+1, append(acc, a))
			}
		case "**":
			for depth := 1; depth <= 2; depth++ {
				var rec func(d int, acc2 []string)
				rec = func(d int, acc2 []string) {
					if d == 0 {
						out = append(out, append([]string(nil), acc2...))
						return
					}
					for _, a := range alphabet {
						rec(d-1, append(acc2, a))
					}
				}
				rec(depth, acc)
			}
		default:
			walk(i+1, append(acc, p[i]))
		}
	}
	walk(0, nil)
	return out
}

// TestCoveredByImpliesEveryInstanceCovered is the containment property:
// if a ⊆ b then every concrete path matched by a is matched by b, and if
// some concrete path of a escapes b then a ⊄ b.
func TestCoveredByImpliesEveryInstanceCovered(t *testing.T) {
	segs := []string{"x", "y", "*", "**"}
	alphabet := []string{"x", "y", "z"}
	var patterns [][]string
	var gen func(acc []string)
	gen = func(acc []string) {
		if len(acc) > 0 {
			patterns = append(patterns, append([]string(nil), acc...))
		}
		if len(acc) == 3 || (len(acc) > 0 && acc[len(acc)-1] == "**") {
			return
		}
		for _, s := range segs {
			gen(append(acc, s))
		}
	}
	gen(nil)
	for _, a := range patterns {
		for _, b := range patterns {
			sa, sb := Scope{Action: "r", Resource: a}, Scope{Action: "r", Resource: b}
			all := true
			re := patternRegexp(b)
			for _, c := range concrete(a, alphabet) {
				if !re.MatchString(strings.Join(c, "/")) {
					all = false
					break
				}
			}
			if got := sa.CoveredBy(sb); got && !all {
				t.Errorf("%s ⊆ %s claimed, but an instance escapes", sa, sb)
			} else if !got && all && !hasDeepWildcard(a) {
				t.Errorf("%s ⊆ %s denied, but every instance is covered", sa, sb)
			}
		}
	}
}

// patternRegexp is an independent matcher for a resource pattern, so the
// property does not check CoveredBy against itself.
func patternRegexp(p []string) *regexp.Regexp {
	parts := make([]string, len(p))
	for i, seg := range p {
		switch seg {
		case "*":
			parts[i] = `[^/]+`
		case "**":
			parts[i] = `[^/]+(?:/[^/]+)*`
		default:
			parts[i] = regexp.QuoteMeta(seg)
		}
	}
	return regexp.MustCompile(`^` + strings.Join(parts, "/") + `$`)
}

func hasDeepWildcard(p []string) bool { return len(p) > 0 && p[len(p)-1] == "**" }

func TestParseScopesDeduplicatesAndSorts(t *testing.T) {
	got, err := ParseScopes([]string{"b.x:1", "A.x:1", "a.x:1", "b.x:1"})
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(got.Strings(), " "); s != "a.x:1 b.x:1" {
		t.Fatalf("got %q", s)
	}
	if _, err := ParseScopes(nil); CodeOf(err) != "invalid_scope" {
		t.Fatalf("empty list: %v", err)
	}
	if _, err := ParseScopes([]string{"a.x:1", "bad scope"}); CodeOf(err) != "invalid_scope" {
		t.Fatalf("one bad scope must refuse the whole list: %v", err)
	}
}

// TestScopeVectors runs the containment vectors that the SDKs share
// (testdata/scope_vectors.json) through ParseScope and CoveredBy: the file
// is Errand's own answer, so an SDK that passes it contains as Errand does.
func TestScopeVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/scope_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Covered []struct {
			Name, Requested, Granted string
			Covered                  bool
		}
		Invalid []string
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Covered) < 20 || len(v.Invalid) < 10 {
		t.Fatalf("%d containment and %d invalid vectors: the file lost cases", len(v.Covered), len(v.Invalid))
	}
	for _, c := range v.Covered {
		a, err := ParseScope(c.Requested)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		g, err := ParseScope(c.Granted)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if got := a.CoveredBy(g); got != c.Covered {
			t.Errorf("%s: %s ⊆ %s = %v, the vectors say %v", c.Name, c.Requested, c.Granted, got, c.Covered)
		}
	}
	for _, s := range v.Invalid {
		if _, err := ParseScope(s); err == nil {
			t.Errorf("ParseScope(%q) accepted a scope the vectors call invalid", s)
		}
	}
}
