package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/broker"
)

// The ID-JAG targets of these tests: an MCP server's authorization server
// that names scopes its own way, and one that takes Errand's names.
const (
	mcpAS       = "https://auth.mcp.example.com"
	mcpServer   = "https://mcp.example.com/mcp"
	mcpOther    = "https://mcp.example.com/other"
	plainAS     = "https://as.plain.example.com"
	plainServer = "https://api.plain.example.com"
	writeAPI    = "github.pr.write:acme/api"
)

func idjagTargets() []broker.IDJAGTarget {
	return []broker.IDJAGTarget{
		{Issuer: mcpAS, Resources: []string{mcpServer, mcpOther}, ClientID: "errand-agents",
			ScopesMap: map[string]string{"github.repo.read": "repo:read", writeAPI: "pr:write"}},
		{Issuer: plainAS, Resources: []string{plainServer}, ClientID: "plain-client", MaxLifetime: 2 * time.Minute},
	}
}

func newIDJAGEnv(t *testing.T, policies ...string) *env {
	o := envOptions{idjagTargets: idjagTargets()}
	if len(policies) > 0 {
		o.policies, o.schema = policies, "testdata/schema.cedarschema"
	}
	return newEnvWith(t, o)
}

// idjagTask creates a pending task for agent on behalf of user with
// scopes, whose audiences are an API and the targets' resources.
func (e *env) idjagTask(agentSub, userSub string, scopes ...string) string {
	e.t.Helper()
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent(agentSub), map[string]any{
		"on_behalf_of": userSub, "goal": "triage issues", "scopes": scopes,
		"audiences": []string{apiGitHub, mcpServer, mcpOther, plainServer}, "ttl_seconds": 3600,
	}), http.StatusCreated)
	return r.str("id")
}

// idjagApproved is idjagTask approved by the user (group eng), with the
// approval's body (nil: everything asked for).
func (e *env) idjagApproved(agentSub, userSub string, approval map[string]any, scopes ...string) string {
	e.t.Helper()
	id := e.idjagTask(agentSub, userSub, scopes...)
	if approval == nil {
		approval = map[string]any{}
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user(userSub, "eng"), approval), http.StatusOK)
	return id
}

// idjagForm is a token exchange of agent's ID token for an ID-JAG of task.
func (e *env) idjagForm(agent, task string, extra url.Values) url.Values {
	v := url.Values{"requested_token_type": {tokenTypeIDJAG}, "audience": {mcpAS}, "resource": {mcpServer}}
	for k, vs := range extra {
		v[k] = vs
	}
	return e.exchangeForm(agent, task, v)
}

// verifyIDJAG verifies raw with Errand's published JWKS, as a target
// authorization server does, and returns its header typ and claims.
func (e *env) verifyIDJAG(raw string) (string, map[string]any) {
	e.t.Helper()
	r := e.mustStatus(e.do("GET", "/.well-known/jwks.json", "", nil), http.StatusOK)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.Raw, &set); err != nil {
		e.t.Fatal(err)
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		e.t.Fatal(err)
	}
	h := jws.Signatures[0].Protected
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		e.t.Fatalf("kid %q not in the JWKS", h.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		e.t.Fatalf("the JWKS does not verify the ID-JAG: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		e.t.Fatal(err)
	}
	typ, _ := h.ExtraHeaders["typ"].(string)
	return typ, c
}

