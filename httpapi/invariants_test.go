package httpapi

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

type attack struct {
	name   string
	setup  func() string // returns a task id (may be "")
	do     func(id string) resp
	status int
	code   string
}

// runInvariants runs the refusal cases tagged with the given
// rows of docs/security-matrix.md (each case name starts with its row id). Each
// asserts the status, the code, that tasks and credentials are unchanged,
// and the single request.refused audit event.
func runInvariants(t *testing.T, ids ...string) {
	e := newEnv(t)
	ran := 0
	for _, c := range invariantCases(t, e) {
		id, _, _ := strings.Cut(c.name, " ")
		if !slices.Contains(ids, id) {
			continue
		}
		ran++
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			task := ""
			if c.setup != nil {
				task = c.setup()
			}
			before := e.snapshot()
			e.refused(before, c.do(task), c.status, c.code)
		})
	}
	if ran == 0 {
		t.Fatalf("no case tagged %v", ids)
	}
}

func TestA01ScopeSuperset(t *testing.T)             { runInvariants(t, "A01") }
func TestA02Narrowing(t *testing.T)                 { runInvariants(t, "A02") }
func TestA03SelfApproval(t *testing.T)              { runInvariants(t, "A03") }
func TestA04NoWidening(t *testing.T)                { runInvariants(t, "A04") }
func TestA06CrossTask(t *testing.T)                 { runInvariants(t, "A06") }
func TestA08Lifetime(t *testing.T)                  { runInvariants(t, "A08") }
func TestC01CredentialActionsBlocked(t *testing.T)  { runInvariants(t, "C01") }
func TestC02CanonicalisedBeforeChecks(t *testing.T) { runInvariants(t, "C02") }
func TestJ10PrincipalKinds(t *testing.T)            { runInvariants(t, "J10") }
func TestN01Bodies(t *testing.T)                    { runInvariants(t, "N01") }
func TestO04UnapprovedTarget(t *testing.T)          { runInvariants(t, "O04") }

