package broker

import "testing"

// TestR06DeniedOverlapIsContainmentBothWays: a request overlaps a denial
// when one of its scopes contains, or is contained in, a denied scope;
// string prefixes and neighbours do not overlap.
func TestR06DeniedOverlapIsContainmentBothWays(t *testing.T) {
	denied := []StepUp{{ID: "apr_wide", Scopes: Scopes{MustParseScope("github.pr.write:acme/web/*")}},
		{ID: "apr_exact", Scopes: Scopes{MustParseScope("github.repo.read:acme/api")}}}
	for _, tt := range []struct {
		scopes []string
		want   string
	}{
		{[]string{"github.pr.write:acme/web/x"}, "apr_wide"}, // narrower than a denied pattern
		{[]string{"github.pr.write:acme/**"}, "apr_wide"},    // wider
		{[]string{"github.pr.write:acme/web/*"}, "apr_wide"}, // the same
		{[]string{"github.repo.read:acme/*"}, "apr_exact"},   // covers the denied resource
		{[]string{"github.repo.read"}, "apr_exact"},          // every resource
		{[]string{"github.pr.write:acme/webx/y"}, ""},        // a neighbour, not a prefix match
		{[]string{"github.repo.read:acme/api-evil"}, ""},     // likewise
		{[]string{"github.pr.write:acme/web"}, ""},           // the parent of one segment's pattern
		{[]string{"github.repo.read:acme/web/x"}, ""},        // another action
		{[]string{"github.repo.read:acme/x", "github.pr.write:acme/web/y"}, "apr_wide"},
	} {
		scopes, err := ParseScopes(tt.scopes)
		if err != nil {
			t.Fatal(err)
		}
		u, ok := deniedOverlap(denied, scopes)
		if got := map[bool]string{true: u.ID}[ok]; got != tt.want {
			t.Errorf("%v overlaps %q, want %q", tt.scopes, got, tt.want)
		}
	}
}
