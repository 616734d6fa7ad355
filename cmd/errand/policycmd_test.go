package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// policyConfigFor writes an errand.yaml naming the policies and schema of
// policy/testdata for engine (with opa, the Rego translation of the same
// policies, policy/testdata/conformance/guardrails), with the catalog they
// are written for. It holds no secret and no database: policy test needs
// neither.
func policyConfigFor(t *testing.T, engine string) string {
	t.Helper()
	td, err := filepath.Abs("../../policy/testdata")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := `public_url: https://errand.example.com
system_secret: ${ERRAND_POLICY_TEST_UNSET_SECRET}
issuers: [{url: https://agents.example, audience: errand, kind: agent}]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
  - {name: db.orders.read, class: read, risk: medium}
  - {name: prod.deploy, class: admin, risk: high}
  - {name: payments.refund, class: write, risk: medium}
audiences:
  - {url: "https://api.github.com", environment: prod}
  - {url: "https://staging.example", environment: staging}
policies: ["` + td + `/*.cedar"]
policy_schema: ` + td + `/errand.cedarschema
`
	if engine == "opa" {
		cfg = strings.Replace(cfg, `policies: ["`+td+`/*.cedar"]
policy_schema: `+td+`/errand.cedarschema
`, `policy_engine: opa
policies: ["`+td+`/conformance/guardrails/*.rego"]
policy_timeout: 2s
`, 1)
	}
	path := filepath.Join(dir, "errand.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runPolicyTest(t *testing.T, cfg, cases string) (string, error) {
	t.Helper()
	cpath := filepath.Join(t.TempDir(), "cases.yaml")
	if err := os.WriteFile(cpath, []byte(cases), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"policy", "test", "--config", cfg, cpath})
	err := root.Execute()
	return out.String(), err
}

const policyCases = `cases:
  - name: a read in staging
    agent: https://agents.example#bot
    user: https://login.example#alice
    scope: github.repo.read:acme/api
    audience: https://staging.example
    expect: allow
  - name: a write to production
    agent: https://agents.example#bot
    user: https://login.example#alice
    scope: github.pr.write:acme/api
    audience: https://api.github.com
    expect: step-up
  - name: the shell tool
    agent: https://agents.example#bot
    user: https://login.example#alice
    scope: github.repo.read:acme/api
    audience: https://staging.example
    tool: shell
    expect: deny
  - name: a refund by the payments team
    agent: https://agents.example#bot
    user: https://login.example#alice
    groups: [payments]
    operation: approve
    scope: payments.refund:orders/1
    audience: https://staging.example
`

// TestPolicyTestCommand runs one cases file against the Cedar policies
// and against their Rego translation: the same output for both.
func TestPolicyTestCommand(t *testing.T) {
	outs := map[string]string{}
	for _, engine := range []string{"cedar", "opa"} {
		t.Run(engine, func(t *testing.T) { outs[engine] = policyTestCommand(t, policyConfigFor(t, engine)) })
	}
	if outs["cedar"] != outs["opa"] {
		t.Fatalf("the engines' outputs differ:\ncedar:\n%s\nopa:\n%s", outs["cedar"], outs["opa"])
	}
}

func policyTestCommand(t *testing.T, cfg string) string {
	out, err := runPolicyTest(t, cfg, policyCases)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	first := out
	for _, want := range []string{
		"PASS allow   a read in staging (allow-agents)",
		"PASS step-up a write to production (prod-writes-step-up: writes to production need the user's approval each time)",
		"PASS deny    the shell tool (deny-shell-tool)",
		"allow   a refund by the payments team (allow-agents)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A case that decides otherwise than expected fails the run.
	out, err = runPolicyTest(t, cfg, strings.Replace(policyCases, "expect: step-up", "expect: allow", 1))
	if err == nil || !strings.Contains(out, "FAIL step-up a write to production") || !strings.Contains(err.Error(), "1 of 4 cases") {
		t.Fatalf("a wrong expectation passed: %v\n%s", err, out)
	}

	// Mistakes in the cases file are errors naming the case.
	for _, bad := range []string{
		strings.Replace(policyCases, "scope: github.repo.read:acme/api\n    audience: https://staging.example\n    expect: allow", "scope: nope.nope:x\n    audience: https://staging.example", 1),
		strings.Replace(policyCases, "audience: https://staging.example\n    expect: allow", "audience: https://unknown.example", 1),
		strings.Replace(policyCases, "expect: deny", "expect: maybe", 1),
		strings.Replace(policyCases, "tool: shell", "tools: shell", 1),
		"cases: []\n",
	} {
		if out, err := runPolicyTest(t, cfg, bad); err == nil {
			t.Errorf("a bad cases file passed:\n%s\n%s", bad, out)
		}
	}
	return first
}