// TestX07IDJAGExchange: an approved task's agent exchanges its ID token
// for an ID-JAG of a configured target. The answer is the draft's; the JWT
// verifies with Errand's JWKS and carries typ oauth-id-jag+jwt, the user
// as an access token names it, the target as aud, its client id, the
// resource, the mapped scope, the agent as act and the task. It is a
// credential of kind id-jag, recorded with credential.issued naming the
// resource, listed for auditors; Errand refuses it as anyone's identity;
// closing the task revokes it and ends the issuing.
func TestX07IDJAGExchange(t *testing.T) {
	e := newIDJAGEnv(t)
	id := e.idjagApproved("bot", "alice", nil, readAcme)
	before := e.snapshot()
	r := e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"scope": {readAcme}})), http.StatusOK)
	if r.str("issued_token_type") != tokenTypeIDJAG || r.str("token_type") != "N_A" ||
		r.JSON["expires_in"] != float64(300) || r.str("scope") != "repo:read" || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("answer %s", r.Raw)
	}
	if after := e.snapshot(); after.auditSeq != before.auditSeq+1 {
		t.Fatalf("the exchange wrote %d audit events, want 1", after.auditSeq-before.auditSeq)
	}
	grant := r.str("access_token")
	typ, c := e.verifyIDJAG(grant)
	at := e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated)
	_, atClaims := e.verifyIDJAG(at.str("access_token"))
	if typ != "oauth-id-jag+jwt" {
		t.Fatalf("typ %q", typ)
	}
	for k, want := range map[string]any{
		"iss": publicURL, "sub": atClaims["sub"], "aud": mcpAS, "client_id": "errand-agents",
		"resource": mcpServer, "scope": "repo:read", "task_id": id,
	} {
		if c[k] != want {
			t.Errorf("claim %s = %v, want %v", k, c[k], want)
		}
	}
	if a := mustJSON(t, c["act"]); a != mustJSON(t, atClaims["act"]) {
		t.Errorf("act %s, want the access token's %s", a, mustJSON(t, atClaims["act"]))
	}
	if c["exp"].(float64)-c["iat"].(float64) != 300 || c["jti"] == "" || c["jti"] == atClaims["jti"] {
		t.Errorf("iat %v exp %v jti %v", c["iat"], c["exp"], c["jti"])
	}
	jti := c["jti"].(string)

	// Recorded before it was returned, with one credential.issued.
	var kind, aud string
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT kind, audience FROM credentials WHERE jti = $1`, jti).Scan(&kind, &aud); err != nil || kind != "id-jag" || aud != mcpAS {
		t.Fatalf("credential row: %q %q %v", kind, aud, err)
	}
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: before.auditSeq, Limit: 5})
	if err != nil || len(evs) == 0 || evs[0].Type != broker.EventCredentialIssued || evs[0].Seq != before.auditSeq+1 {
		t.Fatalf("audit: %v %v", evs, err)
	}
	var d map[string]any
	if err := json.Unmarshal(evs[0].Detail, &d); err != nil || d["kind"] != "id-jag" || d["resource"] != mcpServer ||
		d["audience"] != mcpAS || d["jti_sha256"] != broker.HashID(jti) {
		t.Fatalf("credential.issued detail %s", evs[0].Detail)
	}
	list := e.mustStatus(e.do("GET", "/v1/credentials?type=id-jag&task_id="+id, e.user("carol", "auditors"), nil), http.StatusOK)
	if cs := list.JSON["credentials"].([]any); len(cs) != 1 || cs[0].(map[string]any)["jti"] != jti {
		t.Fatalf("auditors' list: %s", list.Raw)
	}

	// Never an identity at Errand: as bearer, client assertion or subject.
	b := e.snapshot()
	v := e.idjagForm("bot", id, nil)
	v.Set("client_assertion", grant)
	e.oauthRefused(b, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "token_not_accepted")
	b = e.snapshot()
	v.Del("client_assertion")
	v.Del("client_assertion_type")
	e.oauthRefused(b, e.form("/oauth/token", grant, v), http.StatusUnauthorized, "invalid_client", "token_not_accepted")
	b = e.snapshot()
	e.oauthRefused(b, e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"subject_token": {grant}})),
		http.StatusBadRequest, "invalid_request", "token_not_accepted")

	// Nor one signed by a trusted workload issuer, as bearer or subject.
	foreign := e.agents.Sign(t, e.agents.Keys()[0], map[string]any{"typ": "oauth-id-jag+jwt"}, e.agents.Claims("bot", audience))
	b = e.snapshot()
	e.oauthRefused(b, e.form("/oauth/token", foreign, v), http.StatusUnauthorized, "invalid_client", "token_not_accepted")
	b = e.snapshot()
	e.oauthRefused(b, e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"subject_token": {foreign}})),
		http.StatusBadRequest, "invalid_request", "token_not_accepted")

	// Without scope: every approved scope, mapped; a lone resource may be
	// left out, and the target's lifetime applies.
	r = e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"audience": {plainAS}, "resource": nil})), http.StatusOK)
	if r.str("scope") != readAcme || r.JSON["expires_in"] != float64(120) {
		t.Fatalf("plain target: %s", r.Raw)
	}
	if _, c := e.verifyIDJAG(r.str("access_token")); c["resource"] != plainServer || c["client_id"] != "plain-client" {
		t.Fatalf("plain target's claims %v", c)
	}

	// Closing the task revokes it, and no further one is issued.
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("bot"), nil), http.StatusOK)
	var revoked bool
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT revoked_at IS NOT NULL FROM credentials WHERE jti = $1`, jti).Scan(&revoked); err != nil || !revoked {
		t.Fatalf("the ID-JAG's record after close: revoked %v, %v", revoked, err)
	}
	b = e.snapshot()
	e.oauthRefused(b, e.form("/oauth/token", "", e.idjagForm("bot", id, nil)), http.StatusBadRequest, "invalid_grant", "task_not_active")
}

