package httpapi

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// Mint's fast path decides on this replica's snapshot of the task, so
// everything that ends or changes the task elsewhere must still stop the
// next mint here: replica A mints (its snapshot is warm, its second mint
// takes the fast path), replica B ends the task, and A's next mint is
// refused with the slow path's code, audited, and records nothing.
func TestQuickMintReChecksTheTaskAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	b := e.replica()
	admin := e.users.Token(t, "root", audience, map[string]any{"groups": []string{"admins"}})
	cases := []struct {
		name   string
		agent  string
		end    func(id string)
		status int
		code   string
	}{
		{name: "closed on the other replica", agent: "agent-close", end: func(id string) {
			b.mustStatus(b.do("POST", "/v1/tasks/"+id+"/close", b.user("alice"), nil), http.StatusOK)
		}, status: http.StatusConflict, code: "task_not_active"},
		{name: "agent suspended on the other replica", agent: "agent-suspend", end: func(string) {
			b.mustStatus(b.do("POST", "/v1/agents/suspend", admin, map[string]any{
				"agent": e.agents.URL + "#agent-suspend", "reason": "test"}), http.StatusOK)
		}, status: http.StatusForbidden, code: "agent_suspended"},
		{name: "expiry moved earlier, then passed", agent: "agent-expire", end: func(id string) {
			// The snapshot still says an hour: only the database knows.
			if _, err := e.st.Pool().Exec(context.Background(),
				`UPDATE tasks SET expires_at = now() + interval '1200 milliseconds' WHERE id = $1`, id); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1300 * time.Millisecond)
		}, status: http.StatusConflict, code: "task_not_active"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := e.approved(tc.agent, "alice", "github.repo.read:acme/**")
			e.mustStatus(e.mint(tc.agent, id, "github.repo.read:acme/api"), http.StatusCreated)
			quick := e.svc.QuickMints()
			e.mustStatus(e.mint(tc.agent, id, "github.repo.read:acme/api"), http.StatusCreated)
			if e.svc.QuickMints() != quick+1 {
				t.Fatal("the second mint of a task did not take the fast path")
			}
			tc.end(id)
			before := e.snapshot()
			e.refused(before, e.mint(tc.agent, id, "github.repo.read:acme/api"), tc.status, tc.code)
			if e.svc.QuickMints() != quick+1 {
				t.Fatal("the fast path recorded a mint of an ended task")
			}
		})
	}
}

// The fast path refuses nothing itself: a request its snapshot cannot
// allow for certain goes to the slow path, which answers with the same
// refusal (and audit event) as ever.
func TestQuickMintLeavesRefusalsToTheSlowPath(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/api")
	e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), http.StatusCreated)
	quick := e.svc.QuickMints()
	for _, r := range []struct {
		body   map[string]any
		status int
		code   string
	}{
		{map[string]any{"scopes": []string{"github.repo.read:acme/other"}, "audience": apiGitHub}, http.StatusForbidden, "scope_exceeds_approval"},
		{map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://unknown.example"}, http.StatusBadRequest, "invalid_request"},
		{map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub, "tool": "other-tool"}, 0, ""},
	} {
		before := e.snapshot()
		resp := e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("agent-1"), r.body)
		if r.status == 0 {
			e.mustStatus(resp, http.StatusCreated) // a task that named no tool leaves it to the request
			continue
		}
		e.refused(before, resp, r.status, r.code)
	}
	if got := e.svc.QuickMints(); got != quick+1 {
		t.Fatalf("fast path mints %d, want %d (only the allowed one)", got-quick, 1)
	}
	// Another agent's mint on a warm task is refused by the slow path.
	before := e.snapshot()
	e.refused(before, e.mint("agent-2", id, "github.repo.read:acme/api"), http.StatusForbidden, "not_task_party")
}
