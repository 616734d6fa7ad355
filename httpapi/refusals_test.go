package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
)

// junkToken is a token anyone can make: not signed by anyone, its payload
// a duplicated claim name of 5,000 bytes (a JSON key that strict parsing
// refuses and once quoted, verbatim, into every refusal's audit event).
func junkToken(marker string) string {
	key := strings.Repeat(marker, 5000/len(marker))
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc([]byte(`{"iss":"https://idp.invalid","`+key+`":1,"`+key+`":2}`)) + "." + enc([]byte("not a signature"))
}

// anonCounter reads errand_anonymous_refusals_total{code}.
func (e *env) anonCounter(code string) float64 {
	e.t.Helper()
	mfs, err := e.api.registry.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "errand_anonymous_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// flood sends n requests with bearer token tok from the given sources
// (RemoteAddr), straight to the handler, eight at a time, and checks each
// answer: 401 invalid_token whose detail holds nothing of the token.
func (e *env) flood(t *testing.T, n int, tok, marker string, source func(i int) string) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		bad  = make(chan string, 1)
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req := httptest.NewRequest("POST", "/v1/tasks", strings.NewReader(`{"goal":"g"}`))
				req.RemoteAddr = source(i)
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				e.api.ServeHTTP(rec, req)
				var p Problem
				_ = json.Unmarshal(rec.Body.Bytes(), &p)
				if rec.Code != http.StatusUnauthorized || p.Code != "invalid_token" || strings.Contains(p.Detail, marker) ||
					len(p.Detail) > broker.MaxRefusalDetail {
					select {
					case bad <- fmt.Sprintf("%d %s", rec.Code, rec.Body.Bytes()):
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case b := <-bad:
		t.Fatalf("a junk token was answered %.300s", b)
	default:
	}
}

// newEvents returns the audit events after seq.
func (e *env) newEvents(seq int64) []broker.AuditEvent {
	e.t.Helper()
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: seq, Limit: 100000})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

type summaryDetail struct {
	Code      string
	Count     int64
	Source    string
	Sources   int
	Summary   bool
	Detail    string
	Op        string
	Uncounted bool `json:"sources_uncounted"`
}

func summaries(t *testing.T, evs []broker.AuditEvent) []summaryDetail {
	t.Helper()
	out := make([]summaryDetail, len(evs))
	for i, ev := range evs {
		if ev.Type != broker.EventRequestRefused || ev.Actor.Kind != "anonymous" || ev.TaskID != "" {
			t.Fatalf("event %d: %s by %+v on %q, want an anonymous request.refused", i, ev.Type, ev.Actor, ev.TaskID)
		}
		if err := json.Unmarshal(ev.Detail, &out[i]); err != nil || !out[i].Summary {
			t.Fatalf("event %d is not a summary: %s", i, ev.Detail)
		}
	}
	return out
}

