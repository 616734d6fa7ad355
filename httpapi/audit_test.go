package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
	"testing"
)

func TestN04N05N06AuditQueries(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	for i := 0; i < 3; i++ {
		e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
	}
	auditor := e.user("carol", "auditors")

	t.Run("only auditors", func(t *testing.T) {
		e.t = t
		for name, tok := range map[string]string{"agent": e.agent("agent-1"), "user": e.user("alice", "eng"), "resource": e.resource("rs")} {
			for _, p := range []string{"/v1/audit/events", "/v1/credentials"} {
				before := e.snapshot()
				t.Logf("%s on %s", name, p)
				e.refused(before, e.do("GET", p, tok, nil), 403, "wrong_principal_kind")
			}
		}
	})

	t.Run("keyset pagination with a bound cursor", func(t *testing.T) {
		e.t = t
		q := "/v1/credentials?task_id=" + id + "&limit=2"
		p1 := e.mustStatus(e.do("GET", q, auditor, nil), 200)
		if n := len(p1.JSON["credentials"].([]any)); n != 2 || p1.str("next_cursor") == "" {
			t.Fatalf("page 1: %s", p1.Raw)
		}
		p2 := e.mustStatus(e.do("GET", q+"&cursor="+p1.str("next_cursor"), auditor, nil), 200)
		if n := len(p2.JSON["credentials"].([]any)); n != 1 || p2.JSON["next_cursor"] != nil {
			t.Fatalf("page 2: %s", p2.Raw)
		}
		cur := p1.str("next_cursor")
		bad := []struct{ name, query string }{
			{"tampered cursor", q + "&cursor=" + cur[:len(cur)-1] + flip(cur[len(cur)-1:])},
			{"cursor with a forged position", q + "&cursor=" + "B" + cur[1:]},
			{"garbage cursor", q + "&cursor=not-a-cursor"},
			{"cursor of another query", "/v1/credentials?limit=2&cursor=" + cur},
			{"cursor of another endpoint", "/v1/audit/events?task_id=" + id + "&limit=2&cursor=" + cur},
		}
		for _, b := range bad {
			before := e.snapshot()
			t.Log(b.name)
			e.refused(before, e.do("GET", b.query, auditor, nil), 400, "invalid_request")
		}
		before := e.snapshot()
		e.refused(before, e.do("GET", q+"&cursor="+cur, e.user("dave", "auditors"), nil), 400, "invalid_request")
	})

	t.Run("filters are allow-listed and bound", func(t *testing.T) {
		e.t = t
		bad := []string{
			"limit=0", "limit=-1", "limit=abc", "since=yesterday", "sort=created_at%3BDROP%20TABLE%20tasks",
			"type=task.created%27%20OR%201=1--", "task_id=a&task_id=b", "offset=1000000000000",
		}
		for _, b := range bad {
			before := e.snapshot()
			t.Log(b)
			e.refused(before, e.do("GET", "/v1/audit/events?"+b, auditor, nil), 400, "invalid_request")
		}
		inject := []string{"' OR 1=1--", "-1 OR 1=1", "$tag$ OR true $tag$", "x'); DELETE FROM tasks;--"}
		for _, v := range inject {
			before := e.snapshot()
			r := e.mustStatus(e.do("GET", "/v1/audit/events?task_id="+url.QueryEscape(v)+"&actor="+url.QueryEscape(v), auditor, nil), 200)
			if n := len(r.JSON["events"].([]any)); n != 0 {
				t.Fatalf("injection %q matched %d events", v, n)
			}
			if after := e.snapshot(); after != before {
				t.Fatalf("injection %q changed the store", v)
			}
		}
		big := e.mustStatus(e.do("GET", "/v1/audit/events?limit=1000000000", auditor, nil), 200)
		if n := len(big.JSON["events"].([]any)); n > 1000 {
			t.Fatalf("limit not clamped: %d", n)
		}
	})

	t.Run("filter by type and actor", func(t *testing.T) {
		e.t = t
		r := e.mustStatus(e.do("GET", "/v1/audit/events?type=credential.issued&actor="+url.QueryEscape(e.agents.URL+"#agent-1")+"&task_id="+id, auditor, nil), 200)
		if n := len(r.JSON["events"].([]any)); n != 3 {
			t.Fatalf("%d credential.issued events, want 3: %s", n, r.Raw)
		}
		for _, x := range r.JSON["events"].([]any) {
			ev := x.(map[string]any)
			if ev["hash"] == "" || ev["seq"] == nil || ev["actor"].(map[string]any)["kind"] != "agent" {
				t.Fatalf("event shape: %v", ev)
			}
		}
	})

	t.Run("auditor reads any task, user lists only their own", func(t *testing.T) {
		e.t = t
		e.mustStatus(e.do("GET", "/v1/tasks/"+id, auditor, nil), 200)
		r := e.mustStatus(e.do("GET", "/v1/tasks", e.user("mallory"), nil), 200)
		if n := len(r.JSON["tasks"].([]any)); n != 0 {
			t.Fatalf("mallory sees %d tasks", n)
		}
	})
}

