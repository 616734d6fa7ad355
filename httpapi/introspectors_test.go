package httpapi

import (
	"net/http"
	"testing"
	"time"
)

// TestO06UnboundAudienceIsClosedByDefault: an audience with neither
// introspectors nor any_introspector answers {"active":false} to every
// resource server, however valid the token; an audience that opts in
// answers any resource server.
func TestO06UnboundAudienceIsClosedByDefault(t *testing.T) {
	e := newEnvWith(t, envOptions{closedStage: true})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	stage := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("agent-1"), map[string]any{
		"scopes": []string{"github.repo.read:acme/api"}, "audience": apiStage,
	}), http.StatusCreated).str("access_token")
	open := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), http.StatusCreated).str("access_token")
	for _, rs := range []string{"stage-gateway", "prod-gateway"} {
		if r := e.mustStatus(e.introspect(e.resource(rs), stage), 200); string(r.Raw) != "{\"active\":false}\n" {
			t.Fatalf("%s introspected a token of a closed audience: %s", rs, r.Raw)
		}
		if r := e.mustStatus(e.introspect(e.resource(rs), open), 200); r.JSON["active"] != true {
			t.Fatalf("%s introspecting a token of an audience that opted in: %s", rs, r.Raw)
		}
	}
}

// TestR07FeedCarriesOnlyTheCallersAudiences: the revocation feed, polled
// or streamed, shows a resource server only the revocations of audiences
// it may introspect: apiStage's are for stage-gateway alone; apiGitHub
// opted in, so everyone sees its. The polling cursor moves past what is
// hidden, so nothing is read twice.
func TestR07FeedCarriesOnlyTheCallersAudiences(t *testing.T) {
	e := newEnvWith(t, envOptions{introspectors: []string{"stage-gateway"}})
	head := func(rs string) string {
		r := e.mustStatus(e.do("GET", "/v1/revocations?limit=1000", e.resource(rs), nil), 200)
		for len(r.JSON["revocations"].([]any)) == 1000 {
			r = e.mustStatus(e.do("GET", "/v1/revocations?limit=1000&since="+r.str("next_cursor"), e.resource(rs), nil), 200)
		}
		return r.str("next_cursor")
	}
	stageFrom, prodFrom := head("stage-gateway"), head("prod-gateway")
	streamProd, stop := e.openStreamAs(t, "prod-gateway", prodFrom)
	defer stop()

	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	stageJTI := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("agent-1"), map[string]any{
		"scopes": []string{"github.repo.read:acme/api"}, "audience": apiStage,
	}), http.StatusCreated).str("jti")
	githubJTI := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), http.StatusCreated).str("jti")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), http.StatusOK)

	jtis := func(rs, since string) (map[string]bool, string) {
		r := e.mustStatus(e.do("GET", "/v1/revocations?since="+since, e.resource(rs), nil), 200)
		out := map[string]bool{}
		for _, v := range r.JSON["revocations"].([]any) {
			out[v.(map[string]any)["jti"].(string)] = true
		}
		return out, r.str("next_cursor")
	}
	got, _ := jtis("stage-gateway", stageFrom)
	if !got[stageJTI] || !got[githubJTI] || len(got) != 2 {
		t.Fatalf("stage-gateway's feed: %v, want both revocations", got)
	}
	got, next := jtis("prod-gateway", prodFrom)
	if got[stageJTI] || !got[githubJTI] || len(got) != 1 {
		t.Fatalf("prod-gateway's feed: %v, want only apiGitHub's revocation", got)
	}
	if again, _ := jtis("prod-gateway", next); len(again) != 0 {
		t.Fatalf("the cursor did not move past what was read: %v", again)
	}
	// The stream: prod-gateway hears apiGitHub's revocation, and no more.
	if ev := recv(t, streamProd); ev.data.JTI != githubJTI {
		t.Fatalf("prod-gateway's stream sent %s, want %s", ev.data.JTI, githubJTI)
	}
	select {
	case ev := <-streamProd:
		t.Fatalf("prod-gateway's stream sent another revocation: %s", ev.data.JTI)
	case <-time.After(1500 * time.Millisecond):
	}
}