// TestX07IDJAGRefusals: each refusal is RFC 6749 JSON with Errand's code,
// changes nothing and is audited once: an unknown target, a resource not
// of the target or not among the audiences the user approved, two audiences, a scope beyond the approval, an approved
// scope the target's map does not name (it never widens: a mapped scope
// is emitted only for an approved scope it maps from), a target's own
// scope name, another agent's task, a DPoP proof, a closed task.
func TestX07IDJAGRefusals(t *testing.T) {
	e := newIDJAGEnv(t)
	id := e.idjagApproved("bot", "alice", nil, readAcme, "github.pr.write:acme/web")
	// The user kept one of the MCP server's two resources.
	narrow := e.idjagApproved("bot", "alice", map[string]any{"audiences": []string{apiGitHub, mcpServer}}, readAcme)
	cases := []struct {
		name             string
		agent, task      string
		extra            url.Values
		oauthErr, code   string
		status           int
		dpop, identified bool
	}{
		{name: "unknown target", extra: url.Values{"audience": {"https://unknown.example.com"}}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "Errand's own audience as target", extra: url.Values{"audience": {apiGitHub}}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "no audience", extra: url.Values{"audience": nil}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "two audiences", extra: url.Values{"audience": {mcpAS, plainAS}}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "resource of another target", extra: url.Values{"resource": {plainServer}}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "a resource the approval does not name", task: narrow, extra: url.Values{"resource": {mcpOther}, "scope": {readAcme}}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "resource left out of a target of two", extra: url.Values{"resource": nil}, oauthErr: "invalid_target", code: "invalid_target"},
		{name: "scope beyond the approval", extra: url.Values{"scope": {writeAPI}}, oauthErr: "invalid_scope", code: "scope_exceeds_approval"},
		{name: "approved scope the map does not name", extra: url.Values{"scope": {"github.pr.write:acme/web"}}, oauthErr: "invalid_scope", code: "invalid_scope"},
		{name: "every approved scope, one unmapped", extra: url.Values{}, oauthErr: "invalid_scope", code: "invalid_scope"},
		{name: "the target's own scope name", extra: url.Values{"scope": {"pr:write"}}, oauthErr: "invalid_scope", code: "invalid_scope"},
		{name: "another agent's task", agent: "mallory", oauthErr: "invalid_grant", code: "not_task_party"},
		{name: "a DPoP proof", dpop: true, oauthErr: "invalid_request", code: "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			agent := c.agent
			if agent == "" {
				agent = "bot"
			}
			task := c.task
			if task == "" {
				task = id
			}
			before := e.snapshot()
			v := e.idjagForm(agent, task, nil)
			for k, vs := range c.extra {
				if vs == nil {
					v.Del(k)
				} else {
					v[k] = vs
				}
			}
			var r resp
			if c.dpop {
				r = e.formDPoP("/oauth/token", v, tokenProof(t, dpopKey(t)))
			} else {
				r = e.form("/oauth/token", "", v)
			}
			e.oauthRefused(before, r, http.StatusBadRequest, c.oauthErr, c.code)
		})
	}
	e.t = t
	e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", narrow, url.Values{"scope": {readAcme}})), http.StatusOK)
	// What the map names is issued; the approval's other scope stays out.
	r := e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"scope": {"github.repo.read:acme/api"}})), http.StatusOK)
	if r.str("scope") != "repo:read" {
		t.Fatalf("scope %q, want repo:read alone", r.str("scope"))
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.user("alice", "eng"), nil), http.StatusOK)
	before := e.snapshot()
	e.oauthRefused(before, e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"scope": {readAcme}})),
		http.StatusBadRequest, "invalid_grant", "task_not_active")
}

