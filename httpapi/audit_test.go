package httpapi

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

func TestAuditorEndpoints(t *testing.T) {
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

func TestIntrospectionCallers(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	for name, tok := range map[string]string{"agent": e.agent("agent-1"), "user": e.user("alice")} {
		t.Run(name+" may not introspect", func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			e.refused(before, e.introspect(tok, at), 403, "wrong_principal_kind")
		})
	}
	t.Run("no caller", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.refused(before, e.introspect("", at), 401, "invalid_token")
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
