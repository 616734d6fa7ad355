package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// engines are the two engines every conformance row runs against.
var engines = []string{EngineCedar, EngineOPA}

// conformanceSet loads the pair of equivalent policy sets named set, one
// per engine: testdata/conformance/<set>/policies.{cedar,rego}, or for
// "readme" the Cedar and Rego examples of README.md's policy section.
func conformanceSet(t *testing.T, set string) map[string]Set {
	t.Helper()
	dir := filepath.Join("testdata", "conformance", set)
	if set == "readme" {
		dir = readmeExamples(t)
	}
	out := map[string]Set{}
	for _, eng := range engines {
		ext := map[string]string{EngineCedar: "*.cedar", EngineOPA: "*.rego"}[eng]
		s, err := Source{Engine: eng, Patterns: []string{filepath.Join(dir, ext)}}.Load()
		if err != nil {
			t.Fatalf("%s, %s: %v", set, eng, err)
		}
		if s.Engine() != eng {
			t.Fatalf("%s: loaded %s for %s", set, s.Engine(), eng)
		}
		out[eng] = s
	}
	return out
}

var fence = regexp.MustCompile("(?s)```(cedar|rego)\n(.*?)```")

// readmeExamples writes the ```cedar and ```rego blocks of README.md's
// policy section to a directory, one file a block, so that the examples
// the README shows are the ones the suite runs.
func readmeExamples(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "## Policies (Cedar or Rego)")
	if start < 0 {
		t.Fatal("README.md has no section \"Policies (Cedar or Rego)\"")
	}
	section := text[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	dir := t.TempDir()
	n := map[string]int{}
	for _, m := range fence.FindAllStringSubmatch(section, -1) {
		n[m[1]]++
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("readme-%d.%s", n[m[1]], m[1])), []byte(m[2]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if n["cedar"] < 2 || n["cedar"] != n["rego"] {
		t.Fatalf("README's policy section shows %d Cedar and %d Rego examples: each example in both languages", n["cedar"], n["rego"])
	}
	return dir
}

type conformanceRow struct {
	name     string
	set      string
	mod      func(*broker.PolicyRequest)
	effect   broker.Effect
	policies []string // the deciding ids; nil with broken
	reason   string   // a substring of the reasons, when set
	// broken rows are evaluation errors: both engines deny and say why,
	// and each names the rule in its own way (Cedar its id, Rego its
	// file:line).
	broken bool
}

func conformanceRows() []conformanceRow {
	prodWrite := func(r *broker.PolicyRequest) {
		r.Environment, r.Class, r.Action = "prod", broker.ClassWrite, "github.pr.write"
	}
	refund := func(groups ...string) func(*broker.PolicyRequest) {
		return func(r *broker.PolicyRequest) {
			r.Action, r.Class, r.Groups = "payments.refund", broker.ClassWrite, groups
		}
	}
	at := func(path string) func(*broker.PolicyRequest) {
		return func(r *broker.PolicyRequest) { r.Resource = path }
	}
	partner := broker.Ref{Issuer: "https://login.partner.example", Subject: "alice"}
	group := func(user broker.Ref, action string, several bool) func(*broker.PolicyRequest) {
		return func(r *broker.PolicyRequest) {
			r.User, r.Action, r.Class, r.Groups, r.SeveralUserIssuers = user, action, broker.ClassWrite, []string{"payments"}, several
		}
	}
	tool := func(v string) func(*broker.PolicyRequest) { return func(r *broker.PolicyRequest) { r.Tool = v } }
	allow, deny, step := broker.EffectAllow, broker.EffectDeny, broker.EffectStepUp
	return []conformanceRow{
		// The README's examples.
		{"readme: a low-risk read is allowed", "readme", nil, allow, []string{"allow-agents"}, "", false},
		{"readme: the shell tool is denied", "readme", tool("shell"), deny, []string{"deny-shell-tool"}, "", false},
		{"readme: a prod write steps up", "readme", prodWrite, step, []string{"prod-writes-step-up"}, "a write to production needs your approval each time", false},
		{"readme: a hard deny beats a step-up", "readme", func(r *broker.PolicyRequest) { prodWrite(r); r.Tool = "shell" }, deny, []string{"deny-shell-tool"}, "", false},
		{"readme: a refund without the payments group", "readme", refund(), deny, []string{"payments-team-only"}, "", false},
		{"readme: a refund with the payments group", "readme", refund("payments"), allow, []string{"allow-agents"}, "", false},
		{"readme: a refund asked for at creation", "readme", func(r *broker.PolicyRequest) { refund()(r); r.Operation = broker.OpCreate }, allow, []string{"allow-agents"}, "", false},
		{"readme: acme/infra", "readme", at("acme/infra"), deny, []string{"protect-infra"}, "", false},
		{"readme: under acme/infra", "readme", at("acme/infra/x"), deny, []string{"protect-infra"}, "", false},
		{"readme: a pattern under acme/infra", "readme", at("acme/infra/*"), deny, []string{"protect-infra"}, "", false},
		{"readme: a pattern covering acme/infra", "readme", at("acme/*"), deny, []string{"protect-infra"}, "", false},
		{"readme: every resource", "readme", at("**"), deny, []string{"protect-infra"}, "", false},
		{"readme: a sibling", "readme", at("acme/api/*"), allow, []string{"allow-agents"}, "", false},
		{"readme: a prefix that is not a parent", "readme", at("acme/infra-old"), allow, []string{"allow-agents"}, "", false},
		{"readme: another owner", "readme", at("other/**"), allow, []string{"allow-agents"}, "", false},

		// Guardrails of every kind of context key.
		{"a low-risk read is allowed", "guardrails", nil, allow, []string{"allow-agents"}, "", false},
		{"deny by risk", "guardrails", func(r *broker.PolicyRequest) { r.Risk = broker.RiskHigh }, deny, []string{"deny-high-risk"}, "", false},
		{"deny by tool", "guardrails", tool("shell"), deny, []string{"deny-shell-tool"}, "", false},
		{"another tool is fine", "guardrails", tool("git"), allow, []string{"allow-agents"}, "", false},
		{"deny by dataset", "guardrails", func(r *broker.PolicyRequest) { r.Dataset = "pii/customers" }, deny, []string{"deny-pii-datasets"}, "", false},
		{"deny by tool and dataset", "guardrails", func(r *broker.PolicyRequest) { r.Tool, r.Dataset = "shell", "pii/x" }, deny, []string{"deny-pii-datasets", "deny-shell-tool"}, "", false},
		{"deny by environment", "guardrails", func(r *broker.PolicyRequest) {
			r.Environment, r.Class, r.Action = "prod", broker.ClassAdmin, "prod.deploy"
		}, deny, []string{"deny-prod-admin"}, "", false},
		{"admin outside prod is allowed", "guardrails", func(r *broker.PolicyRequest) {
			r.Class, r.Action = broker.ClassAdmin, "prod.deploy"
		}, allow, []string{"allow-agents"}, "", false},
		{"prod write steps up", "guardrails", prodWrite, step, []string{"prod-writes-step-up"}, "production", false},
		{"refund without the payments group", "guardrails", refund(), deny, []string{"payments-team-only"}, "", false},
		{"refund with the payments group", "guardrails", refund("payments"), allow, []string{"allow-agents"}, "", false},
		{"refund before the user's groups are known", "guardrails", func(r *broker.PolicyRequest) {
			refund()(r)
			r.Operation = broker.OpCreate
		}, allow, []string{"allow-agents"}, "", false},

		// Default deny.
		{"nothing permits a read", "nopermit", nil, deny, []string{}, "", false},
		{"nothing permits a prod write", "nopermit", prodWrite, deny, []string{}, "", false},

		// The model, key by key.
		{"the model's every key", "model", nil, allow, []string{"model"}, "", false},
		{"the model without the group", "model", func(r *broker.PolicyRequest) { r.Groups = nil }, deny, []string{}, "", false},
		{"the model at another time", "model", func(r *broker.PolicyRequest) { r.Time = r.Time.Add(time.Second) }, deny, []string{}, "", false},
		{"the model with DPoP", "model", func(r *broker.PolicyRequest) { r.DPoP = true }, deny, []string{}, "", false},
		{"the model of another agent", "model", func(r *broker.PolicyRequest) { r.Agent.Subject = "bot2" }, deny, []string{}, "", false},
		{"the model at a pattern", "model", at("acme/*"), deny, []string{}, "", false},

		// Groups are their issuer's (H04).
		{"corp payments, qualified, two issuers", "groups", group(alice, "payments.refund", true), allow, []string{"allow"}, "", false},
		{"partner payments, qualified, two issuers", "groups", group(partner, "payments.refund", true), deny, []string{"corp-payments-only"}, "", false},
		{"corp payments, bare, two issuers", "groups", group(alice, "payments.void", true), deny, []string{"payments-anywhere"}, "", false},
		{"partner payments, bare, two issuers", "groups", group(partner, "payments.void", true), deny, []string{"payments-anywhere"}, "", false},
		{"qualified, one issuer", "groups", group(alice, "payments.refund", false), allow, []string{"allow"}, "", false},
		{"bare, one issuer", "groups", group(alice, "payments.void", false), allow, []string{"allow"}, "", false},

		// A rule that cannot be evaluated denies.
		{"no broken rule on the way", "broken", nil, allow, []string{"allow"}, "", false},
		{"a broken forbid denies", "broken", tool("x"), deny, nil, "could not be evaluated", true},
		{"a broken step-up denies", "broken", tool("y"), deny, nil, "could not be evaluated", true},
		{"a broken permit does not allow", "broken", tool("z"), deny, nil, "", true},
	}
}

// TestConformance runs every row against both engines: the same effect,
// the same deciding ids and the same reasons, whichever engine decides.
func TestConformance(t *testing.T) {
	sets := map[string]map[string]Set{}
	for _, row := range conformanceRows() {
		if sets[row.set] == nil {
			sets[row.set] = conformanceSet(t, row.set)
		}
		t.Run(row.name, func(t *testing.T) {
			got := map[string]broker.PolicyDecision{}
			for _, eng := range engines {
				d := sets[row.set][eng].Decide(req(row.mod))
				got[eng] = d
				if d.Effect != row.effect {
					t.Errorf("%s: %s %v %q, want %s", eng, d.Effect, d.Policies, d.Reasons, row.effect)
					continue
				}
				if !row.broken && strings.Join(d.Policies, ",") != strings.Join(row.policies, ",") {
					t.Errorf("%s: decided by %v, want %v", eng, d.Policies, row.policies)
				}
				if row.reason != "" && !strings.Contains(strings.Join(d.Reasons, "; "), row.reason) {
					t.Errorf("%s: reasons %q, want %q", eng, d.Reasons, row.reason)
				}
				if row.broken && eng == EngineOPA && (len(d.Policies) != 1 || !strings.HasPrefix(d.Policies[0], "policies.rego:")) {
					t.Errorf("%s: a failed evaluation names %v, want the rule's file:line", eng, d.Policies)
				}
			}
			if !row.broken && fmt.Sprint(got[EngineCedar]) != fmt.Sprint(got[EngineOPA]) {
				t.Errorf("the engines differ: cedar %v, opa %v", got[EngineCedar], got[EngineOPA])
			}
		})
	}
}