// TestX07IDJAGCappedByTheTask: an ID-JAG never outlives its task: a task
// approved for 90 s gets one of at most 90 s, not the target's 5 minutes.
func TestX07IDJAGCappedByTheTask(t *testing.T) {
	e := newIDJAGEnv(t)
	id := e.idjagApproved("bot", "alice", map[string]any{"ttl_seconds": 90}, readAcme)
	task := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("bot"), nil), http.StatusOK)
	expires, err := time.Parse(time.RFC3339Nano, task.str("expires_at"))
	if err != nil {
		t.Fatal(err)
	}
	r := e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"scope": {readAcme}})), http.StatusOK)
	if n := r.JSON["expires_in"].(float64); n > 90 || n < 80 {
		t.Fatalf("expires_in %v, want at most the task's 90 s", n)
	}
	if _, c := e.verifyIDJAG(r.str("access_token")); int64(c["exp"].(float64)) > expires.Unix() {
		t.Fatalf("exp %v after the task's end %v", c["exp"], expires)
	}
}

// TestX07IDJAGPolicy: policies see an ID-JAG exchange as operation
// "id-jag": one forbidding it refuses the grant (access_denied,
// policy_denied) while the same task's access tokens are minted.
func TestX07IDJAGPolicy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "idjag.cedar"), []byte(`
@id("allow-agents")
permit (principal is Agent, action, resource);
@id("no-id-jag")
forbid (principal, action, resource) when { context.operation == "id-jag" };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newIDJAGEnv(t, filepath.Join(dir, "*.cedar"))
	id := e.idjagApproved("bot", "alice", nil, readAcme)
	before := e.snapshot()
	r := e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"scope": {readAcme}}))
	e.oauthRefused(before, r, http.StatusBadRequest, "access_denied", "policy_denied")
	e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated)
}

// TestX07IDJAGStepUpBudgetIdempotency: an ID-JAG exchange is a mint: a
// @step_up policy on operation id-jag answers authorization_pending until
// the user approves that exact request; an Idempotency-Key retry is the
// same grant (same jti, one credential), the key with another request is
// idempotency_conflict; the grant counts against the task's budget.
func TestX07IDJAGStepUpBudgetIdempotency(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "idjag.cedar"), []byte(`
@id("allow-agents")
permit (principal is Agent, action, resource);
@id("ask-for-mcp")
@step_up("an MCP server's grant needs your approval")
forbid (principal, action, resource) when { context.operation == "id-jag" && context.audience == "`+mcpOther+`" };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{idjagTargets: idjagTargets(), policies: []string{filepath.Join(dir, "*.cedar")},
		schema: "testdata/schema.cedarschema", budget: broker.Budget{MaxCredentials: 3}})
	id := e.idjagApproved("bot", "alice", nil, readAcme)
	other := e.idjagForm("bot", id, url.Values{"resource": {mcpOther}, "scope": {readAcme}})
	r := e.form("/oauth/token", "", other)
	if r.Status != http.StatusBadRequest || r.str("error") != "authorization_pending" || r.str("code") != "approval_required" {
		t.Fatalf("step-up: %d %s", r.Status, r.Raw)
	}
	e.mustStatus(e.do("POST", "/v1/approvals/"+r.str("approval_id")+"/approve", e.user("alice", "eng"), nil), http.StatusOK)
	e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"resource": {mcpOther}, "scope": {readAcme}})), http.StatusOK)

	send := func(v url.Values, key string) resp {
		body := v.Encode()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", stringsReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Idempotency-Key", key)
		return e.send(req, []byte(body))
	}
	first := e.mustStatus(send(e.idjagForm("bot", id, url.Values{"scope": {readAcme}}), "jag-"+id), http.StatusOK)
	before := e.snapshot()
	again := e.mustStatus(send(e.idjagForm("bot", id, url.Values{"scope": {readAcme}}), "jag-"+id), http.StatusOK)
	_, a := e.verifyIDJAG(first.str("access_token"))
	_, b := e.verifyIDJAG(again.str("access_token"))
	if a["jti"] != b["jti"] || again.str("scope") != "repo:read" {
		t.Fatalf("retry: jti %v then %v, scope %q", a["jti"], b["jti"], again.str("scope"))
	}
	if after := e.snapshot(); after.credentials != before.credentials {
		t.Fatal("an Idempotency-Key retry recorded another credential")
	}
	before = e.snapshot()
	e.oauthRefused(before, send(e.idjagForm("bot", id, url.Values{"resource": {mcpOther}, "scope": {readAcme}}), "jag-"+id),
		http.StatusBadRequest, "invalid_request", "idempotency_conflict")

	// Two grants and one access token of three: the budget is spent.
	e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated)
	before = e.snapshot()
	e.oauthRefused(before, e.form("/oauth/token", "", e.idjagForm("bot", id, url.Values{"scope": {readAcme}})),
		http.StatusBadRequest, "access_denied", "budget_exhausted")
}

