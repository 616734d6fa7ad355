package broker

import (
	"strings"
	"testing"
)

// FuzzScopeCanon: canonicalisation is idempotent, the canonical action is
// lower case, containment is reflexive, a scope that passes the hard-block
// check is of a grantable class and on no deny pattern, and containment
// implies that every concrete instance is covered (checked with an
// independent matcher).
func FuzzScopeCanon(f *testing.F) {
	for _, s := range []string{"github.repo.read:acme/**", "AWS.IAM.CreateAccessKey", "a.b:x/*/y", "a.b:%2e%2e", "a.b:a//b", "a.b:аcme", "okta.user.resetPassword:x"} {
		f.Add(s, "github.repo.read:acme/*")
	}
	cat := fuzzCatalog(f)
	f.Fuzz(func(t *testing.T, a, b string) {
		sa, err := ParseScope(a)
		if err != nil {
			if CodeOf(err) != "invalid_scope" {
				t.Fatalf("ParseScope(%q) failed with code %q", a, CodeOf(err))
			}
			return
		}
		again, err := ParseScope(sa.String())
		if err != nil || again.String() != sa.String() {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", a, sa, again, err)
		}
		if sa.Action != strings.ToLower(sa.Action) {
			t.Fatalf("action not canonical: %q", sa.Action)
		}
		if !sa.CoveredBy(sa) {
			t.Fatalf("%s does not cover itself", sa)
		}
		if cat.CheckGrantable(Scopes{sa}) == nil {
			act, _ := cat.Action(sa.Action)
			if act.Class.Blocked() {
				t.Fatalf("blocked class passed: %s", sa)
			}
			if p, hit := matchAny(BuiltinDenyList, sa.Action); hit {
				t.Fatalf("deny-listed action %s passed (pattern %s)", sa, p)
			}
		}
		sb, err := ParseScope(b)
		if err != nil || !sa.CoveredBy(sb) || len(sa.Resource) > 6 {
			return // enumerating instances of longer patterns is exponential
		}
		re := patternRegexp(sb.Resource)
		for _, c := range concrete(sa.Resource, []string{"x", "y", "z"}) {
			if !re.MatchString(strings.Join(c, "/")) {
				t.Fatalf("%s ⊆ %s claimed, but %s escapes", sa, sb, strings.Join(c, "/"))
			}
		}
	})
}

func fuzzCatalog(f *testing.F) *Catalog {
	c, err := NewCatalog([]Action{
		{Name: "github.repo.read", Class: ClassRead, Risk: RiskLow},
		{Name: "aws.iam.createaccesskey", Class: ClassCredential, Risk: RiskHigh},
		{Name: "okta.user.resetpassword", Class: ClassIdentity, Risk: RiskHigh},
		{Name: "a.b", Class: ClassWrite, Risk: RiskLow},
	}, nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	return c
}