// TestH03AnonymousFloodAddsBoundedAuditRows: 10,000 junk tokens add no
// audit row while they arrive, are counted by code in the metrics, and
// become one summary row for their one source; from many sources the rows
// of a period stay bounded, the busiest sources named and the rest summed.
// No row nor answer holds anything the callers wrote.
func TestH03AnonymousFloodAddsBoundedAuditRows(t *testing.T) {
	e := newEnv(t)
	const marker = "EVILKEY"
	tok := junkToken(marker)
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot()
	counted := e.anonCounter("invalid_token")

	e.flood(t, 10_000, tok, marker, func(int) string { return "203.0.113.7:40000" })
	if got := e.snapshot().auditSeq - before.auditSeq; got != 0 {
		t.Fatalf("the flood added %d audit rows while it ran, want 0", got)
	}
	if got := e.anonCounter("invalid_token") - counted; got != 10_000 {
		t.Fatalf("errand_anonymous_refusals_total{code=invalid_token} grew by %v, want 10000", got)
	}
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := e.newEvents(before.auditSeq)
	sums := summaries(t, evs)
	if len(sums) != 1 || sums[0].Count != 10_000 || sums[0].Source != "203.0.113.7" || sums[0].Code != "invalid_token" || sums[0].Sources != 1 {
		t.Fatalf("10,000 junk tokens from one source were chained as %d rows: %+v", len(sums), sums)
	}
	if d := string(evs[0].Detail); strings.Contains(d, marker) || len(d) > 1024 {
		t.Fatalf("the summary holds the callers' text or is large (%d bytes): %.300s", len(d), d)
	}
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil || len(e.newEvents(evs[0].Seq)) != 0 {
		t.Fatalf("a flush with nothing counted wrote rows (%v)", err)
	}

	// 2,000 refusals from 500 sources: the 64 busiest are named, the rest
	// summed into one row.
	seq := e.snapshot().auditSeq
	e.flood(t, 2000, tok, marker, func(i int) string {
		if i < 1000 {
			return fmt.Sprintf("198.51.100.%d:1234", i%10) // ten busy sources, 100 each
		}
		return fmt.Sprintf("10.9.%d.%d:1234", (i%490)/250, (i%490)%250) // 490 quiet ones, about 2 each
	})
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	sums = summaries(t, e.newEvents(seq))
	if len(sums) != maxNamedRefusalSources+1 {
		t.Fatalf("500 sources were chained as %d rows, want %d", len(sums), maxNamedRefusalSources+1)
	}
	var total int64
	named := map[string]int64{}
	for _, s := range sums[:maxNamedRefusalSources] {
		named[s.Source] = s.Count
		total += s.Count
	}
	other := sums[maxNamedRefusalSources]
	total += other.Count
	if total != 2000 || other.Source != broker.AnonymousSource || other.Sources != 500-maxNamedRefusalSources {
		t.Fatalf("counts %d (want 2000), other row %+v", total, other)
	}
	for i := 0; i < 10; i++ {
		if named[fmt.Sprintf("198.51.100.%d", i)] != 100 {
			t.Fatalf("busy source %d is not named with its 100 refusals: %v", i, named)
		}
	}
}