// BenchmarkIDJAGExchange measures one ID-JAG of an approved task through
// the token endpoint (client assertion), beside an access token by the
// same exchange, in the process's CPU µs per grant (server, test client
// and PostgreSQL driver alike; PostgreSQL's own CPU not counted).
func BenchmarkIDJAGExchange(b *testing.B) {
	e := newEnvWith(b, envOptions{idjagTargets: idjagTargets()})
	e.bench = true
	id := e.idjagApproved("agent-1", "alice", nil, readAcme)
	tok := e.agent("agent-1")
	post := func(v url.Values) int {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", stringsReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res, err := e.srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	base := url.Values{
		"grant_type": {grantTokenExchange}, "subject_token": {tok}, "subject_token_type": {tokenTypeIDToken},
		"authorization_details": {details(id)}, "scope": {"github.repo.read:acme/api"},
	}
	with := func(extra url.Values) url.Values {
		v := url.Values{}
		for k, vs := range base {
			v[k] = vs
		}
		for k, vs := range extra {
			v[k] = vs
		}
		return asClient(tok, v)
	}
	for _, c := range []struct {
		name string
		form url.Values
	}{
		{"access-token", with(url.Values{"resource": {apiGitHub}})},
		{"id-jag", with(url.Values{"requested_token_type": {tokenTypeIDJAG}, "audience": {mcpAS}, "resource": {mcpServer}})},
	} {
		b.Run(c.name, func(b *testing.B) {
			start := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				if post(c.form) != http.StatusOK {
					b.Fatal("not issued")
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/grant")
		})
	}
}
