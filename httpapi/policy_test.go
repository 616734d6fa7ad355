package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/policy"
)

// policyEnv serves the policies of testdata/policies, validated against
// testdata/schema.cedarschema; with o.policyEngine opa, their Rego
// translation in testdata/policies-rego.
func policyEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	o.policies, o.schema = []string{"testdata/policies/*.cedar"}, "testdata/schema.cedarschema"
	if o.policyEngine == policy.EngineOPA {
		o.policies, o.schema = []string{"testdata/policies-rego/*.rego"}, ""
	}
	return newEnvWith(t, o)
}

// bothEngines runs test once with each policy engine, the same
// expectations for both.
func bothEngines(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range []string{policy.EngineCedar, policy.EngineOPA} {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

func mintWith(e *env, agentSub, id string, body map[string]any) resp {
	e.t.Helper()
	return e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent(agentSub), body)
}

func strList(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

// lastRefusal is the detail of the newest request.refused event.
func (e *env) lastRefusal() map[string]any {
	e.t.Helper()
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{Type: broker.EventRequestRefused, Limit: 100000})
	if err != nil || len(evs) == 0 {
		e.t.Fatalf("no refusal recorded: %v", err)
	}
	var d map[string]any
	if err := json.Unmarshal(evs[len(evs)-1].Detail, &d); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// policyDenied asserts a policy_denied refusal naming exactly policies, in
// the problem and in the audit event.
func (e *env) policyDenied(before snapshot, r resp, policies ...string) {
	e.t.Helper()
	e.refused(before, r, http.StatusForbidden, "policy_denied")
	want := strings.Join(policies, ",")
	if got := strings.Join(strList(r.JSON["policies"]), ","); got != want {
		e.t.Fatalf("problem names policies %q, want %q: %s", got, want, r.Raw)
	}
	if got := strings.Join(strList(e.lastRefusal()["policies"]), ","); got != want {
		e.t.Fatalf("audit event names policies %q, want %q", got, want)
	}
	for _, p := range policies {
		if !strings.Contains(r.str("detail"), p) {
			e.t.Fatalf("detail %q does not name %s", r.str("detail"), p)
		}
	}
}

func TestPolicyDeniesTaskByRisk(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		before := e.snapshot()
		r := e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
			"on_behalf_of": "alice", "goal": "read orders", "scopes": []string{"db.orders.read:database/creds/task-ro"},
			"audiences": []string{apiStage},
		})
		e.policyDenied(before, r, "deny-medium-risk-reads")
		// A low-risk read is allowed by the same policies.
		e.task("agent-1", "alice", "github.repo.read:acme/**")
	})
}

