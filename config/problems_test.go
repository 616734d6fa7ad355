package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestZeroBudgetsMeanUnlimited: credentials_per_task and
// resources_per_task accept 0, the documented default (unlimited), and
// refuse what is not a whole number of 0 or more.
func TestZeroBudgetsMeanUnlimited(t *testing.T) {
	const plain = "limits: {token_ttl_max: 5m, task_ttl_max: 8h}"
	raw := strings.Replace(valid, plain, "limits:\n  credentials_per_task: 0\n  resources_per_task: 0\n  step_up_ttl: 0", 1)
	c, err := Parse([]byte(raw), goodEnv)
	if err != nil {
		t.Fatalf("the documented defaults are refused: %v", err)
	}
	if c.Limits.CredentialsPerTask != 0 || c.Limits.ResourcesPerTask != 0 || c.Limits.StepUpTTL != 15*time.Minute {
		t.Fatalf("limits %+v", c.Limits)
	}
	raw = strings.Replace(valid, plain, "limits: {credentials_per_task: 3, resources_per_task: 2}", 1)
	if c, err = Parse([]byte(raw), goodEnv); err != nil || c.Limits.CredentialsPerTask != 3 || c.Limits.ResourcesPerTask != 2 {
		t.Fatalf("limits %+v, %v", c.Limits, err)
	}
	for _, bad := range []string{"credentials_per_task: -1", "resources_per_task: 1.5", "resources_per_task: [1]"} {
		raw := strings.Replace(valid, plain, "limits:\n  "+bad, 1)
		key := strings.SplitN(bad, ":", 2)[0]
		if _, err := Parse([]byte(raw), goodEnv); err == nil || !strings.Contains(err.Error(), "limits."+key+" (line 28)") {
			t.Fatalf("%s: err = %v, want it to name limits.%s and its line", bad, err, key)
		}
	}
}

// TestLimitsAreTypedAndNameTheirLine: every bad limit is reported, each
// with its key and line, durations included.
func TestLimitsAreTypedAndNameTheirLine(t *testing.T) {
	raw := strings.Replace(valid, "limits: {token_ttl_max: 5m, task_ttl_max: 8h}",
		"limits:\n  token_ttl_max: five\n  task_ttl_max: -8h\n  principal_rps: 0\n  address_rps: sometimes\n  pending_tasks_per_agent: 0", 1)
	_, err := Parse([]byte(raw), goodEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`config: limits.token_ttl_max (line 28): "five" is not a duration such as 5m or 8h`,
		`config: limits.task_ttl_max (line 29): "-8h" is not a duration`,
		`config: limits.principal_rps (line 30): "0" is not a positive number`,
		`config: limits.address_rps (line 31): "sometimes" is not a positive number`,
		`config: limits.pending_tasks_per_agent (line 32): "0" is not a positive whole number`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
	// An issuer's max_token_lifetime is a Duration too.
	raw = strings.Replace(valid, "kind: agent", "kind: agent\n    max_token_lifetime: a day", 1)
	if _, err := Parse([]byte(raw), goodEnv); err == nil || !strings.Contains(err.Error(), `issuers[0].max_token_lifetime (line 9): "a day" is not a duration`) {
		t.Fatalf("err = %v", err)
	}
}

// TestEveryProblemInOnePass: unset variables, unknown keys, values of the
// wrong type and validation problems are reported together, once each: a
// key decoding found wrong is not reported again by validation.
func TestEveryProblemInOnePass(t *testing.T) {
	raw := strings.NewReplacer(
		"listen: 127.0.0.1:8080", "lisen: 127.0.0.1:8080\nsigning_alg: RS256",
		"auditor_group: security-auditors", "auditor_group: ${AUDITORS}",
		"url: https://login.example.com", "url: https://${IDP_HOST}/",
		`{url: "https://api.github.com", environment: prod}`, `{url: "https://api.github.com", environment: prod, case_insensitive: maybe}`,
		"{name: github.repo.read, class: read, risk: low}", "{name: github.repo.read, class: read, risk: low, claass: admin}",
		"limits: {token_ttl_max: 5m, task_ttl_max: 8h}", "limits: {token_ttl_max: 5m, task_ttl_max: eight}\ndeny_actions: {a: b}",
	).Replace(valid)
	_, err := Parse([]byte(raw), goodEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`config: lisen (line 2): unknown key`,
		`config: issuers[1].url (line 10): environment variable IDP_HOST is not set`,
		`config: issuers[1].auditor_group (line 14): environment variable AUDITORS is not set`,
		`config: actions[0].claass (line 23): unknown key`,
		`config: audiences[0] (line 26): cannot unmarshal !!str ` + "`maybe`" + ` into bool`,
		`config: limits.task_ttl_max (line 28): "eight" is not a duration such as 5m or 8h`,
		`config: deny_actions (line 29): cannot unmarshal !!map into []string`,
		`config: signing_alg: must be EdDSA or ES256`,
	}
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("no line starting %q", w)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("%d problems reported, want %d (a key already found wrong is not reported again):\n%s", len(lines), len(want), err)
	}
	// A syntax error stops the reading: it is the one problem.
	_, err = Parse([]byte("public_url: [x\nlisten: y"), goodEnv)
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), "line") {
		t.Fatalf("syntax error: %v", err)
	}
}

// TestEffectiveConfigHasTheDefaults: what the server would apply to an
// absent setting is written into the config, so config check shows it.
func TestEffectiveConfigHasTheDefaults(t *testing.T) {
	c, err := Parse([]byte(valid), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	is := c.Issuers[0]
	if !slices.Equal(is.Algorithms, []string{"RS256", "ES256"}) || time.Duration(is.MaxTokenLifetime) != 24*time.Hour {
		t.Fatalf("issuer defaults: %v %v", is.Algorithms, time.Duration(is.MaxTokenLifetime))
	}
	l := c.Limits
	if l.PendingTasksPerAgent != 20 || l.PrincipalRPS != 50 || l.AddressRPS != 200 || l.StepUpTTL != 15*time.Minute ||
		l.CredentialsPerTask != 0 || l.ResourcesPerTask != 0 {
		t.Fatalf("limits %+v", l)
	}
	raw := strings.Replace(valid, "kind: agent", "kind: agent\n    algorithms: [ES256]\n    max_token_lifetime: 1h", 1)
	if c, err = Parse([]byte(raw), goodEnv); err != nil || !slices.Equal(c.Issuers[0].Algorithms, []string{"ES256"}) ||
		time.Duration(c.Issuers[0].MaxTokenLifetime) != time.Hour {
		t.Fatalf("set values replaced by defaults: %v %v", c.Issuers[0], err)
	}
}

// TestASiblingsProblemIsNotHidden: a validation problem about a mapping
// is left out only when it is about the very key decoding found wrong; a
// bad limits.step_up_ttl does not hide that token_ttl_max is under 1s.
func TestASiblingsProblemIsNotHidden(t *testing.T) {
	raw := strings.Replace(valid, "limits: {token_ttl_max: 5m, task_ttl_max: 8h}",
		"limits:\n  token_ttl_max: 500ms\n  step_up_ttl: soon", 1)
	_, err := Parse([]byte(raw), goodEnv)
	if err == nil || !strings.Contains(err.Error(), "limits.step_up_ttl (line 29)") ||
		!strings.Contains(err.Error(), "config: limits: token_ttl_max and task_ttl_max must be at least 1s") {
		t.Fatalf("err = %v", err)
	}
}