func TestO06O07Introspection(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	for name, tok := range map[string]string{"agent": e.agent("agent-1"), "user": e.user("alice")} {
		t.Run(name+" may not introspect", func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			e.oauthRefused(before, e.introspect(tok, at), 400, "unauthorized_client", "wrong_principal_kind")
		})
	}
	t.Run("no caller", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.oauthRefused(before, e.introspect("", at), 401, "invalid_client", "invalid_token")
	})
	t.Run("inactive answers are exactly active false", func(t *testing.T) {
		e.t = t
		rs := e.resource("rs")
		dot := strings.LastIndexByte(at, '.')
		sig, err := base64.RawURLEncoding.DecodeString(at[dot+1:])
		if err != nil {
			t.Fatal(err)
		}
		sig[0] ^= 0x01
		tampered := at[:dot+1] + base64.RawURLEncoding.EncodeToString(sig)
		for name, tok := range map[string]string{
			"garbage": "garbage", "tampered signature": tampered,
			"foreign token": e.agent("agent-1"),
		} {
			r := e.mustStatus(e.introspect(rs, tok), 200)
			if string(r.Raw) != "{\"active\":false}\n" {
				t.Fatalf("%s: %s", name, r.Raw)
			}
		}
	})
}

func flip(c string) string {
	if c == "A" {
		return "B"
	}
	return "A"
}

// TestO06IntrospectionBoundToAudience: where an audience names its
// resource servers, any other resource server learns nothing of its
// tokens (RFC 7662 §2.2: token scanning).
func TestO06IntrospectionBoundToAudience(t *testing.T) {
	e := newEnvWith(t, envOptions{introspectors: []string{"stage-gateway"}})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("agent-1"), map[string]any{
		"scopes": []string{"github.repo.read:acme/api"}, "audience": apiStage,
	}), 201).str("access_token")
	if r := e.introspect(e.resource("stage-gateway"), at); r.JSON["active"] != true {
		t.Fatalf("the audience's own resource server: %s", r.Raw)
	}
	if r := e.introspect(e.resource("prod-gateway"), at); string(r.Raw) != "{\"active\":false}\n" {
		t.Fatalf("another resource server: %s", r.Raw)
	}
}

// TestO07InactiveIsIndistinguishable: expired, revoked, unknown and foreign
// tokens all answer exactly {"active":false}.
func TestO07InactiveIsIndistinguishable(t *testing.T) {
	e := newEnv(t)
	rs := e.resource("rs")
	short := e.task("agent-1", "alice", "github.repo.read:acme/**")
	e.mustStatus(e.do("POST", "/v1/tasks/"+short+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 2}), 200)
	expiring := e.mustStatus(e.mint("agent-1", short, "github.repo.read:acme/api"), 201).str("access_token")
	closed := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	revoked := e.mustStatus(e.mint("agent-1", closed, "github.repo.read:acme/api"), 201).str("access_token")
	e.mustStatus(e.do("POST", "/v1/tasks/"+closed+"/close", e.agent("agent-1"), nil), 200)
	time.Sleep(2100 * time.Millisecond)
	for name, tok := range map[string]string{
		"expired": expiring, "revoked": revoked, "unknown": "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
		"foreign (an ID token)": e.agent("agent-1"),
	} {
		if r := e.mustStatus(e.introspect(rs, tok), 200); string(r.Raw) != "{\"active\":false}\n" {
			t.Fatalf("%s: %s", name, r.Raw)
		}
	}
}

// TestO09SecretsNeverLogged: a whole flow at debug level leaves no access
// token, no identity token and no raw jti in the logs or the audit trail.
func TestO09SecretsNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	e := newEnvWith(t, envOptions{logs: &logs})
	agent := e.agent("agent-1")
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	m := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{
		"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}), 201)
	e.mint("agent-1", id, "github.repo.read:acme/**") // a refusal, logged and audited
	e.introspect(e.resource("rs"), m.str("access_token"))
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", agent, nil), 200)
	evs := e.mustStatus(e.do("GET", "/v1/audit/events?task_id="+id, e.user("carol", "auditors"), nil), 200)
	if logs.Len() == 0 {
		t.Fatal("no logs were written: the test would prove nothing")
	}
	for name, secret := range map[string]string{
		"access token": m.str("access_token"), "agent identity token": agent, "raw jti": `"` + m.str("jti") + `"`,
		"token signature": m.str("access_token")[strings.LastIndexByte(m.str("access_token"), '.')+1:],
	} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs hold the %s", name)
		}
		if strings.Contains(string(evs.Raw), secret) {
			t.Errorf("the audit trail holds the %s", name)
		}
	}
	if !strings.Contains(string(evs.Raw), broker.HashID(m.str("jti"))) {
		t.Error("the audit trail does not name the credential by its hashed jti")
	}
}

