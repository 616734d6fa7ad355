package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
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
