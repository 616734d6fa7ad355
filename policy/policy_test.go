package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

var (
	agent = broker.Ref{Issuer: "https://agents.example", Subject: "bot"}
	alice = broker.Ref{Issuer: "https://login.example", Subject: "alice"}
)

func testdata(t *testing.T) *CedarSet {
	t.Helper()
	s, err := Load([]string{"testdata/*.cedar"}, "testdata/errand.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// req is a low-risk read in staging at mint time; cases change what they test.
func req(mod func(*broker.PolicyRequest)) broker.PolicyRequest {
	r := broker.PolicyRequest{
		Operation: broker.OpMint, TaskID: "tsk_x", Agent: agent, User: alice, Groups: []string{"engineers"},
		Action: "github.repo.read", Resource: "acme/api", Class: broker.ClassRead, Risk: broker.RiskLow,
		Audience: "https://staging.example", Environment: "staging",
		Time: time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC),
	}
	if mod != nil {
		mod(&r)
	}
	return r
}

func TestDecisions(t *testing.T) {
	s := testdata(t)
	if s.Len() != 7 {
		t.Fatalf("loaded %d policies, want 7", s.Len())
	}
	cases := []struct {
		name     string
		mod      func(*broker.PolicyRequest)
		effect   broker.Effect
		policies []string
	}{
		{"a low-risk read is allowed", nil, broker.EffectAllow, []string{"allow-agents"}},
		{"deny by risk", func(r *broker.PolicyRequest) { r.Risk = broker.RiskHigh }, broker.EffectDeny, []string{"deny-high-risk"}},
		{"deny by tool", func(r *broker.PolicyRequest) { r.Tool = "shell" }, broker.EffectDeny, []string{"deny-shell-tool"}},
		{"another tool is fine", func(r *broker.PolicyRequest) { r.Tool = "git" }, broker.EffectAllow, []string{"allow-agents"}},
		{"deny by dataset", func(r *broker.PolicyRequest) { r.Dataset = "pii/customers" }, broker.EffectDeny, []string{"deny-pii-datasets"}},
		{"deny by environment", func(r *broker.PolicyRequest) {
			r.Environment, r.Class, r.Action = "prod", broker.ClassAdmin, "prod.deploy"
		}, broker.EffectDeny, []string{"deny-prod-admin"}},
		{"admin outside prod is allowed", func(r *broker.PolicyRequest) {
			r.Class, r.Action = broker.ClassAdmin, "prod.deploy"
		}, broker.EffectAllow, []string{"allow-agents"}},
		{"prod write steps up", func(r *broker.PolicyRequest) {
			r.Environment, r.Class, r.Action = "prod", broker.ClassWrite, "github.pr.write"
		}, broker.EffectStepUp, []string{"prod-writes-step-up"}},
		{"a hard deny beats a step-up", func(r *broker.PolicyRequest) {
			r.Environment, r.Class, r.Action, r.Tool = "prod", broker.ClassWrite, "github.pr.write", "shell"
		}, broker.EffectDeny, []string{"deny-shell-tool"}},
		{"refund without the payments group", func(r *broker.PolicyRequest) {
			r.Action, r.Class = "payments.refund", broker.ClassWrite
		}, broker.EffectDeny, []string{"payments-team-only"}},
		{"refund with the payments group", func(r *broker.PolicyRequest) {
			r.Action, r.Class, r.Groups = "payments.refund", broker.ClassWrite, []string{"payments"}
		}, broker.EffectAllow, []string{"allow-agents"}},
		{"refund asked for before the user's groups are known", func(r *broker.PolicyRequest) {
			r.Action, r.Class, r.Groups, r.Operation = "payments.refund", broker.ClassWrite, nil, broker.OpCreate
		}, broker.EffectAllow, []string{"allow-agents"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(req(c.mod))
			if d.Effect != c.effect || strings.Join(d.Policies, ",") != strings.Join(c.policies, ",") {
				t.Fatalf("got %s %v, want %s %v", d.Effect, d.Policies, c.effect, c.policies)
			}
			if d.Effect == broker.EffectStepUp && (len(d.Reasons) != 1 || !strings.Contains(d.Reasons[0], "production")) {
				t.Fatalf("step-up reasons %q", d.Reasons)
			}
		})
	}
}

func TestDefaultDenyWhenNothingPermits(t *testing.T) {
	s, err := Load([]string{"testdata/guardrails.cedar", "testdata/stepup.cedar"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []broker.PolicyRequest{req(nil), req(func(r *broker.PolicyRequest) {
		r.Environment, r.Class = "prod", broker.ClassWrite
	})} {
		if d := s.Decide(r); d.Effect != broker.EffectDeny || len(d.Policies) != 0 {
			t.Fatalf("without a permit: %s %v, want a deny naming no policy", d.Effect, d.Policies)
		}
	}
}

// A forbid that cannot be evaluated denies; a permit that cannot be
// evaluated does not allow.
func TestBrokenRulesFailClosed(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.cedar", `@id("allow") permit (principal, action, resource);
@id("broken-forbid") forbid (principal, action, resource) when { context.risk < 3 };`)
	s, err := Load([]string{filepath.Join(dir, "*.cedar")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Decide(req(nil)); d.Effect != broker.EffectDeny || strings.Join(d.Policies, ",") != "broken-forbid" {
		t.Fatalf("broken forbid: %s %v", d.Effect, d.Policies)
	}
	write(t, dir, "a.cedar", `@id("broken-permit") permit (principal, action, resource) when { context.risk < 3 };`)
	if s, err = Load([]string{filepath.Join(dir, "*.cedar")}, ""); err != nil {
		t.Fatal(err)
	}
	if d := s.Decide(req(nil)); d.Effect != broker.EffectDeny {
		t.Fatalf("broken permit allowed: %v", d)
	}
	write(t, dir, "a.cedar", `@id("allow") permit (principal, action, resource);
@id("broken-step") @step_up("why") forbid (principal, action, resource) when { context.risk < 3 };`)
	if s, err = Load([]string{filepath.Join(dir, "*.cedar")}, ""); err != nil {
		t.Fatal(err)
	}
	if d := s.Decide(req(nil)); d.Effect != broker.EffectDeny || strings.Join(d.Policies, ",") != "broken-step" {
		t.Fatalf("broken step-up: %s %v", d.Effect, d.Policies)
	}
}

func write(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, text, schema, want string
	}{
		{"syntax", "@id(\"ok\")\npermit (principal, action, resource);\n\nforbid (principal, action resource);\n", "", "bad.cedar:4"},
		{"schema", "@id(\"ok\") permit (principal, action, resource);\n@id(\"typo\")\nforbid (principal, action, resource) when { context.enviroment == \"prod\" };\n",
			"testdata/errand.cedarschema", "bad.cedar:2: policy \"typo\" does not match the schema"},
		{"step-up on a permit", "@step_up(\"x\") permit (principal, action, resource);", "", "@step_up belongs on a forbid"},
		{"step-up without a reason", "@step_up(\"\") forbid (principal, action, resource);", "", "@step_up needs a reason"},
		{"duplicate id", "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);", "", `policy id "a" is already used`},
		{"empty id", "@id(\" \") permit (principal, action, resource);", "", "@id is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			write(t, dir, "bad.cedar", c.text)
			_, err := Load([]string{filepath.Join(dir, "bad.cedar")}, c.schema)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := Load([]string{filepath.Join(dir, "nothing-*.cedar")}, ""); err == nil || !strings.Contains(err.Error(), "matches no file") {
		t.Fatalf("a pattern matching nothing: %v", err)
	}
	if _, err := Load([]string{"testdata/base.cedar"}, filepath.Join(dir, "missing.cedarschema")); err == nil {
		t.Fatal("a missing schema loaded")
	}
}

func TestReloadKeepsTheOldSetOnError(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);`)
	e, err := NewEngine(Source{Patterns: []string{filepath.Join(dir, "*.cedar")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(req(nil)); d.Effect != broker.EffectAllow {
		t.Fatalf("before: %v", d)
	}
	write(t, dir, "p.cedar", "@id(\"allow\") permit (principal, action, resource);\nforbid (principal,")
	if _, err := e.Reload(); err == nil || !strings.Contains(err.Error(), "p.cedar:") {
		t.Fatalf("a broken reload: %v", err)
	}
	if d := e.Decide(req(nil)); d.Effect != broker.EffectAllow || e.Current().Len() != 1 {
		t.Fatalf("after a broken reload the old set must stay: %v", d)
	}
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("no-reads") forbid (principal, action, resource) when { context.class == "read" };`)
	if _, err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(req(nil)); d.Effect != broker.EffectDeny || strings.Join(d.Policies, ",") != "no-reads" {
		t.Fatalf("after a good reload: %v", d)
	}
}

func TestUnnamedPoliciesGetFileIDs(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "rules.cedar", "permit (principal, action, resource);\nforbid (principal, action, resource) when { context.tool == \"x\" };")
	s, err := Load([]string{filepath.Join(dir, "*.cedar")}, "")
	if err != nil {
		t.Fatal(err)
	}
	d := s.Decide(req(func(r *broker.PolicyRequest) { r.Tool = "x" }))
	if d.Effect != broker.EffectDeny || strings.Join(d.Policies, ",") != "rules.cedar#1" {
		t.Fatalf("got %v", d)
	}
}

// The entity model of the README, attribute by attribute.
func TestEntityModel(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "m.cedar", `
@id("model")
permit (principal == Agent::"https://agents.example#bot", action == Action::"github.repo.read", resource == Resource::"acme/api")
when {
  principal.issuer == "https://agents.example" && principal.sub == "bot" &&
  resource.path == "acme/api" && resource.head == "acme/api" && !resource.wildcard &&
  resource in Resource::"acme/**" &&
  context.task_id == "tsk_x" && context.user == User::"https://login.example#alice" &&
  context.user.issuer == "https://login.example" && context.user.sub == "alice" &&
  context.user in Group::"engineers" &&
  context.risk == "low" && context.class == "read" && context.audience == "https://staging.example" &&
  context.environment == "staging" && context.tool == "" && context.dataset == "" &&
  context.operation == "mint" &&
  context.time == datetime("2026-11-30T10:00:00Z") && context.time.toTime() == duration("10h")
};`)
	s, err := Load([]string{filepath.Join(dir, "m.cedar")}, "testdata/errand.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Decide(req(nil)); d.Effect != broker.EffectAllow {
		t.Fatalf("the model's attributes: %v", d)
	}
	if d := s.Decide(req(func(r *broker.PolicyRequest) { r.Groups = nil })); d.Effect != broker.EffectDeny {
		t.Fatalf("without the group: %v", d)
	}
}

// An agent of a SPIFFE trust domain is Agent::"<SPIFFE ID>" and carries
// its trust domain and path, so that a policy can hold agents to one trust
// domain; other agents carry "" for both.
func TestSPIFFEAgentEntity(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "m.cedar", `
@id("prod-agents")
permit (principal, action, resource)
when { principal.trust_domain == "prod.example.org" && principal.spiffe_path like "/ns/agents/*" };
@id("by-id")
forbid (principal == Agent::"spiffe://prod.example.org/ns/agents/sa/rogue", action, resource);`)
	s, err := Load([]string{filepath.Join(dir, "m.cedar")}, "testdata/errand.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	spiffe := func(id string) func(*broker.PolicyRequest) {
		return func(r *broker.PolicyRequest) {
			ref, ok := broker.SPIFFERef(id)
			if !ok {
				t.Fatalf("%s is not a SPIFFE ID", id)
			}
			r.Agent = ref
		}
	}
	if d := s.Decide(req(spiffe("spiffe://prod.example.org/ns/agents/sa/agent-7"))); d.Effect != broker.EffectAllow {
		t.Fatalf("a prod agent: %v", d)
	}
	for _, id := range []string{"spiffe://dev.example.org/ns/agents/sa/agent-7", "spiffe://prod.example.org/ns/jobs/x", "spiffe://prod.example.org/ns/agents/sa/rogue"} {
		if d := s.Decide(req(spiffe(id))); d.Effect != broker.EffectDeny {
			t.Fatalf("%s: %v", id, d)
		}
	}
	// An OIDC agent whose sub looks like a SPIFFE ID is no SPIFFE agent.
	if d := s.Decide(req(func(r *broker.PolicyRequest) {
		r.Agent = broker.Ref{Issuer: "https://agents.example", Subject: "spiffe://prod.example.org/ns/agents/x"}
	})); d.Effect != broker.EffectDeny {
		t.Fatalf("an OIDC agent: %v", d)
	}
}

func TestResourceShape(t *testing.T) {
	for path, want := range map[string]string{
		"acme/infra/x": "head=acme/infra/x wildcard=false in=[acme/** acme/infra/**]",
		"acme/infra":   "head=acme/infra wildcard=false in=[acme/**]",
		"acme":         "head=acme wildcard=false in=[]",
		"acme/infra/*": "head=acme/infra wildcard=true in=[acme/** acme/infra/**]",
		"acme/*/x":     "head=acme wildcard=true in=[acme/**]",
		"**":           "head= wildcard=true in=[]",
	} {
		head, wc, parents := resourceShape(path)
		var in []string
		for _, p := range parents {
			in = append(in, string(p.ID))
		}
		if got := fmt.Sprintf("head=%s wildcard=%v in=%v", head, wc, strings.Join(in, " ")); got != strings.Replace(strings.Replace(want, "[", "", 1), "]", "", 1) {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
}

// A rule protecting one path, written as the README says, also holds
// against the patterns that cover it.
func TestProtectingAPathCoversPatterns(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("protect-infra") forbid (principal, action, resource)
when { resource.head == "acme/infra" || resource in Resource::"acme/infra/**" ||
       (resource.wildcard && ["", "acme"].contains(resource.head)) };`)
	s, err := Load([]string{filepath.Join(dir, "p.cedar")}, "testdata/errand.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	for path, denied := range map[string]bool{
		"acme/infra": true, "acme/infra/x": true, "acme/infra/*": true, "acme/infra/**": true,
		"acme/*": true, "acme/**": true, "**": true,
		"acme/api": false, "acme/api/*": false, "acme/infra-old": false, "other/**": false,
	} {
		d := s.Decide(req(func(r *broker.PolicyRequest) { r.Resource = path }))
		if (d.Effect == broker.EffectDeny) != denied {
			t.Errorf("%s: %s, want denied=%v", path, d.Effect, denied)
		}
	}
}

// Without a schema, a misspelt action would never match: CheckActions
// refuses it, at start and at reload.
func TestCheckActionsRefusesUnknownActions(t *testing.T) {
	dir := t.TempDir()
	known := func(a string) bool { return a == "github.pr.write" || a == "github.repo.read" }
	check := func(s Set) error { return s.CheckActions(known) }
	write(t, dir, "p.cedar", `@id("ok") permit (principal, action in [Action::"github.repo.read", Action::"github.pr.write"], resource);
@id("typo") forbid (principal, action, resource) when { action == Action::"github.pr.writ" };`)
	if _, err := NewEngine(Source{Patterns: []string{filepath.Join(dir, "*.cedar")}}, check); err == nil ||
		!strings.Contains(err.Error(), `p.cedar:2: policy "typo" names Action::"github.pr.writ"`) {
		t.Fatalf("a misspelt action loaded: %v", err)
	}
	write(t, dir, "p.cedar", `@id("ok") permit (principal, action == Action::"github.repo.read", resource);`)
	e, err := NewEngine(Source{Patterns: []string{filepath.Join(dir, "*.cedar")}}, check)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "p.cedar", `@id("upper") forbid (principal, action == Action::"GitHub.PR.Write", resource);`)
	if _, err := e.Reload(); err == nil || !strings.Contains(err.Error(), "lower case") {
		t.Fatalf("a reload with an unknown action: %v", err)
	}
}

// TestH04GroupsAreIssuerQualified: a group belongs to the issuer that
// asserted it. With several user issuers a partner user's "payments" is
// Group::"<partner>#payments", never corp's Group::"<corp>#payments", and
// the bare Group::"payments" names nobody; with one user issuer both
// spellings are its group.
func TestH04GroupsAreIssuerQualified(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("corp-payments-only") forbid (principal, action == Action::"payments.refund", resource)
unless { context.user in Group::"https://login.example#payments" };
@id("payments-anywhere") forbid (principal, action == Action::"payments.void", resource)
unless { context.user in Group::"payments" };`)
	s, err := Load([]string{filepath.Join(dir, "p.cedar")}, "")
	if err != nil {
		t.Fatal(err)
	}
	partner := broker.Ref{Issuer: "https://login.partner.example", Subject: "alice"}
	for _, c := range []struct {
		name    string
		user    broker.Ref
		action  string
		several bool
		effect  broker.Effect
	}{
		{"corp payments, qualified, two issuers", alice, "payments.refund", true, broker.EffectAllow},
		{"partner payments, qualified, two issuers", partner, "payments.refund", true, broker.EffectDeny},
		{"corp payments, bare, two issuers", alice, "payments.void", true, broker.EffectDeny},
		{"partner payments, bare, two issuers", partner, "payments.void", true, broker.EffectDeny},
		{"qualified, one issuer", alice, "payments.refund", false, broker.EffectAllow},
		{"bare, one issuer", alice, "payments.void", false, broker.EffectAllow},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(req(func(r *broker.PolicyRequest) {
				r.User, r.Action, r.Class, r.Groups, r.SeveralUserIssuers = c.user, c.action, broker.ClassWrite, []string{"payments"}, c.several
			}))
			if d.Effect != c.effect {
				t.Fatalf("got %s %v, want %s", d.Effect, d.Policies, c.effect)
			}
		})
	}
}

// CheckGroups refuses the groups policies are never shown: a bare name
// with several user issuers, an issuer that is not a user issuer.
func TestCheckGroups(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("bare") forbid (principal, action, resource) when { context.user in Group::"contractors" };
@id("corp") forbid (principal in Group::"https://login.example#interns", action, resource);`)
	s, err := Load([]string{filepath.Join(dir, "p.cedar")}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		users []string
		want  string
	}{
		{"one user issuer", []string{"https://login.example"}, ""},
		{"two user issuers", []string{"https://login.example", "https://login.partner.example"}, `p.cedar:2: policy "bare" names Group::"contractors", without its issuer`},
		{"another user issuer", []string{"https://login.partner.example"}, `policy "corp" names Group::"https://login.example#interns", and https://login.example is not a configured issuer of kind user`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.CheckGroups(c.users)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("CheckGroups: %v, want %q", err, c.want)
			}
		})
	}
}

// TestH06PolicyResourcesMustBeLowerCase: policies are shown a
// case-insensitive audience's resources in lower case, so a rule naming
// Resource::"acme/Infra/**" would never match; it is refused.
func TestH06PolicyResourcesMustBeLowerCase(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("protect-infra") forbid (principal, action, resource) when { resource in Resource::"acme/Infra/**" };`)
	s, err := Load([]string{filepath.Join(dir, "p.cedar")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckLowerCaseResources(); err == nil || !strings.Contains(err.Error(), `p.cedar:2: policy "protect-infra" names Resource::"acme/Infra/**", with upper-case letters`) {
		t.Fatalf("an upper-case resource: %v", err)
	}
	write(t, dir, "p.cedar", `@id("allow") permit (principal, action, resource);
@id("protect-infra") forbid (principal, action, resource) when { resource in Resource::"acme/infra/**" };`)
	if s, err = Load([]string{filepath.Join(dir, "p.cedar")}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckLowerCaseResources(); err != nil {
		t.Fatal(err)
	}
}