// TestA04NoWideningVerbs: there is no way to edit a task: PUT and PATCH
// are not routes, and they change nothing.
func TestA04NoWideningVerbs(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/api")
	before := e.snapshot()
	for _, m := range []string{"PUT", "PATCH", "DELETE"} {
		r := e.do(m, "/v1/tasks/"+id, e.agent("agent-1"), map[string]any{"scopes": []string{"github.repo.read:acme/**"}})
		if r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("%s: %d %s", m, r.Status, r.Raw)
		}
	}
	if after := e.snapshot(); after.tasks != before.tasks || after.credentials != before.credentials {
		t.Fatal("an edit verb changed the store")
	}
}

// TestTaskHistoryAndHistoryFilters: one task's whole timeline for an
// auditor, and the agent, user and code filters.
func TestTaskHistoryAndHistoryFilters(t *testing.T) {
	e := newEnv(t)
	id := e.approved("hist-agent", "hist-user", "github.repo.read:acme/**")
	e.mustStatus(e.mint("hist-agent", id, "github.repo.read:acme/api"), 201)
	e.mint("hist-agent", id, "github.pr.write:acme/api") // refused: not approved
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("hist-agent"), nil), 200)
	auditor := e.user("carol", "auditors")
	h := e.mustStatus(e.do("GET", "/v1/tasks/"+id+"/history", auditor, nil), 200)
	var types []string
	for _, x := range h.JSON["events"].([]any) {
		types = append(types, x.(map[string]any)["type"].(string))
	}
	if got := strings.Join(types, " "); got != "task.created task.approved credential.issued request.refused task.closed credential.revoked" {
		t.Fatalf("timeline: %s", got)
	}
	if n := len(h.JSON["credentials"].([]any)); n != 1 || h.JSON["task"].(map[string]any)["status"] != "closed" || h.JSON["truncated"] != false {
		t.Fatalf("history: %s", h.Raw)
	}
	before := e.snapshot()
	e.refused(before, e.do("GET", "/v1/tasks/"+id+"/history", e.user("hist-user"), nil), 403, "wrong_principal_kind")

	count := func(q string) int {
		return len(e.mustStatus(e.do("GET", "/v1/audit/events?"+q, auditor, nil), 200).JSON["events"].([]any))
	}
	// The task's six events and the user's refused history request about it.
	if n := count("agent=hist-agent"); n != 7 {
		t.Fatalf("agent filter: %d events", n)
	}
	if n := count("user=" + url.QueryEscape(e.users.URL+"#hist-user")); n != 7 {
		t.Fatalf("user filter: %d events", n)
	}
	if n := count("agent=hist-agent&code=scope_exceeds_approval"); n != 1 {
		t.Fatalf("code filter: %d events", n)
	}
	if n := count("agent=" + url.QueryEscape("https://elsewhere#hist-agent")); n != 0 {
		t.Fatalf("agent at another issuer: %d events", n)
	}
	cs := e.mustStatus(e.do("GET", "/v1/credentials?agent=hist-agent&user=hist-user", auditor, nil), 200)
	if n := len(cs.JSON["credentials"].([]any)); n != 1 {
		t.Fatalf("credentials by agent and user: %d", n)
	}
	before = e.snapshot()
	e.refused(before, e.do("GET", "/v1/credentials?code=x", auditor, nil), 400, "invalid_request")
}

// TestAuditPaginationReturnsEachEventOnce: 10,000 events paged 1,000 at a
// time come back once each, in order, with writes going on meanwhile.
func TestAuditPaginationReturnsEachEventOnce(t *testing.T) {
	e := newEnv(t)
	task := "tsk_" + strings.Repeat("p", 26)
	for i := 0; i < 20; i++ {
		evs := make([]broker.AuditEvent, 500)
		for j := range evs {
			evs[j] = broker.AuditEvent{Time: time.Now(), Type: broker.EventRequestRefused, Actor: broker.SystemActor, TaskID: task}
		}
		if err := e.st.InTx(context.Background(), func(tx broker.Tx) error { return tx.AppendAudit(context.Background(), evs...) }); err != nil {
			t.Fatal(err)
		}
	}
	auditor := e.user("carol", "auditors")
	seen := map[float64]bool{}
	last, cursor := float64(0), ""
	for page := 0; ; page++ {
		q := "/v1/audit/events?limit=1000&task_id=" + task
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		r := e.mustStatus(e.do("GET", q, auditor, nil), 200)
		for _, x := range r.JSON["events"].([]any) {
			seq := x.(map[string]any)["seq"].(float64)
			if seen[seq] || seq <= last {
				t.Fatalf("seq %v twice or out of order", seq)
			}
			seen[seq], last = true, seq
		}
		if page == 3 { // a write in the middle of the walk
			e.task("agent-1", "alice", "github.repo.read:acme/**")
		}
		if cursor = r.str("next_cursor"); cursor == "" {
			break
		}
	}
	if len(seen) != 10000 {
		t.Fatalf("%d events, want 10000", len(seen))
	}
}
