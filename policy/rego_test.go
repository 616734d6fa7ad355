package policy

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

func loadRego(t *testing.T, dir string, timeout time.Duration) (*RegoSet, error) {
	t.Helper()
	return LoadRego([]string{filepath.Join(dir, "*.rego")}, "", timeout)
}

// Errors in Rego refuse at load, naming the file and line: syntax,
// compile, undefined (an unknown input key, an undefined function), a
// forbidden built-in, a rule of another shape than the contract's, a
// conflict or a timeout that a probe request meets.
func TestRegoLoadErrorsNameFileAndLine(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"syntax", "package errand\n\nallow contains \"a\" if {\n\tinput.action ==\n}\n", "bad.rego:5:1: rego_parse_error"},
		{"undefined input key", "package errand\n\nallow contains \"a\"\n\ndeny contains \"typo\" if input.context.enviroment == \"prod\"\n", "bad.rego:5"},
		{"undefined function", "package errand\n\nallow contains \"a\" if nope(input.action)\n", "bad.rego:3:23: rego_type_error: undefined function nope"},
		{"unsafe variable", "package errand\n\nallow contains x if input.action == \"a\"\n", "bad.rego:3"},
		{"http.send", "package errand\n\nallow contains \"a\" if http.send({\"method\": \"get\", \"url\": \"https://x\"}).status_code == 200\n", "bad.rego:3:23: rego_type_error: undefined function http.send"},
		{"the clock", "package errand\n\nallow contains \"a\" if time.now_ns() > 0\n", "undefined function time.now_ns"},
		{"a boolean allow", "package errand\n\nallow if input.action == \"a\"\n", `bad.rego:3: rule allow of package errand must be a set of rule ids`},
		{"a default allow", "package errand\n\ndefault allow := set()\n", `bad.rego:3: rule allow of package errand must be a set of rule ids`},
		{"a boolean deny", "package errand\n\nallow contains \"a\"\n\ndeny if true\n", `bad.rego:5: rule deny of package errand must be a set`},
		{"a step-up set", "package errand\n\nallow contains \"a\"\n\nstep_up contains \"x\"\n", `bad.rego:5: rule step_up of package errand must be an object of rule id to the reason`},
		{"no package errand", "package other\n\nallow contains \"a\"\n", "no file declares package errand"},
		{"a package inside deny", "package errand.deny\n\nx := true\n", "bad.rego:1: package data.errand.deny is inside the deciding rule deny"},
		{"a conflict any request meets", "package errand\n\nallow contains \"a\"\n\nstep_up[\"x\"] := \"one\"\n\nstep_up[\"x\"] := \"two\"\n", "bad.rego:"},
		{"a loop any request meets", "package errand\n\nallow contains \"a\" if {\n\tsome i in numbers.range(1, 100000)\n\tsome j in numbers.range(1, 100000)\n\ti * j < 0\n}\n", "did not decide within 500ms"},
		{"a built-in error any request meets", "package errand\n\nallow contains \"a\" if to_number(input.context.risk) > 1\n", "bad.rego:3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "bad.rego", c.text)
			_, err := loadRego(t, dir, 500*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := LoadRego([]string{filepath.Join(t.TempDir(), "nothing-*.rego")}, "", 0); err == nil || !strings.Contains(err.Error(), "matches no file") {
		t.Fatalf("a pattern matching nothing: %v", err)
	}
}

// An error that only some requests meet denies those, at decision time,
// naming the rule's file:line and the reason; the time budget holds.
func TestRegoFailsClosedAtDecision(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", `package errand

allow contains "allow"

step_up["conflict"] := "one" if input.context.tool == "conflict"

step_up["conflict"] := "two" if input.context.tool == "conflict"

deny contains "slow" if {
	input.context.tool == "slow"
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j < 0
}

step_up["no-reason"] := 7 if input.context.tool == "no-reason"

deny contains 7 if input.context.tool == "number"
`)
	s, err := loadRego(t, dir, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Decide(req(nil)); d.Effect != broker.EffectAllow {
		t.Fatalf("a request no broken rule meets: %v", d)
	}
	for _, c := range []struct{ tool, policy, reason string }{
		{"conflict", "p.rego:", "could not be evaluated"},
		{"slow", "", "did not decide within 500ms"},
		{"no-reason", "", `step_up["no-reason"] must be the reason`},
		{"number", "", "not a rule id"},
	} {
		t.Run(c.tool, func(t *testing.T) {
			start := time.Now()
			d := s.Decide(req(func(r *broker.PolicyRequest) { r.Tool = c.tool }))
			if d.Effect != broker.EffectDeny || !strings.Contains(strings.Join(d.Reasons, ";"), c.reason) ||
				strings.Join(d.Policies, ",") != "" && c.policy == "" || c.policy != "" && (len(d.Policies) != 1 || !strings.HasPrefix(d.Policies[0], c.policy)) {
				t.Fatalf("got %s %v %q, want a deny naming %q with %q", d.Effect, d.Policies, d.Reasons, c.policy, c.reason)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Fatalf("the decision took %s, beyond its budget", el)
			}
		})
	}
}

// Rego is prepared again on reload; a reload that fails keeps the set in
// force, and a reload that succeeds replaces it.
func TestRegoReloadKeepsTheOldSetOnError(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", "package errand\n\nallow contains \"allow\"\n")
	e, err := NewEngine(Source{Engine: EngineOPA, Patterns: []string{filepath.Join(dir, "*.rego")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(req(nil)); d.Effect != broker.EffectAllow || e.Current().Engine() != EngineOPA {
		t.Fatalf("before: %v", d)
	}
	write(t, dir, "p.rego", "package errand\n\nallow contains \"allow\"\n\ndeny contains \"x\" if {\n")
	if _, err := e.Reload(); err == nil || !strings.Contains(err.Error(), "p.rego:") {
		t.Fatalf("a broken reload: %v", err)
	}
	if d := e.Decide(req(nil)); d.Effect != broker.EffectAllow || e.Current().Len() != 1 {
		t.Fatalf("after a broken reload the old set must stay: %v", d)
	}
	write(t, dir, "p.rego", "package errand\n\nallow contains \"allow\"\n\ndeny contains \"no-reads\" if input.context.class == \"read\"\n")
	if _, err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(req(nil)); d.Effect != broker.EffectDeny || strings.Join(d.Policies, ",") != "no-reads" {
		t.Fatalf("after a good reload: %v", d)
	}
}

// policy_data is read as data; it may not take the policies' package.
func TestRegoData(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", `package errand

allow contains "allow"

deny contains "protected-repo" if input.resource.head in data.protected
`)
	write(t, dir, "data.json", `{"protected": ["acme/infra", "acme/payroll"]}`)
	s, err := LoadRego([]string{filepath.Join(dir, "*.rego")}, filepath.Join(dir, "data.json"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Decide(req(func(r *broker.PolicyRequest) { r.Resource = "acme/payroll" })); d.Effect != broker.EffectDeny || strings.Join(d.Policies, ",") != "protected-repo" {
		t.Fatalf("a protected repository: %v", d)
	}
	if d := s.Decide(req(nil)); d.Effect != broker.EffectAllow {
		t.Fatalf("another repository: %v", d)
	}
	write(t, dir, "data.json", `{"errand": {"allow": ["x"]}}`)
	if _, err := LoadRego([]string{filepath.Join(dir, "*.rego")}, filepath.Join(dir, "data.json"), 0); err == nil || !strings.Contains(err.Error(), "policies' package") {
		t.Fatalf("data under errand: %v", err)
	}
	write(t, dir, "data.json", `null`)
	if _, err := LoadRego([]string{filepath.Join(dir, "*.rego")}, filepath.Join(dir, "data.json"), 0); err == nil || !strings.Contains(err.Error(), "not null") {
		t.Fatalf("null data: %v", err)
	}
	write(t, dir, "data.json", `[1, 2]`)
	if _, err := LoadRego([]string{filepath.Join(dir, "*.rego")}, filepath.Join(dir, "data.json"), 0); err == nil || !strings.Contains(err.Error(), "a JSON object") {
		t.Fatalf("data that is not an object: %v", err)
	}
}

// A source names one engine, and its files are that engine's.
func TestSourceRefusesTheOtherEnginesFiles(t *testing.T) {
	for _, c := range []struct {
		src  Source
		want string
	}{
		{Source{Patterns: []string{"testdata/conformance/guardrails/*.rego"}}, "names .rego files, but the policy engine is cedar"},
		{Source{Engine: EngineOPA, Patterns: []string{"testdata/*.cedar"}}, "names .cedar files, but the policy engine is opa"},
		{Source{Engine: EngineOPA, Patterns: []string{"testdata/conformance/guardrails/*.rego"}, Schema: "testdata/errand.cedarschema"}, "policy_schema"},
		{Source{Patterns: []string{"testdata/*.cedar"}, Data: "x.json"}, "policy_data"},
		{Source{Engine: "oso", Patterns: []string{"testdata/*.cedar"}}, `cedar or opa, not "oso"`},
	} {
		if _, err := c.src.Load(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.src, err, c.want)
		}
	}
}

// The config's checks hold for Rego too, on the strings a rule compares
// directly with input.action, input.user.groups and the resource.
func TestRegoChecks(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", `package errand

allow contains "ok" if input.action in {"github.repo.read", "github.pr.write"}

deny contains "typo" if input.action == "github.pr.writ"
`)
	s, err := loadRego(t, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	known := func(a string) bool { return a == "github.pr.write" || a == "github.repo.read" }
	if err := s.CheckActions(known); err == nil || !strings.Contains(err.Error(), `p.rego:5: compares input.action with the action "github.pr.writ", which is not in the catalog`) {
		t.Fatalf("a misspelt action: %v", err)
	}
	write(t, dir, "p.rego", `package errand

allow contains "ok" if input.action in {"github.repo.read", "GitHub.PR.Write"}
`)
	if s, err = loadRego(t, dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckActions(known); err == nil || !strings.Contains(err.Error(), `"GitHub.PR.Write"`) {
		t.Fatalf("an action in a set: %v", err)
	}

	write(t, dir, "p.rego", `package errand

allow contains "allow"

deny contains "bare" if "contractors" in input.user.groups

deny contains "corp" if input.user.groups[_] == "https://login.example#interns"
`)
	if s, err = loadRego(t, dir, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		users []string
		want  string
	}{
		{[]string{"https://login.example"}, ""},
		{[]string{"https://login.example", "https://login.partner.example"}, `p.rego:5: compares input.user.groups with the group "contractors", without its issuer`},
		{[]string{"https://login.partner.example"}, `p.rego:7: compares input.user.groups with the group "https://login.example#interns", and https://login.example is not a configured issuer of kind user`},
	} {
		err := s.CheckGroups(c.users)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckGroups(%v): %v, want %q", c.users, err, c.want)
		}
	}

	write(t, dir, "p.rego", `package errand

allow contains "allow"

deny contains "protect-infra" if "acme/Infra/**" in input.resource.ancestors
`)
	if s, err = loadRego(t, dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckLowerCaseResources(); err == nil || !strings.Contains(err.Error(), `p.rego:5: compares input.resource.ancestors with the resource "acme/Infra/**", with upper-case letters`) {
		t.Fatalf("an upper-case resource: %v", err)
	}
}

// A prepared query is shared by every request in flight: concurrent
// decisions each get their own answer.
func TestRegoConcurrentDecisions(t *testing.T) {
	s := conformanceSet(t, "guardrails")[EngineOPA]
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				tool, want := "git", broker.EffectAllow
				if (g+i)%3 == 0 {
					tool, want = "shell", broker.EffectDeny
				}
				if d := s.Decide(req(func(r *broker.PolicyRequest) { r.Tool = tool })); d.Effect != want {
					errs <- fmt.Sprintf("goroutine %d, decision %d: %v, want %s", g, i, d, want)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