// TestH03RefusalDetailsHoldNoUnverifiedInput: whatever an unidentified
// caller puts in a token (a claim name, an audience, an issuer, a header),
// the answer and the audit log hold a fixed text, never the caller's.
func TestH03RefusalDetailsHoldNoUnverifiedInput(t *testing.T) {
	e := newEnv(t)
	const marker = "ATTACKERTEXT"
	enc := base64.RawURLEncoding.EncodeToString
	tokens := map[string]string{
		"duplicate claim name": junkToken(marker),
		"case-variant claim name": enc([]byte(`{"alg":"RS256"}`)) + "." +
			enc([]byte(`{"iss":"`+e.agents.URL+`","`+marker+`":1,"`+strings.ToLower(marker)+`":2}`)) + ".c2ln",
		"audience of the caller's choice": e.agents.Token(t, "agent-1", marker, nil),
		"claims of the caller's choice": e.agents.Sign(t, e.agents.Keys()[0], nil, map[string]any{
			"iss": e.agents.URL, "sub": "agent-1", "aud": audience, "iat": "x" + marker, "exp": marker}),
		"header of the caller's choice": enc([]byte(`{"alg":"`+marker+`"}`)) + "." + enc([]byte(`{"iss":"`+e.agents.URL+`"}`)) + ".c2ln",
		"issuer of the caller's choice": enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"iss":"https://`+marker+`"}`)) + ".c2ln",
	}
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			r := e.do("GET", "/v1/tasks", tok, nil)
			e.refused(before, r, http.StatusUnauthorized, "invalid_token")
			if strings.Contains(strings.ToUpper(string(r.Raw)), marker) {
				t.Fatalf("the answer quotes the token: %s", r.Raw)
			}
			for _, ev := range e.newEvents(before.auditSeq) {
				if strings.Contains(strings.ToUpper(string(ev.Detail)), marker) {
					t.Fatalf("the audit log quotes the token: %s", ev.Detail)
				}
			}
		})
	}
}

// TestH03RefusalDetailIsCapped: a refusal that quotes what an identified
// caller sent (an unknown audience of 20 KB) is cut to MaxRefusalDetail
// bytes in the answer and in its audit event.
func TestH03RefusalDetailIsCapped(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	long := "https://" + strings.Repeat("a", 20<<10) + ".example"
	r := e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{long},
	})
	e.refused(before, r, http.StatusBadRequest, "invalid_request")
	if n := len(r.str("detail")); n > broker.MaxRefusalDetail || !strings.HasPrefix(r.str("detail"), "unknown audience") {
		t.Fatalf("problem detail of %d bytes: %.100s", n, r.str("detail"))
	}
	ev := e.newEvents(before.auditSeq)[0]
	var d struct{ Detail string }
	if err := json.Unmarshal(ev.Detail, &d); err != nil || len(d.Detail) > broker.MaxRefusalDetail || len(ev.Detail) > 2*broker.MaxRefusalDetail {
		t.Fatalf("audit detail of %d bytes (%v)", len(ev.Detail), err)
	}
}

// TestH03SummariesSurviveAnOutage: with the database down an unidentified
// caller is still answered 401 (its refusal needs no write), and its count
// is chained once the database is back.
func TestH03SummariesSurviveAnOutage(t *testing.T) {
	proxy, u := testpg.NewProxy(t, testpg.URL(t))
	e := newEnv(t, u)
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	seq := e.snapshot().auditSeq
	proxy.Cut()
	e.flood(t, 50, junkToken("X"), "XXXX", func(int) string { return "192.0.2.1:1" })
	if err := e.api.FlushRefusalSummaries(context.Background()); err == nil {
		t.Fatal("a flush with the database down reported success")
	}
	e.flood(t, 25, junkToken("X"), "XXXX", func(int) string { return "192.0.2.1:1" })
	proxy.Restore()
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	sums := summaries(t, e.newEvents(seq))
	if len(sums) != 1 || sums[0].Count != 75 {
		t.Fatalf("after the outage: %+v, want one summary of 75", sums)
	}
}

// TestRefusalAuditedOnceByWhoeverRefused: a refusal is one request.refused
// event, written by whoever refused. The broker's names the operation
// refused, whichever endpoint asked for it (a mint refused through the
// token exchange is an exchange's refusal, not also a mint's), and the
// task it concerns; one the API makes itself (a body it cannot decode, an
// unknown query parameter) names the route.
func TestRefusalAuditedOnceByWhoeverRefused(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", "github.repo.read:acme/api")
	exchange := e.exchangeForm("bot", id, url.Values{"scope": {"github.repo.read:acme/web"}})
	for _, tt := range []struct {
		name           string
		do             func() resp
		status         int
		code, op       string
		task, oauthErr string
	}{
		{"broker: a mint beyond the approval", func() resp { return e.mint("bot", id, "github.repo.read:acme/web") },
			http.StatusForbidden, "scope_exceeds_approval", broker.OpMint, id, ""},
		{"broker: the same mint through the token exchange", func() resp { return e.form("/oauth/token", "", exchange) },
			http.StatusBadRequest, "scope_exceeds_approval", broker.OpExchange, id, "invalid_scope"},
		{"broker: another agent reads the task", func() resp { return e.do("GET", "/v1/tasks/"+id, e.agent("other-bot"), nil) },
			http.StatusForbidden, "not_task_party", broker.OpReadTask, id, ""},
		{"broker: a user closes another's task", func() resp { return e.do("POST", "/v1/tasks/"+id+"/close", e.user("mallory"), nil) },
			http.StatusForbidden, "not_task_party", broker.OpClose, id, ""},
		{"api: a mint body that is not JSON", func() resp {
			return e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("bot"), `{"scopes": [`)
		}, http.StatusBadRequest, "invalid_request", "POST /v1/tasks/{id}/tokens", id, ""},
		{"api: a create body with an unknown member", func() resp {
			return e.do("POST", "/v1/tasks", e.agent("bot"), `{"goal": "x", "wish": "more"}`)
		}, http.StatusBadRequest, "invalid_request", "POST /v1/tasks", "", ""},
		{"api: an unknown query parameter", func() resp { return e.do("GET", "/v1/tasks?colour=red", e.user("alice"), nil) },
			http.StatusBadRequest, "invalid_request", "GET /v1/tasks", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot()
			r := tt.do()
			if tt.oauthErr != "" {
				e.oauthRefused(before, r, tt.status, tt.oauthErr, tt.code)
			} else {
				e.refused(before, r, tt.status, tt.code)
			}
			// refused asserted exactly one new event, request.refused.
			evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: before.auditSeq, Limit: 5})
			if err != nil || len(evs) != 1 {
				t.Fatalf("events %v %v", evs, err)
			}
			var d struct{ Op, Code string }
			if err := json.Unmarshal(evs[0].Detail, &d); err != nil {
				t.Fatal(err)
			}
			if d.Op != tt.op || d.Code != tt.code || evs[0].TaskID != tt.task {
				t.Fatalf("event op %q code %q task %q, want %q %q %q: %s", d.Op, d.Code, evs[0].TaskID, tt.op, tt.code, tt.task, evs[0].Detail)
			}
		})
	}
}
