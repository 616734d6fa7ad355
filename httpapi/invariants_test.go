package httpapi

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestInvariantRefusals: one named case per invariant and refusal code of
// DESIGN.md. Each asserts the status, the code, that tasks and credentials
// are unchanged, and the single request.refused audit event.
func TestInvariantRefusals(t *testing.T) {
	e := newEnv(t)
	type attack struct {
		name   string
		setup  func() string // returns a task id (may be "")
		do     func(id string) resp
		status int
		code   string
	}
	scopes := []string{"github.repo.read:acme/**", "github.pr.write:acme/api"}
	pending := func() string { return e.task("agent-1", "alice", scopes...) }
	approved := func() string {
		return e.approved("agent-1", "alice", "github.repo.read:acme/api", "github.pr.write:acme/api")
	}
	approve := func(tok string, body any) func(string) resp {
		return func(id string) resp { return e.do("POST", "/v1/tasks/"+id+"/approve", tok, body) }
	}
	mint := func(tok string, body any) func(string) resp {
		return func(id string) resp { return e.do("POST", "/v1/tasks/"+id+"/tokens", tok, body) }
	}
	mintScope := func(s string) func(string) resp {
		return mint(e.agent("agent-1"), map[string]any{"scopes": []string{s}, "audience": apiGitHub})
	}
	create := func(body map[string]any) func(string) resp {
		return func(string) resp {
			b := map[string]any{"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}}
			for k, v := range body {
				b[k] = v
			}
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), b)
		}
	}
	cases := []attack{
		// Invariant 2: no self-approval.
		{"agent approves its own task", pending, approve(e.agent("agent-1"), nil), 403, "approval_forbidden"},
		{"agent whose sub equals the user's approves", pending, approve(e.agent("alice"), nil), 403, "approval_forbidden"},
		{"another user approves", pending, approve(e.user("mallory", "eng"), nil), 403, "approval_forbidden"},
		{"user of another issuer with the same sub approves", pending,
			approve(e.untrusted.Token(t, "alice", audience, map[string]any{"groups": []string{"eng"}}), nil), 401, "invalid_token"},
		{"resource server approves", pending, approve(e.resource("alice"), nil), 403, "approval_forbidden"},
		{"another user denies", pending, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/deny", e.user("mallory"), map[string]any{"reason": "x"})
		}, 403, "approval_forbidden"},
		// Invariant 1: narrowing.
		{"approve wider than requested (** over a literal)", pendingPRWrite(e), approve(e.user("alice", "eng"),
			map[string]any{"scopes": []string{"github.pr.write:acme/**"}}), 403, "scope_exceeds_request"},
		{"approve an action not requested", pending, approve(e.user("alice", "eng"),
			map[string]any{"scopes": []string{"github.pr.write:acme/web"}}), 403, "scope_exceeds_request"},
		{"approve an audience not requested", func() string {
			return e.mustStatus(create(map[string]any{"scopes": []string{"github.repo.read:acme/api"}})(""), 201).str("id")
		}, approve(e.user("alice", "eng"), map[string]any{"audiences": []string{apiStage}}), 403, "scope_exceeds_request"},
		{"user lacking the grant approves", pending, approve(e.user("alice", "sales"), nil), 403, "scope_exceeds_grant"},
		{"user with a narrower grant approves", pending, approve(e.user("alice", "interns"),
			map[string]any{"scopes": []string{"github.repo.read:acme/docs"}}), 403, "scope_exceeds_grant"},
		{"approve a scope for an audience that only another grant allows", func() string {
			return e.mustStatus(create(map[string]any{"scopes": []string{"github.repo.read:acme/docs"}})(""), 201).str("id")
		}, approve(e.user("alice", "interns", "dba"), nil), 403, "scope_exceeds_grant"},
		{"duplicate key smuggles a wider approval", pending, approve(e.user("alice", "eng"),
			`{"scopes":["github.repo.read:acme/api"],"SCOPES":["github.repo.read:acme/**"]}`), 400, "invalid_request"},
		{"mint beyond the approved scopes", approved, mintScope("github.pr.write:acme/web"), 403, "scope_exceeds_approval"},
		{"mint wildcard widening acme/** over acme/api", approved, mintScope("github.repo.read:acme/**"), 403, "scope_exceeds_approval"},
		{"mint wildcard widening acme/* over acme/api", approved, mintScope("github.repo.read:acme/*"), 403, "scope_exceeds_approval"},
		{"mint prefix trick acme/api-x", approved, mintScope("github.repo.read:acme/api-x"), 403, "scope_exceeds_approval"},
		{"mint child of approved literal", approved, mintScope("github.repo.read:acme/api/secrets"), 403, "scope_exceeds_approval"},
		{"mint case variant Acme/api", approved, mintScope("github.repo.read:Acme/api"), 403, "scope_exceeds_approval"},
		{"mint dot-dot escape acme/api/../b", approved, mintScope("github.repo.read:acme/api/../b"), 400, "invalid_scope"},
		{"mint double slash acme//api", approved, mintScope("github.repo.read:acme//api"), 400, "invalid_scope"},
		{"mint percent-encoded dot-dot", approved, mintScope("github.repo.read:acme/api/%2e%2e/b"), 400, "invalid_scope"},
		{"mint unknown action", approved, mintScope("github.repo.delete:acme/api"), 400, "invalid_scope"},
		{"mint for an unapproved audience", func() string {
			id := e.task("agent-1", "alice", "github.repo.read:acme/**")
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"audiences": []string{apiStage}}), 200)
			return id
		}, mintScope("github.repo.read:acme/api"), 403, "scope_exceeds_approval"},
		{"mint for an unknown audience", approved, mint(e.agent("agent-1"), map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://evil.example"}), 400, "invalid_request"},
		{"another agent mints", approved, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("agent-2"), map[string]any{
				"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub})
		}, 403, "not_task_party"},
		{"a user mints", approved, mint(e.user("alice", "eng"), map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}), 403, "wrong_principal_kind"},
		// Task state.
		{"mint before approval", pending, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"mint after close", func() string {
			id := approved()
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
			return id
		}, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"mint after deny", func() string {
			id := pending()
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice"), map[string]any{"reason": "no"}), 200)
			return id
		}, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"mint after expiry", func() string {
			id := e.task("agent-1", "alice", "github.repo.read:acme/**")
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 1}), 200)
			time.Sleep(1100 * time.Millisecond)
			return id
		}, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"approve after deny", func() string {
			id := pending()
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice"), nil), 200)
			return id
		}, approve(e.user("alice", "eng"), nil), 409, "task_not_active"},
		// Invariant 3: no widening after approval.
		{"approve an approved task again (widen)", approved, approve(e.user("alice", "eng"),
			map[string]any{"scopes": scopes}), 409, "task_immutable"},
		{"deny an approved task", approved, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice"), nil)
		}, 409, "task_immutable"},
		{"close a pending task", pending, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil)
		}, 409, "task_not_active"},
		{"another agent closes", approved, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-2"), nil)
		}, 403, "not_task_party"},
		{"another agent reads the task", pending, func(id string) resp {
			return e.do("GET", "/v1/tasks/"+id, e.agent("agent-2"), nil)
		}, 403, "not_task_party"},
		// Invariants 4 and 5: blocked classes, whatever the user holds.
		{"request a credential-class action", nil, create(map[string]any{"scopes": []string{"aws.iam.createaccesskey"}}), 403, "blocked_action"},
		{"request an identity-class action", nil, create(map[string]any{"scopes": []string{"okta.user.update:alice"}}), 403, "blocked_action"},
		{"request a token-class action", nil, create(map[string]any{"scopes": []string{"errand.token.mint"}}), 403, "blocked_action"},
		{"request a blocked action among harmless ones", nil, create(map[string]any{
			"scopes": []string{"github.repo.read", "aws.iam.createaccesskey"}}), 403, "blocked_action"},
		{"request a case variant of a blocked action", nil, create(map[string]any{"scopes": []string{"AWS.IAM.CreateAccessKey"}}), 403, "blocked_action"},
		{"approve a blocked action the user holds", pending, approve(e.user("alice", "eng"),
			map[string]any{"scopes": []string{"github.repo.read:acme/api", "aws.iam.createaccesskey"}}), 403, "blocked_action"},
		{"mint a blocked action", approved, mintScope("errand.token.mint"), 403, "blocked_action"},
		// Invariant 9 and request validation.
		{"unknown action requested", nil, create(map[string]any{"scopes": []string{"github.repo.nuke"}}), 400, "invalid_scope"},
		{"unknown audience requested", nil, create(map[string]any{"audiences": []string{"https://evil.example"}}), 400, "invalid_request"},
		{"on_behalf_of at an unknown issuer", nil, create(map[string]any{"on_behalf_of": "https://evil.example#alice"}), 400, "invalid_request"},
		{"missing goal", nil, create(map[string]any{"goal": ""}), 400, "invalid_request"},
		{"negative ttl", nil, create(map[string]any{"ttl_seconds": -5}), 400, "invalid_request"},
		{"a user creates a task", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.user("alice", "eng"), map[string]any{"on_behalf_of": "alice", "goal": "g",
				"scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}})
		}, 403, "wrong_principal_kind"},
		{"unknown field", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"on_behalf_of":"alice","goal":"g","scopes":["github.repo.read"],"audiences":["`+apiGitHub+`"],"admin":true}`)
		}, 400, "invalid_request"},
		{"duplicate key", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"on_behalf_of":"alice","goal":"g","goal":"h","scopes":["github.repo.read"],"audiences":["`+apiGitHub+`"]}`)
		}, 400, "invalid_request"},
		{"deeply nested JSON", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}`)
		}, 400, "invalid_request"},
		{"NUL byte in the goal", nil, create(map[string]any{"goal": "fix\u0000it"}), 400, "invalid_request"},
		{"NUL byte in on_behalf_of", nil, create(map[string]any{"on_behalf_of": "ali\u0000ce"}), 400, "invalid_request"},
		{"NUL byte in a task id", nil, func(string) resp {
			return e.do("POST", "/v1/tasks/tsk%00x/close", e.agent("agent-1"), nil)
		}, 404, "not_found"},
		{"unknown task", nil, func(string) resp {
			return e.do("GET", "/v1/tasks/tsk_aaaaaaaaaaaaaaaaaaaaaaaaaa", e.agent("agent-1"), nil)
		}, 404, "not_found"},
		{"malformed JSON", nil, func(string) resp { return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":`) }, 400, "invalid_request"},
		{"trailing JSON", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":"g"} {"goal":"h"}`)
		}, 400, "invalid_request"},
		{"8 MB body", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":"`+strings.Repeat("A", 8<<20)+`"}`)
		}, 413, "body_too_large"},
		{"wrong content type", nil, func(string) resp {
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks", strings.NewReader(`{"goal":"g"}`))
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Authorization", "Bearer "+e.agent("agent-1"))
			return e.send(req, []byte(`{"goal":"g"}`))
		}, 415, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			id := ""
			if c.setup != nil {
				id = c.setup()
			}
			before := e.snapshot()
			e.refused(before, c.do(id), c.status, c.code)
		})
	}
}

// pendingPRWrite is a pending task that asks for github.pr.write:acme/api
// only, to test an approval wider than the request.
func pendingPRWrite(e *env) func() string {
	return func() string { return e.task("agent-1", "alice", "github.pr.write:acme/api") }
}

// TestTaskTokenIsNeverIdentity: invariant 4 on every endpoint.
func TestTaskTokenIsNeverIdentity(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	endpoints := []struct{ method, path string }{
		{"POST", "/v1/tasks"}, {"GET", "/v1/tasks"}, {"GET", "/v1/tasks/" + id},
		{"POST", "/v1/tasks/" + id + "/approve"}, {"POST", "/v1/tasks/" + id + "/deny"},
		{"POST", "/v1/tasks/" + id + "/tokens"}, {"POST", "/v1/tasks/" + id + "/close"},
		{"GET", "/v1/audit/events"}, {"GET", "/v1/credentials"},
	}
	for _, ep := range endpoints {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			var body any
			if ep.method == "POST" {
				body = map[string]any{}
			}
			e.refused(before, e.do(ep.method, ep.path, at, body), 401, "token_not_accepted")
		})
	}
	t.Run("POST /v1/introspect as caller", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.refused(before, e.introspect(at, at), 401, "token_not_accepted")
	})
}
