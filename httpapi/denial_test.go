package httpapi

import (
	"net/http"
	"testing"
)

// TestR06DenialCoversOverlappingRequests: once the user denies a step-up
// request, no request of the task overlapping it is asked again, whatever
// its tool, dataset or extra scopes: before, any change to the request's
// hash (another tool, one more already-approved scope) opened a fresh
// approval, the approval-fatigue pattern. The user lifts the denial by
// approving it explicitly; then that request goes through once.
func TestR06DenialCoversOverlappingRequests(t *testing.T) {
	e := policyEnv(t, envOptions{})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**", "github.repo.read:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub, "tool": "gh"}
	first := mintWith(e, "agent-1", id, write)
	if first.str("code") != "approval_required" {
		t.Fatalf("first prod write: %s", first.Raw)
	}
	apr := first.str("approval_id")
	e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/deny", e.user("alice", "eng"), map[string]any{"reason": "no"}), 200)

	for name, body := range map[string]map[string]any{
		"the same request":        write,
		"another tool":            {"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub, "tool": "curl"},
		"a dataset":               {"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub, "tool": "gh", "dataset": "public/x"},
		"an extra approved scope": {"scopes": []string{"github.pr.write:acme/api", "github.repo.read:acme/web"}, "audience": apiGitHub, "tool": "gh"},
		"no tool":                 {"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub},
	} {
		before := e.snapshot()
		r := mintWith(e, "agent-1", id, body)
		if r.str("code") != "policy_denied" || r.str("approval_id") != apr {
			t.Fatalf("%s after the denial: %d %s", name, r.Status, r.Raw)
		}
		e.policyDenied(before, r, "prod-writes-step-up")
	}
	// A request that does not overlap the denial is still asked for.
	if r := mintWith(e, "agent-1", id, map[string]any{"scopes": []string{"github.pr.write:acme/web"}, "audience": apiGitHub}); r.str("code") != "approval_required" {
		t.Fatalf("a request beside the denial: %s", r.Raw)
	}
	// Nobody but the user lifts it.
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/approvals/"+apr+"/approve", e.agent("agent-1"), nil), http.StatusForbidden, "approval_forbidden")
	// The user lifts it by approving it explicitly; the request goes through once.
	lifted := e.mustStatus(e.do("POST", "/v1/approvals/"+apr+"/approve", e.user("alice", "eng"), nil), 200)
	if lifted.str("status") != "approved" {
		t.Fatalf("lifted: %s", lifted.Raw)
	}
	e.mustStatus(mintWith(e, "agent-1", id, write), http.StatusCreated)
	if r := mintWith(e, "agent-1", id, write); r.str("code") != "approval_required" {
		t.Fatalf("after the lifted approval was used: %s", r.Raw)
	}
}