func TestPolicyDeniesMintByEnvironment(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		before := e.snapshot()
		r := mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/infra"}, "audience": apiGitHub})
		e.policyDenied(before, r, "deny-prod-infra")
		// Nor through a pattern that covers it.
		for _, sc := range []string{"github.repo.read:acme/*", "github.repo.read:acme/**", "github.repo.read:acme/infra/**"} {
			before = e.snapshot()
			e.policyDenied(before, mintWith(e, "agent-1", id, map[string]any{"scopes": []string{sc}, "audience": apiGitHub}), "deny-prod-infra")
		}
		e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/*"}, "audience": apiStage}), 201)
		// The same read outside production, and another repository in it, pass.
		e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/infra"}, "audience": apiStage}), 201)
		e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}), 201)
	})
}

func TestPolicyDeniesByToolAndDataset(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		before := e.snapshot()
		r := e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
			"on_behalf_of": "alice", "goal": "x", "scopes": []string{"github.repo.read:acme/**"},
			"audiences": []string{apiStage}, "tool": "shell",
		})
		e.policyDenied(before, r, "deny-shell-tool")

		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		read := []string{"github.repo.read:acme/api"}
		before = e.snapshot()
		e.policyDenied(before, mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "tool": "shell"}), "deny-shell-tool")
		before = e.snapshot()
		e.policyDenied(before, mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "dataset": "pii/customers"}), "deny-pii-datasets")
		before = e.snapshot()
		e.policyDenied(before, mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "tool": "shell", "dataset": "pii/x"}),
			"deny-pii-datasets", "deny-shell-tool")
		e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "tool": "git", "dataset": "public/docs"}), 201)
	})
}

// Policies never loosen the invariants: an approval beyond the user's
// grants is refused whatever the policies permit.
func TestPoliciesCannotLoosenInvariants(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		id := e.task("agent-1", "alice", "github.pr.write:acme/**")
		before := e.snapshot()
		e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "interns"), map[string]any{}),
			http.StatusForbidden, "scope_exceeds_grant")
		before = e.snapshot()
		e.refused(before, e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
			"on_behalf_of": "alice", "goal": "x", "scopes": []string{"aws.iam.createaccesskey"}, "audiences": []string{apiStage},
		}), http.StatusForbidden, "blocked_action")
	})
}

// TestStepUpFlow: a @step_up policy turns a prod write into a request for
// the user's approval, bound to that exact request and good for one mint.
func TestStepUpFlow(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
		write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub, "tool": "gh"}

		before := e.snapshot()
		r := mintWith(e, "agent-1", id, write)
		if r.Status != http.StatusForbidden || r.str("code") != "approval_required" {
			t.Fatalf("first prod write: %d %s", r.Status, r.Raw)
		}
		// One event for this decision: approval.requested, with the code.
		if after := e.snapshot(); after.auditSeq != before.auditSeq+1 || after.tasks != before.tasks || after.credentials != before.credentials {
			t.Fatalf("approval_required wrote %d events, or changed tasks or credentials", after.auditSeq-before.auditSeq)
		}
		if evs, _ := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: before.auditSeq, Limit: 5}); len(evs) != 1 ||
			evs[0].Type != broker.EventApprovalRequested || !strings.Contains(string(evs[0].Detail), `"code":"approval_required"`) {
			t.Fatalf("the decision's event: %+v", evs)
		}
		apr := r.str("approval_id")
		if !broker.ValidStepUpID(apr) || strings.Join(strList(r.JSON["policies"]), ",") != "prod-writes-step-up" ||
			!strings.Contains(strings.Join(strList(r.JSON["reasons"]), ""), "production") {
			t.Fatalf("approval_required problem: %s", r.Raw)
		}
		// The deep link: the page where alice decides it.
		if got := r.str("approval_url"); got != publicURL+"/ui/approvals/"+apr {
			t.Fatalf("approval_url = %q, want the approval's page", got)
		}
		// Asking again while it waits points at the same approval, adds none.
		before = e.snapshot()
		again := mintWith(e, "agent-1", id, write)
		e.refused(before, again, http.StatusForbidden, "approval_required")
		if again.str("approval_id") != apr {
			t.Fatalf("a retry opened another approval: %s", again.Raw)
		}

		// The agent sees it waiting; the user finds it in their list.
		got := e.mustStatus(e.do("GET", "/v1/approvals/"+apr, e.agent("agent-1"), nil), 200)
		if got.str("status") != "pending" || got.str("task_id") != id || got.str("tool") != "gh" {
			t.Fatalf("approval: %s", got.Raw)
		}
		list := e.mustStatus(e.do("GET", "/v1/approvals?status=pending", e.user("alice", "eng"), nil), 200)
		if l := list.JSON["approvals"].([]any); len(l) != 1 || l[0].(map[string]any)["id"] != apr {
			t.Fatalf("alice's pending approvals: %s", list.Raw)
		}
		before = e.snapshot()
		e.refused(before, e.do("GET", "/v1/approvals/"+apr, e.agent("agent-2"), nil), http.StatusForbidden, "not_task_party")

		// Nobody but the task's user decides it: not the agent, not a colleague.
		before = e.snapshot()
		e.refused(before, e.do("POST", "/v1/approvals/"+apr+"/approve", e.agent("agent-1"), nil), http.StatusForbidden, "approval_forbidden")
		before = e.snapshot()
		e.refused(before, e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("mallory", "eng"), nil), http.StatusForbidden, "approval_forbidden")
		// The refusal names the approval and its task, which the URL does not.
		if evs, _ := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: before.auditSeq, Limit: 5}); len(evs) != 1 ||
			evs[0].TaskID != id || !strings.Contains(string(evs[0].Detail), `"approval":"`+apr+`"`) {
			t.Fatalf("the refusal's event: %+v", evs)
		}

		ok := e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), 200)
		if ok.str("status") != "approved" || ok.JSON["decided_at"] == nil {
			t.Fatalf("approved: %s", ok.Raw)
		}
		// The user's decision is timed, by kind, in errand_approval_seconds.
		if m := metricsText(t, e); !strings.Contains(m, "\nerrand_approval_seconds_count{decision=\"approved\",kind=\"step_up\"} 1\n") {
			t.Fatalf("errand_approval_seconds does not count the step-up's approval:\n%s", m)
		}
		before = e.snapshot()
		e.refused(before, e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), http.StatusConflict, "task_not_active")

		// It covers that request only: another resource, or another tool, asks anew.
		other := mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/web"}, "audience": apiGitHub, "tool": "gh"})
		if other.str("code") != "approval_required" || other.str("approval_id") == apr {
			t.Fatalf("another resource used the approval: %s", other.Raw)
		}
		otherTool := mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub, "tool": "curl"})
		if otherTool.str("code") != "approval_required" || otherTool.str("approval_id") == apr {
			t.Fatalf("another tool used the approval: %s", otherTool.Raw)
		}

		// The approved request succeeds once.
		minted := e.mustStatus(mintWith(e, "agent-1", id, write), 201)
		c, err := e.st.Credential(context.Background(), minted.str("jti"))
		if err != nil || c.StepUpID != apr {
			t.Fatalf("credential %+v %v: not recorded under the approval", c, err)
		}
		if used := e.mustStatus(e.do("GET", "/v1/approvals/"+apr, e.user("alice", "eng"), nil), 200); used.str("status") != "used" {
			t.Fatalf("after the mint: %s", used.Raw)
		}
		third := mintWith(e, "agent-1", id, write)
		if third.str("code") != "approval_required" || third.str("approval_id") == apr {
			t.Fatalf("the approval was used twice: %s", third.Raw)
		}

		// A denial is final for that approval; the request stays refused.
		den := e.mustStatus(e.do("POST", "/v1/approvals/"+third.str("approval_id")+"/deny", e.user("alice", "eng"),
			map[string]any{"reason": "not today"}), 200)
		if den.str("status") != "denied" || den.str("deny_reason") != "not today" {
			t.Fatalf("denied: %s", den.Raw)
		}
		// A denied request is not asked again within the task (A07).
		before = e.snapshot()
		e.policyDenied(before, mintWith(e, "agent-1", id, write), "prod-writes-step-up")
		// Outside production the write needs no step-up.
		e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiStage}), 201)

		// Every step of it is in the audit trail, as auditors read it.
		e.mustStatus(e.do("GET", "/v1/audit/events?task_id="+id, e.user("carol", "auditors"), nil), 200)
		e.mustStatus(e.do("GET", "/v1/tasks/"+id+"/history", e.user("carol", "auditors"), nil), 200)
		evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{TaskID: id, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, ev := range evs {
			count[ev.Type]++
		}
		if count[broker.EventApprovalRequested] != 4 || count[broker.EventApprovalApproved] != 1 || count[broker.EventApprovalDenied] != 1 {
			t.Fatalf("audit trail: %v", count)
		}
	})
}

// A closed task's step-up approvals cannot be decided, and a step-up never
// revives a task.
func TestStepUpNeedsAnActiveTask(t *testing.T) {
	e := policyEnv(t, envOptions{})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	r := mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub})
	apr := r.str("approval_id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), http.StatusConflict, "task_not_active")
	before = e.snapshot()
	e.refused(before, e.do("GET", "/v1/approvals/apr_nope", e.user("alice", "eng"), nil), http.StatusNotFound, "not_found")
}

// The pending step-ups of one task are capped, so an agent cannot flood
// its user.
func TestStepUpPendingCap(t *testing.T) {
	e := policyEnv(t, envOptions{})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	for i := 0; i < 5; i++ {
		r := mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/r" + string(rune('a'+i))}, "audience": apiGitHub})
		if r.str("code") != "approval_required" {
			t.Fatalf("request %d: %s", i, r.Raw)
		}
	}
	before := e.snapshot()
	e.refused(before, mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/rz"}, "audience": apiGitHub}),
		http.StatusTooManyRequests, "rate_limited")
}

func TestBudgetExhausted(t *testing.T) {
	e := newEnvWith(t, envOptions{budget: broker.Budget{MaxCredentials: 2}})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	task := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200)
	if task.JSON["max_credentials"] != float64(2) || task.JSON["max_resources"] != nil {
		t.Fatalf("task budget: %s", task.Raw)
	}
	key := func(k string) resp {
		b := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", strings.NewReader(mustJSON(t, b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.agent("agent-1"))
		req.Header.Set("Idempotency-Key", k)
		return e.send(req, []byte(mustJSON(t, b)))
	}
	first := e.mustStatus(key("k1"), 201)
	e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
	before := e.snapshot()
	r := e.mint("agent-1", id, "github.repo.read:acme/api")
	e.refused(before, r, http.StatusTooManyRequests, "budget_exhausted")
	if r.Header.Get("Retry-After") != "" {
		t.Fatalf("a spent budget does not come back; Retry-After %q", r.Header.Get("Retry-After"))
	}
	// A retry of a mint already made is no new credential: it is answered.
	if again := e.mustStatus(key("k1"), 201); again.str("jti") != first.str("jti") {
		t.Fatalf("replay: %s", again.Raw)
	}

	// A task may ask for a smaller budget, never a larger one.
	create := func(body map[string]any) resp {
		body["on_behalf_of"], body["goal"], body["audiences"] = "alice", "x", []string{apiGitHub}
		body["scopes"] = []string{"github.repo.read:acme/**"}
		return e.do("POST", "/v1/tasks", e.agent("agent-1"), body)
	}
	if big := e.mustStatus(create(map[string]any{"max_credentials": 50}), 201); big.JSON["max_credentials"] != float64(2) {
		t.Fatalf("a task raised its budget: %s", big.Raw)
	}
	before = e.snapshot()
	e.refused(before, create(map[string]any{"max_credentials": -1}), http.StatusBadRequest, "invalid_request")

	small := e.mustStatus(create(map[string]any{"max_resources": 1}), 201)
	sid := small.str("id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+sid+"/approve", e.user("alice", "eng"), map[string]any{}), 200)
	e.mustStatus(e.mint("agent-1", sid, "github.repo.read:acme/a"), 201)
	before = e.snapshot()
	e.refused(before, e.mint("agent-1", sid, "github.repo.read:acme/b"), http.StatusTooManyRequests, "budget_exhausted")
	// A pattern would reach resources without number: under a resource
	// budget only concrete resources are minted.
	before = e.snapshot()
	e.refused(before, e.mint("agent-1", sid, "github.repo.read:acme/*"), http.StatusTooManyRequests, "budget_exhausted")
}

// evaluate asks the AuthZEN endpoint as resource server rs.
func (e *env) evaluate(caller string, body map[string]any) resp {
	e.t.Helper()
	return e.do("POST", "/access/v1/evaluation", caller, body)
}

func azBody(token, action, resource string, ctx map[string]any) map[string]any {
	b := map[string]any{
		"subject":  map[string]any{"type": "errand_token", "id": token},
		"action":   map[string]any{"name": action},
		"resource": map[string]any{"type": "repository", "id": resource},
	}
	if ctx != nil {
		b["context"] = ctx
	}
	return b
}

func decision(t *testing.T, r resp) bool {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("evaluation: %d %s", r.Status, r.Raw)
	}
	d, ok := r.JSON["decision"].(bool)
	reason, _ := r.JSON["context"].(map[string]any)["reason_admin"].(map[string]any)["en"].(string)
	if !ok || reason == "" {
		t.Fatalf("evaluation without a decision or a reason: %s", r.Raw)
	}
	return d
}

func TestAuthZENEvaluation(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		rs := e.resource("gateway")
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		staging := e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/**"}, "audience": apiStage}), 201).str("access_token")
		prod := e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}), 201).str("access_token")

		cases := []struct {
			name   string
			body   map[string]any
			allow  bool
			reason string
		}{
			{"active, in scope, allowed", azBody(staging, "github.repo.read", "acme/api", nil), true, "allowed"},
			{"action name is case-folded", azBody(staging, "GitHub.Repo.Read", "acme/api", nil), true, "allowed"},
			{"a prod token on its own resource", azBody(prod, "github.repo.read", "acme/api", nil), true, "allowed"},
			{"a prod token beyond its scope", azBody(prod, "github.repo.read", "acme/infra", nil), false, "does not cover"},
			{"acme/infra outside prod", azBody(staging, "github.repo.read", "acme/infra", nil), true, "allowed"},
			{"out of scope: another action", azBody(staging, "github.pr.write", "acme/api", nil), false, "does not cover"},
			{"out of scope: another owner", azBody(staging, "github.repo.read", "evil/api", nil), false, "does not cover"},
			{"a pattern is not a resource", azBody(staging, "github.repo.read", "acme/*", nil), false, "concrete"},
			{"a blocked action", azBody(staging, "aws.iam.createaccesskey", "x", nil), false, "not grantable"},
			{"an unknown action", azBody(staging, "nope.nope", "acme/api", nil), false, "not grantable"},
			{"tool from the context", azBody(staging, "github.repo.read", "acme/api", map[string]any{"tool": "shell"}), false, "deny-shell-tool"},
			{"dataset from the context", azBody(staging, "github.repo.read", "acme/api", map[string]any{"dataset": "pii/x", "trace": 1}), false, "deny-pii-datasets"},
			{"garbage token", azBody("not-a-token", "github.repo.read", "acme/api", nil), false, "not active"},
			{"an identity token is no Errand token", azBody(e.agent("agent-1"), "github.repo.read", "acme/api", nil), false, "not active"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := e.evaluate(rs, c.body)
				if got := decision(t, r); got != c.allow || !strings.Contains(string(r.Raw), c.reason) {
					t.Fatalf("decision %v, want %v with %q: %s", got, c.allow, c.reason, r.Raw)
				}
			})
		}

		// Revoked: closing the task turns every decision to false at once, on
		// this replica and on another.
		other := e.replica()
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
		for _, srv := range []*env{e, other} {
			r := srv.evaluate(rs, azBody(staging, "github.repo.read", "acme/api", nil))
			if decision(t, r) || !strings.Contains(string(r.Raw), "not active") {
				t.Fatalf("a revoked token: %s", r.Raw)
			}
		}

		// Refusals of the request itself are problems, audited.
		before := e.snapshot()
		e.refused(before, e.evaluate(e.agent("agent-1"), azBody(staging, "github.repo.read", "acme/api", nil)), http.StatusForbidden, "wrong_principal_kind")
		before = e.snapshot()
		bad := azBody(staging, "github.repo.read", "acme/api", nil)
		bad["subject"] = map[string]any{"type": "user", "id": "alice"}
		e.refused(before, e.evaluate(rs, bad), http.StatusBadRequest, "invalid_request")
		before = e.snapshot()
		bad = azBody(staging, "github.repo.read", "acme/api", map[string]any{"tool": 7})
		e.refused(before, e.evaluate(rs, bad), http.StatusBadRequest, "invalid_request")
		before = e.snapshot()
		e.refused(before, e.evaluate("", azBody(staging, "github.repo.read", "acme/api", nil)), http.StatusUnauthorized, "invalid_token")
	})
}

// The introspection binding of an audience applies to decisions too: a
// resource server not named for it gets false, as introspection gets
// active: false.
func TestAuthZENHonoursIntrospectors(t *testing.T) {
	e := newEnvWith(t, envOptions{introspectors: []string{"stage-api"}})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	tok := e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/**"}, "audience": apiStage}), 201).str("access_token")
	if !decision(t, e.evaluate(e.resource("stage-api"), azBody(tok, "github.repo.read", "acme/api", nil))) {
		t.Fatal("the audience's own resource server was refused")
	}
	if decision(t, e.evaluate(e.resource("other-api"), azBody(tok, "github.repo.read", "acme/api", nil))) {
		t.Fatal("another resource server got a decision for a token it may not introspect")
	}
}

func TestAuthZENBatch(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		e := policyEnv(t, envOptions{policyEngine: engine})
		rs := e.resource("gateway")
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		tok := e.mustStatus(mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.repo.read:acme/**"}, "audience": apiStage}), 201).str("access_token")
		body := func(semantic string) map[string]any {
			b := map[string]any{
				"subject": map[string]any{"type": "errand_token", "id": tok},
				"action":  map[string]any{"name": "github.repo.read"},
				"evaluations": []any{
					map[string]any{"resource": map[string]any{"type": "repo", "id": "acme/api"}},
					map[string]any{"resource": map[string]any{"type": "repo", "id": "evil/api"}},
					map[string]any{"resource": map[string]any{"type": "repo", "id": "acme/web"}, "context": map[string]any{"tool": "git"}},
				},
			}
			if semantic != "" {
				b["options"] = map[string]any{"evaluations_semantic": semantic}
			}
			return b
		}
		got := func(r resp) string {
			t.Helper()
			if r.Status != 200 {
				t.Fatalf("batch: %d %s", r.Status, r.Raw)
			}
			var out []string
			for _, ev := range r.JSON["evaluations"].([]any) {
				if ev.(map[string]any)["decision"].(bool) {
					out = append(out, "T")
				} else {
					out = append(out, "F")
				}
			}
			return strings.Join(out, "")
		}
		for semantic, want := range map[string]string{"": "TFT", "execute_all": "TFT", "deny_on_first_deny": "TF", "permit_on_first_permit": "T"} {
			if g := got(e.do("POST", "/access/v1/evaluations", rs, body(semantic))); g != want {
				t.Errorf("%q: %s, want %s", semantic, g, want)
			}
		}
		before := e.snapshot()
		bad := body("")
		bad["evaluations"] = append(bad["evaluations"].([]any), map[string]any{"resource": map[string]any{"type": "repo"}})
		e.refused(before, e.do("POST", "/access/v1/evaluations", rs, bad), http.StatusBadRequest, "invalid_request")
		before = e.snapshot()
		e.refused(before, e.do("POST", "/access/v1/evaluations", rs, body("first_one_wins")), http.StatusBadRequest, "invalid_request")

		meta := e.mustStatus(e.do("GET", "/.well-known/authzen-configuration", "", nil), 200)
		if meta.str("access_evaluation_endpoint") != publicURL+"/access/v1/evaluation" {
			t.Fatalf("metadata: %s", meta.Raw)
		}
	})
}

// A step-up policy holds at the enforcement point too: only a token minted
// under the user's step-up approval gets a true decision for what the
// policy guards. The policy is added to a running server (a reload).
func TestAuthZENStepUp(t *testing.T) {
	bothEngines(t, authZENStepUp)
}

func authZENStepUp(t *testing.T, engine string) {
	dir := t.TempDir()
	src, ext, broken := "testdata/policies", ".cedar", "forbid (principal,"
	if engine == policy.EngineOPA {
		src, ext, broken = "testdata/policies-rego", ".rego", "package errand\n\ndeny contains \"x\" if {"
	}
	copyFile := func(name string) {
		name += ext
		raw, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("base")
	e := newEnvWith(t, envOptions{policyEngine: engine, policies: []string{filepath.Join(dir, "*"+ext)}})
	rs := e.resource("gateway")
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub}
	plain := e.mustStatus(mintWith(e, "agent-1", id, write), 201).str("access_token")

	copyFile("stepup")
	if _, err := e.engine.Reload(); err != nil {
		t.Fatal(err)
	}
	r := e.evaluate(rs, azBody(plain, "github.pr.write", "acme/api", nil))
	if decision(t, r) || !strings.Contains(string(r.Raw), "prod-writes-step-up") {
		t.Fatalf("a token minted before the step-up policy: %s", r.Raw)
	}
	apr := mintWith(e, "agent-1", id, write).str("approval_id")
	e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), 200)
	stepped := e.mustStatus(mintWith(e, "agent-1", id, write), 201).str("access_token")
	if r := e.evaluate(rs, azBody(stepped, "github.pr.write", "acme/api", nil)); !decision(t, r) || !strings.Contains(string(r.Raw), apr) {
		t.Fatalf("a token minted under the step-up: %s", r.Raw)
	}

	// A reload that fails keeps the policies in force.
	if err := os.WriteFile(filepath.Join(dir, "broken"+ext), []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.engine.Reload(); err == nil || !strings.Contains(err.Error(), "broken"+ext+":") {
		t.Fatalf("a broken reload: %v", err)
	}
	if r := mintWith(e, "agent-1", id, write); r.str("code") != "approval_required" {
		t.Fatalf("after a broken reload the step-up policy must still hold: %s", r.Raw)
	}
}

// The tool and dataset a task was asked and approved for bind its mints: a
// mint may repeat them, not change them, and one that leaves them out is
// decided with the task's (so a rule on them cannot be skipped by silence).
func TestMintIsBoundToTheTasksToolAndDataset(t *testing.T) {
	e := policyEnv(t, envOptions{})
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "quarterly report", "scopes": []string{"github.repo.read:acme/**"},
		"audiences": []string{apiStage}, "tool": "gh", "dataset": "finance/q3",
	}), 201)
	id := r.str("id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), 200)
	read := []string{"github.repo.read:acme/api"}
	before := e.snapshot()
	e.refused(before, mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "tool": "curl"}),
		http.StatusForbidden, "scope_exceeds_approval")
	before = e.snapshot()
	e.refused(before, mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "dataset": "public/x"}),
		http.StatusForbidden, "scope_exceeds_approval")
	// Silence is the task's dataset: the finance step-up still speaks.
	silent := mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage})
	if silent.str("code") != "approval_required" || strings.Join(strList(silent.JSON["policies"]), ",") != "finance-step-up" {
		t.Fatalf("a mint without a dataset skipped the task's: %s", silent.Raw)
	}
	apr := e.mustStatus(e.do("GET", "/v1/approvals/"+silent.str("approval_id"), e.user("alice", "eng"), nil), 200)
	if apr.str("tool") != "gh" || apr.str("dataset") != "finance/q3" {
		t.Fatalf("the approval does not show what is asked: %s", apr.Raw)
	}
	// Naming them explicitly is the same request.
	same := mintWith(e, "agent-1", id, map[string]any{"scopes": read, "audience": apiStage, "tool": "gh", "dataset": "finance/q3"})
	if same.str("approval_id") != silent.str("approval_id") {
		t.Fatalf("the explicit request is another: %s", same.Raw)
	}
}

// A09: concurrent mints race for one approved step-up; exactly one wins.
func TestStepUpIsUsedOnceUnderRace(t *testing.T) {
	e := policyEnv(t, envOptions{})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub}
	apr := mintWith(e, "agent-1", id, write).str("approval_id")
	e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), 200)
	tok := e.agent("agent-1")
	const n = 8
	codes := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			raw := mustJSON(t, write)
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", strings.NewReader(raw))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := e.srv.Client().Do(req)
			if err != nil {
				codes <- err.Error()
				return
			}
			defer res.Body.Close()
			var p struct{ Code string }
			_ = json.NewDecoder(res.Body).Decode(&p)
			if res.StatusCode == 201 {
				p.Code = "minted"
			}
			codes <- p.Code
		}()
	}
	count := map[string]int{}
	for i := 0; i < n; i++ {
		count[<-codes]++
	}
	if count["minted"] != 1 || count["approval_required"] != n-1 {
		t.Fatalf("outcomes %v: one approval must give exactly one credential", count)
	}
	var used int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM credentials WHERE step_up_id = $1`, apr).Scan(&used); err != nil || used != 1 {
		t.Fatalf("%d credentials under the approval (%v)", used, err)
	}
}

// F04: a retry with the same Idempotency-Key returns the credential the
// step-up allowed, and uses no second approval.
func TestStepUpWithIdempotencyKey(t *testing.T) {
	e := policyEnv(t, envOptions{})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub}
	mint := func(key string) resp {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", strings.NewReader(mustJSON(t, write)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.agent("agent-1"))
		req.Header.Set("Idempotency-Key", key)
		return e.send(req, []byte(mustJSON(t, write)))
	}
	apr := mint("k1").str("approval_id")
	e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), 200)
	first := e.mustStatus(mint("k1"), 201)
	again := e.mustStatus(mint("k1"), 201)
	if again.str("jti") != first.str("jti") || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retry minted another credential: %s", again.Raw)
	}
	if other := mint("k2"); other.str("code") != "approval_required" || other.str("approval_id") == apr {
		t.Fatalf("a new key used the spent approval: %s", other.Raw)
	}
}

// F07: step-up approvals expire on the database's clock, waiting or
// approved-but-unused.
func TestStepUpExpires(t *testing.T) {
	e := policyEnv(t, envOptions{stepUpTTL: time.Second})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub}
	late := mintWith(e, "agent-1", id, write).str("approval_id")
	time.Sleep(1100 * time.Millisecond)
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/approvals/"+late+"/approve", e.user("alice", "eng"), nil), http.StatusConflict, "task_not_active")
	if got := e.mustStatus(e.do("GET", "/v1/approvals/"+late, e.agent("agent-1"), nil), 200); got.str("status") != "expired" {
		t.Fatalf("a waiting approval past its time: %s", got.Raw)
	}
	fresh := mintWith(e, "agent-1", id, write).str("approval_id")
	if fresh == late {
		t.Fatal("an expired approval was offered again")
	}
	e.mustStatus(e.do("POST", "/v1/approvals/"+fresh+"/approve", e.user("alice", "eng"), nil), 200)
	time.Sleep(1100 * time.Millisecond)
	if r := mintWith(e, "agent-1", id, write); r.str("code") != "approval_required" || r.str("approval_id") == fresh {
		t.Fatalf("an approval was used after it expired: %s", r.Raw)
	}
}

// An approval of one step-up rule, for one tool and dataset, is no
// approval of another at the enforcement point.
func TestAuthZENStepUpCoversOnlyWhatWasApproved(t *testing.T) {
	e := policyEnv(t, envOptions{})
	rs := e.resource("gateway")
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub, "tool": "gh"}
	apr := mintWith(e, "agent-1", id, write).str("approval_id")
	e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), 200)
	tok := e.mustStatus(mintWith(e, "agent-1", id, write), 201).str("access_token")
	for _, c := range []struct {
		ctx    map[string]any
		allow  bool
		reason string
	}{
		{map[string]any{"tool": "gh"}, true, apr},
		{map[string]any{"tool": "curl"}, false, "another tool"},
		{map[string]any{"tool": "gh", "dataset": "finance/q3"}, false, "finance-step-up"},
	} {
		r := e.evaluate(rs, azBody(tok, "github.pr.write", "acme/api", c.ctx))
		if decision(t, r) != c.allow || !strings.Contains(string(r.Raw), c.reason) {
			t.Errorf("%v: %s", c.ctx, r.Raw)
		}
	}
}

// Concurrent mints of one task commit in groups; the budget still holds:
// each mint sees the ones recorded before it, committed or in its group.
func TestBudgetHoldsUnderConcurrentMints(t *testing.T) {
	e := newEnvWith(t, envOptions{budget: broker.Budget{MaxCredentials: 3}})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	tok := e.agent("agent-1")
	const n = 12
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			raw := mustJSON(t, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub})
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", strings.NewReader(raw))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := e.srv.Client().Do(req)
			if err != nil {
				codes <- 0
				return
			}
			res.Body.Close()
			codes <- res.StatusCode
		}()
	}
	count := map[int]int{}
	for i := 0; i < n; i++ {
		count[<-codes]++
	}
	if count[201] != 3 || count[429] != n-3 {
		t.Fatalf("outcomes %v: a budget of 3 must give exactly 3 credentials", count)
	}
	cs, err := e.st.Credentials(context.Background(), broker.HistoryFilter{TaskID: id, Limit: 100})
	if err != nil || len(cs) != 3 {
		t.Fatalf("%d credentials recorded (%v)", len(cs), err)
	}
}
