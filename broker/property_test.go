package broker_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/policy"
)

// universe holds case variants (A/**, a/C, …) of its paths: at an
// audience that compares resources case-insensitively they are the same
// resources, and at one that does not, other ones (H06).
var universe = []string{
	"r.read", "r.read:a/**", "r.read:a/*", "r.read:a/b", "r.read:a/b/**", "r.read:a/c", "r.read:a/*/d",
	"r.read:b/**", "r.write:a/**", "r.write:a/b",
	"r.read:A/**", "r.read:a/C", "r.read:A/c/**", "r.read:A/*", "r.write:A/B",
}

func pick(rng *rand.Rand, n int) []string {
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, universe[rng.IntN(len(universe))])
	}
	return out
}

// resourceRegexp matches the concrete requests sc allows; fold matches
// them as a case-insensitive resource server does.
func resourceRegexp(sc broker.Scope, fold bool) *regexp.Regexp {
	parts := make([]string, len(sc.Resource))
	for i, seg := range sc.Resource {
		switch seg {
		case "*":
			parts[i] = `[^/]+`
		case "**":
			parts[i] = `[^/]+(?:/[^/]+)*`
		default:
			parts[i] = regexp.QuoteMeta(seg)
		}
	}
	flags := ""
	if fold {
		flags = "(?i)"
	}
	return regexp.MustCompile(flags + `^` + sc.Action + `:` + strings.Join(parts, "/") + `$`)
}

// instances are concrete action:path strings a scope matches, over a
// small alphabet.
func instances(sc broker.Scope) []string {
	paths := []string{""}
	for _, seg := range sc.Resource {
		var next []string
		for _, p := range paths {
			pre := p
			if pre != "" {
				pre += "/"
			}
			switch seg {
			case "*":
				for _, x := range []string{"a", "b", "c", "d"} {
					next = append(next, pre+x)
				}
			case "**":
				for _, x := range []string{"a", "b", "c", "d", "a/b", "b/d"} {
					next = append(next, pre+x)
				}
			default:
				next = append(next, pre+seg)
			}
		}
		paths = next
	}
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = sc.Action + ":" + p
	}
	return out
}

func coveredByAny(inst string, set []string, fold bool) bool {
	for _, s := range set {
		if resourceRegexp(broker.MustParseScope(s), fold).MatchString(inst) {
			return true
		}
	}
	return false
}