// invariantCases are the refusal cases; e.t is set to each subtest.
func invariantCases(t *testing.T, e *env) []attack {
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
		{"A03 agent approves its own task", pending, approve(e.agent("agent-1"), nil), 403, "approval_forbidden"},
		{"A03 agent whose sub equals the user's approves", pending, approve(e.agent("alice"), nil), 403, "approval_forbidden"},
		{"A03 another user approves", pending, approve(e.user("mallory", "eng"), nil), 403, "approval_forbidden"},
		{"J10 user of another issuer with the same sub approves", pending,
			approve(e.untrusted.Token(t, "alice", audience, map[string]any{"groups": []string{"eng"}}), nil), 401, "invalid_token"},
		{"A03 resource server approves", pending, approve(e.resource("alice"), nil), 403, "approval_forbidden"},
		{"A03 another user denies", pending, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/deny", e.user("mallory"), map[string]any{"reason": "x"})
		}, 403, "approval_forbidden"},
		// Invariant 1: narrowing.
		{"A02 approve wider than requested (** over a literal)", pendingPRWrite(e), approve(e.user("alice", "eng"),
			map[string]any{"scopes": []string{"github.pr.write:acme/**"}}), 403, "scope_exceeds_request"},
		{"A02 approve an action not requested", pending, approve(e.user("alice", "eng"),
			map[string]any{"scopes": []string{"github.pr.write:acme/web"}}), 403, "scope_exceeds_request"},
		{"A02 approve an audience not requested", func() string {
			return e.mustStatus(create(map[string]any{"scopes": []string{"github.repo.read:acme/api"}})(""), 201).str("id")
		}, approve(e.user("alice", "eng"), map[string]any{"audiences": []string{apiStage}}), 403, "scope_exceeds_request"},
		{"A02 user lacking the grant approves", pending, approve(e.user("alice", "sales"), nil), 403, "scope_exceeds_grant"},
		{"A02 user with a narrower grant approves", pending, approve(e.user("alice", "interns"),
			map[string]any{"scopes": []string{"github.repo.read:acme/docs"}}), 403, "scope_exceeds_grant"},
		{"A02 approve a scope for an audience that only another grant allows", func() string {
			return e.mustStatus(create(map[string]any{"scopes": []string{"github.repo.read:acme/docs"}})(""), 201).str("id")
		}, approve(e.user("alice", "interns", "dba"), nil), 403, "scope_exceeds_grant"},
		{"N01 duplicate key smuggles a wider approval", pending, approve(e.user("alice", "eng"),
			`{"scopes":["github.repo.read:acme/api"],"SCOPES":["github.repo.read:acme/**"]}`), 400, "invalid_request"},
		{"A01 mint beyond the approved scopes", approved, mintScope("github.pr.write:acme/web"), 403, "scope_exceeds_approval"},
		{"A01 mint wildcard widening acme/** over acme/api", approved, mintScope("github.repo.read:acme/**"), 403, "scope_exceeds_approval"},
		{"A01 mint wildcard widening acme/* over acme/api", approved, mintScope("github.repo.read:acme/*"), 403, "scope_exceeds_approval"},
		{"A01 mint prefix trick acme/api-x", approved, mintScope("github.repo.read:acme/api-x"), 403, "scope_exceeds_approval"},
		{"A01 mint child of approved literal", approved, mintScope("github.repo.read:acme/api/secrets"), 403, "scope_exceeds_approval"},
		{"A01 mint case variant Acme/api", approved, mintScope("github.repo.read:Acme/api"), 403, "scope_exceeds_approval"},
		{"C02 mint dot-dot escape acme/api/../b", approved, mintScope("github.repo.read:acme/api/../b"), 400, "invalid_scope"},
		{"C02 mint double slash acme//api", approved, mintScope("github.repo.read:acme//api"), 400, "invalid_scope"},
		{"C02 mint percent-encoded dot-dot", approved, mintScope("github.repo.read:acme/api/%2e%2e/b"), 400, "invalid_scope"},
		{"A01 mint unknown action", approved, mintScope("github.repo.delete:acme/api"), 400, "invalid_scope"},
		{"O04 mint for an unapproved audience", func() string {
			id := e.task("agent-1", "alice", "github.repo.read:acme/**")
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"audiences": []string{apiStage}}), 200)
			return id
		}, mintScope("github.repo.read:acme/api"), 403, "scope_exceeds_approval"},
		{"O04 mint for an unknown audience", approved, mint(e.agent("agent-1"), map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://evil.example"}), 400, "invalid_request"},
		{"A06 another agent mints", approved, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("agent-2"), map[string]any{
				"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub})
		}, 403, "not_task_party"},
		{"J10 a user mints", approved, mint(e.user("alice", "eng"), map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}), 403, "wrong_principal_kind"},
		// Task state.
		{"A08 mint before approval", pending, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"A08 mint after close", func() string {
			id := approved()
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
			return id
		}, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"A08 mint after deny", func() string {
			id := pending()
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice"), map[string]any{"reason": "no"}), 200)
			return id
		}, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"A08 mint after expiry", func() string {
			id := e.task("agent-1", "alice", "github.repo.read:acme/**")
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 1}), 200)
			time.Sleep(1100 * time.Millisecond)
			return id
		}, mintScope("github.repo.read:acme/api"), 409, "task_not_active"},
		{"A04 approve after deny", func() string {
			id := pending()
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice"), nil), 200)
			return id
		}, approve(e.user("alice", "eng"), nil), 409, "task_not_active"},
		// Invariant 3: no widening after approval.
		{"A04 approve an approved task again (widen)", approved, approve(e.user("alice", "eng"),
			map[string]any{"scopes": scopes}), 409, "task_immutable"},
		{"A04 deny an approved task", approved, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice"), nil)
		}, 409, "task_immutable"},
		{"A04 close a pending task", pending, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil)
		}, 409, "task_not_active"},
		{"A06 another agent closes", approved, func(id string) resp {
			return e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-2"), nil)
		}, 403, "not_task_party"},
		{"A06 another agent reads the task", pending, func(id string) resp {
			return e.do("GET", "/v1/tasks/"+id, e.agent("agent-2"), nil)
		}, 403, "not_task_party"},
		// Invariants 4 and 5: blocked classes, whatever the user holds.
		{"C01 request a credential-class action", nil, create(map[string]any{"scopes": []string{"aws.iam.createaccesskey"}}), 403, "blocked_action"},
		{"C01 request an identity-class action", nil, create(map[string]any{"scopes": []string{"okta.user.update:alice"}}), 403, "blocked_action"},
		{"C01 request a token-class action", nil, create(map[string]any{"scopes": []string{"errand.token.mint"}}), 403, "blocked_action"},
		{"C01 request a blocked action among harmless ones", nil, create(map[string]any{
			"scopes": []string{"github.repo.read", "aws.iam.createaccesskey"}}), 403, "blocked_action"},
		{"C02 request a case variant of a blocked action", nil, create(map[string]any{"scopes": []string{"AWS.IAM.CreateAccessKey"}}), 403, "blocked_action"},
		{"C01 approve a blocked action the user holds", pending, approve(e.user("alice", "eng"),
			map[string]any{"scopes": []string{"github.repo.read:acme/api", "aws.iam.createaccesskey"}}), 403, "blocked_action"},
		{"C01 mint a blocked action", approved, mintScope("errand.token.mint"), 403, "blocked_action"},
		// Invariant 9 and request validation.
		{"A01 unknown action requested", nil, create(map[string]any{"scopes": []string{"github.repo.nuke"}}), 400, "invalid_scope"},
		{"O04 unknown audience requested", nil, create(map[string]any{"audiences": []string{"https://evil.example"}}), 400, "invalid_request"},
		{"J10 on_behalf_of at an unknown issuer", nil, create(map[string]any{"on_behalf_of": "https://evil.example#alice"}), 400, "invalid_request"},
		{"N01 missing goal", nil, create(map[string]any{"goal": ""}), 400, "invalid_request"},
		{"N01 negative ttl", nil, create(map[string]any{"ttl_seconds": -5}), 400, "invalid_request"},
		{"J10 a user creates a task", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.user("alice", "eng"), map[string]any{"on_behalf_of": "alice", "goal": "g",
				"scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}})
		}, 403, "wrong_principal_kind"},
		{"N01 unknown field", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"on_behalf_of":"alice","goal":"g","scopes":["github.repo.read"],"audiences":["`+apiGitHub+`"],"admin":true}`)
		}, 400, "invalid_request"},
		{"N01 Unicode case-folded duplicate key", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"on_behalf_of":"alice","goal":"g","scopes":["github.repo.read:acme/x"],"ſcopes":["github.repo.read"],"audiences":["`+apiGitHub+`"]}`)
		}, 400, "invalid_request"},
		{"N01 duplicate key", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"on_behalf_of":"alice","goal":"g","goal":"h","scopes":["github.repo.read"],"audiences":["`+apiGitHub+`"]}`)
		}, 400, "invalid_request"},
		{"N01 deeply nested JSON", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}`)
		}, 400, "invalid_request"},
		{"N01 NUL byte in the goal", nil, create(map[string]any{"goal": "fix\u0000it"}), 400, "invalid_request"},
		{"N01 NUL byte in on_behalf_of", nil, create(map[string]any{"on_behalf_of": "ali\u0000ce"}), 400, "invalid_request"},
		{"N01 NUL byte in a task id", nil, func(string) resp {
			return e.do("POST", "/v1/tasks/tsk%00x/close", e.agent("agent-1"), nil)
		}, 404, "not_found"},
		{"A06 unknown task", nil, func(string) resp {
			return e.do("GET", "/v1/tasks/tsk_aaaaaaaaaaaaaaaaaaaaaaaaaa", e.agent("agent-1"), nil)
		}, 404, "not_found"},
		{"N01 malformed JSON", nil, func(string) resp { return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":`) }, 400, "invalid_request"},
		{"N01 trailing JSON", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":"g"} {"goal":"h"}`)
		}, 400, "invalid_request"},
		{"N01 8 MB body", nil, func(string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), `{"goal":"`+strings.Repeat("A", 8<<20)+`"}`)
		}, 413, "body_too_large"},
		{"N01 wrong content type", nil, func(string) resp {
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks", strings.NewReader(`{"goal":"g"}`))
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Authorization", "Bearer "+e.agent("agent-1"))
			return e.send(req, []byte(`{"goal":"g"}`))
		}, 415, "invalid_request"},
	}
	return cases
}

// pendingPRWrite is a pending task that asks for github.pr.write:acme/api
// only, to test an approval wider than the request.
func pendingPRWrite(e *env) func() string {
	return func() string { return e.task("agent-1", "alice", "github.pr.write:acme/api") }
}

// TestO01TaskTokenIsNeverIdentity: invariant 4 on every endpoint.
func TestO01TaskTokenIsNeverIdentity(t *testing.T) {
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
		e.oauthRefused(before, e.introspect(at, at), 401, "invalid_client", "token_not_accepted")
	})
}
