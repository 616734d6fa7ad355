package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandhq/errand/policy"
)

// TestAuthZENAnswersIdenticallyForBothEngines asks AuthZEN the same
// questions (single and batch) of a server with the Cedar policies of
// testdata/policies and of one with their Rego translation, and expects
// the same answers, byte for byte: the decision, the reason and the ids
// of the deciding policies.
func TestAuthZENAnswersIdenticallyForBothEngines(t *testing.T) {
	answers := map[string][]string{}
	for _, engine := range []string{policy.EngineCedar, policy.EngineOPA} {
		e := policyEnv(t, envOptions{policyEngine: engine})
		rs := e.resource("gateway")
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**", "github.pr.write:acme/**")
		mint := func(scope, aud string) string {
			return e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{scope}, "audience": aud}), 201).str("access_token")
		}
		staging, prod := mint("github.repo.read:acme/**", apiStage), mint("github.repo.read:acme/api", apiGitHub)
		writeStage := mint("github.pr.write:acme/**", apiStage)
		questions := []map[string]any{
			azBody(staging, "github.repo.read", "acme/api", nil),
			azBody(staging, "github.repo.read", "acme/infra", nil),
			azBody(prod, "github.repo.read", "acme/api", nil),
			azBody(prod, "github.repo.read", "acme/infra", nil),
			azBody(staging, "github.repo.read", "acme/api", map[string]any{"tool": "shell"}),
			azBody(staging, "github.repo.read", "acme/api", map[string]any{"dataset": "pii/customers"}),
			azBody(staging, "github.repo.read", "acme/api", map[string]any{"tool": "shell", "dataset": "pii/x"}),
			azBody(staging, "github.repo.read", "acme/api", map[string]any{"dataset": "finance/ledger"}),
			azBody(writeStage, "github.pr.write", "acme/api", nil),
			azBody(writeStage, "github.pr.write", "acme/api", map[string]any{"dataset": "finance/q3"}),
			azBody(staging, "github.pr.write", "acme/api", nil),
			azBody(staging, "aws.iam.createaccesskey", "x", nil),
			azBody("not-a-token", "github.repo.read", "acme/api", nil),
		}
		var got []string
		for i, q := range questions {
			r := e.evaluate(rs, q)
			if r.Status != http.StatusOK {
				t.Fatalf("%s: question %d: %d %s", engine, i, r.Status, r.Raw)
			}
			got = append(got, compact(t, r.Raw))
		}
		batch := map[string]any{
			"subject": map[string]any{"type": "errand_token", "id": staging},
			"action":  map[string]any{"name": "github.repo.read"},
			"evaluations": []any{
				map[string]any{"resource": map[string]any{"type": "repo", "id": "acme/api"}},
				map[string]any{"resource": map[string]any{"type": "repo", "id": "evil/api"}},
				map[string]any{"resource": map[string]any{"type": "repo", "id": "acme/web"}, "context": map[string]any{"tool": "shell"}},
				map[string]any{"resource": map[string]any{"type": "repo", "id": "acme/web"}, "context": map[string]any{"dataset": "finance/x"}},
			},
		}
		r := e.do("POST", "/access/v1/evaluations", rs, batch)
		if r.Status != http.StatusOK {
			t.Fatalf("%s: batch: %d %s", engine, r.Status, r.Raw)
		}
		answers[engine] = append(got, compact(t, r.Raw))
	}
	cedar, opa := answers[policy.EngineCedar], answers[policy.EngineOPA]
	denied, allowed := 0, 0
	for i := range cedar {
		if cedar[i] != opa[i] {
			t.Errorf("question %d:\n cedar %s\n opa   %s", i, cedar[i], opa[i])
		}
		if strings.HasPrefix(cedar[i], `{"decision":false`) {
			denied++
		} else if strings.HasPrefix(cedar[i], `{"decision":true`) {
			allowed++
		}
	}
	if denied < 6 || allowed < 2 {
		t.Fatalf("%d denied, %d allowed: the questions do not exercise both answers", denied, allowed)
	}
	for _, want := range []string{"deny-shell-tool", "deny-pii-datasets", "finance-step-up", "does not cover", "not grantable"} {
		if !strings.Contains(strings.Join(cedar, "\n"), want) {
			t.Errorf("no answer names %s", want)
		}
	}
}

func compact(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	return fmt.Sprint(b.String())
}

// TestInvariantsHoldWhateverTheRegoSays: with Rego that allows everything
// and names the blocked actions, the grants and the approvals in its
// rules, the hard blocks still refuse (blocked_action, scope_exceeds_grant,
// scope_exceeds_approval, approval_forbidden, token_not_accepted), each
// leaving the store unchanged and audited: the engine is asked only about
// what the invariants let through, and can only narrow it.
func TestInvariantsHoldWhateverTheRegoSays(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "open.rego"), []byte(`package errand

# Everything, by every name a policy could give it.
allow contains "everything"

allow contains "self-escalation" if input.action == "aws.iam.createaccesskey"

allow contains "any-grant" if input.context.operation in {"create", "approve", "mint", "evaluate"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{policyEngine: policy.EngineOPA, policies: []string{filepath.Join(dir, "*.rego")}})

	// A blocked action (credential changes, token minting) is never
	// grantable, whatever the policy allows.
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "x", "scopes": []string{"aws.iam.createaccesskey"}, "audiences": []string{apiStage},
	}), http.StatusForbidden, "blocked_action")

	// An approval beyond the user's grants.
	id := e.task("agent-1", "alice", "github.pr.write:acme/**")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "interns"), map[string]any{}),
		http.StatusForbidden, "scope_exceeds_grant")

	// An agent approving.
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", e.agent("agent-1"), map[string]any{}),
		http.StatusForbidden, "approval_forbidden")

	// A mint beyond the approval, and to an audience nobody configured.
	id = e.approved("agent-1", "alice", "github.repo.read:acme/api")
	before = e.snapshot()
	e.refused(before, mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/**"}, "audience": apiGitHub}),
		http.StatusForbidden, "scope_exceeds_approval")
	before = e.snapshot()
	e.refused(before, mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://other.example"}),
		http.StatusBadRequest, "invalid_request") // an unknown audience is denied

	// A task credential cannot buy another: Errand's token is no identity.
	tok := e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}), 201).str("access_token")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/tokens", tok, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}),
		http.StatusUnauthorized, "token_not_accepted")
}