// TestPropertyIssuedWithinApprovedWithinRequestedAndGrants runs random
// (requested, grants, approval, mint) quadruples through the real service
// and checks, with an independent matcher, that every concrete request a
// minted token allows was requested by the agent and granted to the user
// — as the audience sees requests: at a case-insensitive one, A/b is a/b.
func TestPropertyIssuedWithinApprovedWithinRequestedAndGrants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	agent := broker.Principal{Issuer: "https://agents", Subject: "bot", Kind: broker.KindAgent}
	approvals, mints := 0, 0
	fe := newFSMEnv(t) // one store; each iteration its own catalog and service
	for i := 0; i < 500; i++ {
		grants, fold := pick(rng, 1+rng.IntN(3)), rng.IntN(2) == 0
		e := fe.withCatalog(t, propertyCatalog(t, grants, fold))
		user := broker.Principal{Issuer: "https://users", Subject: "alice", Kind: broker.KindUser, Groups: []string{"g"}}
		requested, approved, minted := pick(rng, 1+rng.IntN(3)), pick(rng, 1+rng.IntN(2)), pick(rng, 1)
		if rng.IntN(3) == 0 {
			minted = approved[:1] // often mint exactly what was approved
		}
		task, err := e.CreateTask(ctx, agent, broker.CreateTaskRequest{OnBehalfOf: "alice", Goal: "g",
			Scopes: requested, Audiences: []string{"https://rs"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Approve(ctx, user, task.ID, broker.ApproveRequest{Scopes: approved})
		if err != nil {
			continue
		}
		approvals++
		for _, a := range approved {
			for _, inst := range instances(broker.MustParseScope(a)) {
				if !coveredByAny(inst, requested, fold) || !coveredByAny(inst, grants, fold) {
					t.Fatalf("approved %v ⊄ requested %v ∩ grants %v (instance %s, case-insensitive %v)", approved, requested, grants, inst, fold)
				}
			}
		}
		if _, err := e.Mint(ctx, agent, task.ID, broker.MintRequest{Scopes: minted, Audience: "https://rs"}); err != nil {
			continue
		}
		mints++
		for _, inst := range instances(broker.MustParseScope(minted[0])) {
			if !coveredByAny(inst, approved, fold) || !coveredByAny(inst, requested, fold) || !coveredByAny(inst, grants, fold) {
				t.Fatalf("minted %v escapes approved %v / requested %v / grants %v at %s (case-insensitive %v)", minted, approved, requested, grants, inst, fold)
			}
		}
	}
	if approvals < 40 || mints < 10 {
		t.Fatalf("only %d approvals and %d mints: the generator does not exercise the success path", approvals, mints)
	}
	t.Logf("%d approvals, %d mints checked", approvals, mints)
}

// TestPropertyPolicyProtectsAPathAgainstEveryScope: with a policy that
// protects the path a/c as the README says, in Cedar and in Rego, no token
// is ever minted whose scope reaches a/c, whatever was requested, granted
// and approved; and, with an independent matcher, everything minted stays
// within requested ∩ grants (A02: minted ⊆ approved ⊆ grants ∩ policy).
// At an audience that compares resources case-insensitively, A/C and a/C
// are a/c and never minted either (H06); at one that does not, they are
// other resources, which the rule leaves alone.
func TestPropertyPolicyProtectsAPathAgainstEveryScope(t *testing.T) {
	for _, c := range []struct{ engine, file, text string }{
		{policy.EngineCedar, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("protect-a-c") forbid (principal, action, resource)
when { context.operation == "mint" }
when { resource.head == "a/c" || resource in Resource::"a/c/**" || (resource.wildcard && ["", "a"].contains(resource.head)) };`},
		{policy.EngineOPA, "p.rego", `package errand

allow contains "allow"

deny contains "protect-a-c" if {
	input.context.operation == "mint"
	reaches_a_c
}

reaches_a_c if input.resource.head == "a/c"
reaches_a_c if "a/c/**" in input.resource.ancestors
reaches_a_c if {
	input.resource.wildcard
	input.resource.head in {"", "a"}
}`},
	} {
		t.Run(c.engine, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.text), 0o600); err != nil {
				t.Fatal(err)
			}
			pol, err := policy.Source{Engine: c.engine, Patterns: []string{filepath.Join(dir, c.file)}}.Load()
			if err != nil {
				t.Fatal(err)
			}
			propertyPolicyProtectsAPath(t, pol)
		})
	}
}

func propertyPolicyProtectsAPath(t *testing.T, pol broker.Policy) {
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	agent := broker.Principal{Issuer: "https://agents", Subject: "bot", Kind: broker.KindAgent}
	user := broker.Principal{Issuer: "https://users", Subject: "alice", Kind: broker.KindUser, Groups: []string{"g"}}
	mints, denied := 0, 0
	fe := newFSMEnv(t) // one store; each iteration its own catalog and service
	for i := 0; i < 400; i++ {
		grants, fold := pick(rng, 1+rng.IntN(3)), rng.IntN(2) == 0
		e := fe.withPolicy(t, propertyCatalog(t, grants, fold), pol)
		requested, minted := pick(rng, 1+rng.IntN(2)), pick(rng, 1)
		if rng.IntN(2) == 0 {
			minted = requested[:1] // often mint exactly what was asked
		}
		// The policy speaks at mint only: tasks and approvals may be as
		// wide as the grants allow, and the mint is what must hold.
		task, err := e.CreateTask(ctx, agent, broker.CreateTaskRequest{OnBehalfOf: "alice", Goal: "g",
			Scopes: requested, Audiences: []string{"https://rs"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Approve(ctx, user, task.ID, broker.ApproveRequest{}); err != nil {
			continue
		}
		if _, err := e.Mint(ctx, agent, task.ID, broker.MintRequest{Scopes: minted, Audience: "https://rs"}); err != nil {
			if broker.CodeOf(err) == "policy_denied" {
				denied++
			}
			continue
		}
		mints++
		for _, inst := range instances(broker.MustParseScope(minted[0])) {
			seen := inst
			if fold {
				seen = strings.ToLower(inst)
			}
			if strings.HasSuffix(seen, ":a/c") || strings.Contains(seen, ":a/c/") {
				t.Fatalf("minted %v reaches the protected a/c (%s, case-insensitive %v)", minted, inst, fold)
			}
			if !coveredByAny(inst, requested, fold) || !coveredByAny(inst, grants, fold) {
				t.Fatalf("minted %v escapes requested %v / grants %v at %s (case-insensitive %v)", minted, requested, grants, inst, fold)
			}
		}
	}
	if mints < 10 || denied < 10 {
		t.Fatalf("only %d mints and %d policy denials: the generator does not exercise both paths", mints, denied)
	}
	t.Logf("%d mints checked, %d mints denied by the policy", mints, denied)
}

// propertyCatalog grants grants to group g, for the audience https://rs,
// which compares resources case-insensitively when fold is set.
func propertyCatalog(t *testing.T, grants []string, fold bool) *broker.Catalog {
	gs, err := broker.ParseScopes(grants)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := broker.NewCatalog([]broker.Action{
		{Name: "r.read", Class: broker.ClassRead, Risk: broker.RiskLow},
		{Name: "r.write", Class: broker.ClassWrite, Risk: broker.RiskLow},
	}, []broker.Audience{{URL: "https://rs", CaseInsensitive: fold}}, []broker.Grant{{Group: "g", Scopes: gs}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}
