package httpapi

import (
	"net/http"
	"testing"

	"github.com/errandhq/errand/internal/testing/testpg"
)

// TestF01DatabaseOutage (F01): with PostgreSQL unreachable, every endpoint
// answers 503 with Retry-After — never a credential, never 401, never
// active: true — and recovers when the database returns.
func TestF01DatabaseOutage(t *testing.T) {
	proxy, u := testpg.NewProxy(t, testpg.URL(t))
	e := newEnv(t, u)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	pending := e.task("agent-1", "alice", "github.repo.read:acme/**")
	rs := e.resource("rs")
	agentTok, userTok := e.agent("agent-1"), e.user("alice", "eng")

	proxy.Cut()
	checks := []struct {
		name string
		do   func() resp
	}{
		{"mint", func() resp { return e.mint("agent-1", id, "github.repo.read:acme/api") }},
		{"create", func() resp {
			return e.do("POST", "/v1/tasks", agentTok, map[string]any{"on_behalf_of": "alice", "goal": "g",
				"scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}})
		}},
		{"approve", func() resp { return e.do("POST", "/v1/tasks/"+pending+"/approve", userTok, nil) }},
		{"close", func() resp { return e.do("POST", "/v1/tasks/"+id+"/close", agentTok, nil) }},
		{"introspect", func() resp { return e.introspect(rs, at) }},
		{"get", func() resp { return e.do("GET", "/v1/tasks/"+id, agentTok, nil) }},
		{"refusal that cannot be audited", func() resp { return e.mint("agent-1", id, "github.pr.write:acme/api") }},
		{"readyz", func() resp { return e.do("GET", "/readyz", "", nil) }},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			r := c.do()
			if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
				t.Fatalf("%d (Retry-After %q): %s", r.Status, r.Header.Get("Retry-After"), r.Raw)
			}
			if r.JSON["active"] == true || r.JSON["access_token"] != nil {
				t.Fatalf("outage leaked a credential or an active answer: %s", r.Raw)
			}
		})
	}
	e.t = t
	proxy.Restore()
	e.mustStatus(e.do("GET", "/readyz", "", nil), 200)
	e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
	if r := e.introspect(rs, at); r.JSON["active"] != true {
		t.Fatalf("after recovery: %s", r.Raw)
	}
}
