package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/revocation"
)

func (e *env) storedStatus(id string) string {
	e.t.Helper()
	var st string
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT status FROM tasks WHERE id = $1`, id).Scan(&st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) liveCredentials(id string) int {
	e.t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM credentials WHERE task_id = $1 AND revoked_at IS NULL`, id).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) eventTypes(id string) []string {
	e.t.Helper()
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{TaskID: id, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// TestSweeperRecordsExpiry: a task past its time becomes expired in the
// store with its credentials revoked, events written and the feed told; a
// pending task past its window becomes denied.
func TestSweeperRecordsExpiry(t *testing.T) {
	e := newEnv(t)
	id := e.task("agent-1", "alice", "github.repo.read:acme/**")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 3}), 200)
	e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
	e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/web"), 201)
	pending := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}, "ttl_seconds": 3,
	}), 201).str("id")
	tail := e.feedTail()
	time.Sleep(3100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&revocation.Sweeper{Service: e.svc, Interval: 50 * time.Millisecond}).Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.storedStatus(id) != "expired" || e.storedStatus(pending) != "denied" {
		if time.Now().After(deadline) {
			t.Fatalf("not swept: %s, %s", e.storedStatus(id), e.storedStatus(pending))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := e.liveCredentials(id); n != 0 {
		t.Fatalf("%d live credentials of an expired task", n)
	}
	got := strings.Join(e.eventTypes(id), " ")
	if !strings.HasSuffix(got, "task.expired credential.revoked credential.revoked") {
		t.Fatalf("events: %s", got)
	}
	if got := strings.Join(e.eventTypes(pending), " "); got != "task.created task.denied" {
		t.Fatalf("pending task events: %s", got)
	}
	feed := e.mustStatus(e.do("GET", "/v1/revocations?limit=1000&since="+tail, e.resource("rs"), nil), 200)
	n := 0
	for _, x := range feed.JSON["revocations"].([]any) {
		if x.(map[string]any)["task_id"] == id && x.(map[string]any)["reason"] == "task_expired" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d feed entries for the expired task: %s", n, feed.Raw)
	}
}

// feedTail is the feed's current end position.
func (e *env) feedTail() string {
	e.t.Helper()
	tail := "0"
	for {
		page := e.mustStatus(e.do("GET", "/v1/revocations?limit=1000&since="+tail, e.resource("rs"), nil), 200)
		tail = page.str("next_cursor")
		if len(page.JSON["revocations"].([]any)) < 1000 {
			return tail
		}
	}
}

// TestSweepersOnTwoReplicasNeverDoubleWork: sweepers on two replicas end
// each due task exactly once.
func TestSweepersOnTwoReplicasNeverDoubleWork(t *testing.T) {
	e := newEnv(t)
	b := e.replica()
	var ids []string
	for i := 0; i < 30; i++ {
		id := e.task("agent-1", "alice", "github.repo.read:acme/**")
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 1}), 200)
		ids = append(ids, id)
	}
	time.Sleep(1100 * time.Millisecond)
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, svc := range []*broker.Service{e.svc, b.svc, e.svc, b.svc} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := svc.ExpireDue(context.Background(), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
				total.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if got := strings.Count(strings.Join(e.eventTypes(id), " "), "task.expired"); got != 1 || e.storedStatus(id) != "expired" {
			t.Fatalf("task %s: %d task.expired events, status %s", id, got, e.storedStatus(id))
		}
	}
	if total.Load() < 30 {
		t.Fatalf("sweepers ended %d tasks", total.Load())
	}
}

func (e *env) revokeToken(caller, token string) resp {
	e.t.Helper()
	form := url.Values{"token": {token}}.Encode()
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/revoke", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+caller)
	return e.send(req, []byte(form))
}

// TestO08RFC7009Revoke: the token's agent or user revokes it; unknown and
// foreign tokens answer 200 and change nothing.
func TestO08RFC7009Revoke(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	a := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	b := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/web"), 201).str("access_token")
	rs := e.resource("rs")

	for name, caller := range map[string]string{"another agent": e.agent("agent-2"), "another user": e.user("mallory")} {
		before := e.snapshot()
		e.mustStatus(e.revokeToken(caller, a), 200)
		if after := e.snapshot(); after != before {
			t.Fatalf("%s changed the store", name)
		}
	}
	before := e.snapshot()
	e.mustStatus(e.revokeToken(e.agent("agent-1"), "not-a-token"), 200)
	e.mustStatus(e.revokeToken(e.agent("agent-1"), e.agent("agent-1")), 200)
	if after := e.snapshot(); after != before {
		t.Fatal("an unknown token changed the store")
	}
	if r := e.introspect(rs, a); r.JSON["active"] != true {
		t.Fatal("a refused revocation took effect")
	}

	e.mustStatus(e.revokeToken(e.agent("agent-1"), a), 200)
	e.mustStatus(e.revokeToken(e.user("alice"), b), 200)
	for _, tok := range []string{a, b} {
		if r := e.introspect(rs, tok); string(r.Raw) != "{\"active\":false}\n" {
			t.Fatalf("revoked token: %s", r.Raw)
		}
	}
	e.mustStatus(e.revokeToken(e.agent("agent-1"), a), 200) // again: still 200, nothing new
	if got := strings.Count(strings.Join(e.eventTypes(id), " "), "credential.revoked"); got != 2 {
		t.Fatalf("%d credential.revoked events", got)
	}
	if e.storedStatus(id) != "approved" {
		t.Fatal("revoking one token ended the task")
	}
	before = e.snapshot()
	e.oauthRefused(before, e.revokeToken(rs, a), 400, "unauthorized_client", "wrong_principal_kind")
}

// TestA10KillSwitch: an admin revokes everything of one agent at once and
// refuses its new tasks until the suspension is lifted.
func TestA10KillSwitch(t *testing.T) {
	e := newEnv(t)
	t1 := e.approved("rogue", "alice", "github.repo.read:acme/**")
	t2 := e.approved("rogue", "bob", "github.repo.read:acme/**")
	t3 := e.task("rogue", "alice", "github.repo.read:acme/**")
	other := e.approved("good", "alice", "github.repo.read:acme/**")
	tok1 := e.mustStatus(e.mint("rogue", t1, "github.repo.read:acme/api"), 201).str("access_token")
	tok2 := e.mustStatus(e.mint("rogue", t2, "github.repo.read:acme/api"), 201).str("access_token")
	good := e.mustStatus(e.mint("good", other, "github.repo.read:acme/api"), 201).str("access_token")
	agent := e.agents.URL + "#rogue"

	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/agents/suspend", e.user("alice", "eng"), map[string]any{"agent": agent, "reason": "x"}), 403, "wrong_principal_kind")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/agents/suspend", e.agent("rogue"), map[string]any{"agent": agent, "reason": "x"}), 403, "wrong_principal_kind")

	admin := e.users.Token(t, "root", audience, map[string]any{"groups": []string{"admins"}})
	r := e.mustStatus(e.do("POST", "/v1/agents/suspend", admin, map[string]any{"agent": agent, "reason": "exfiltration suspected"}), 200)
	if r.JSON["tasks_ended"].(float64) != 3 || r.JSON["revoked"].(float64) != 2 {
		t.Fatalf("suspend: %s", r.Raw)
	}
	rs := e.resource("rs")
	for _, tok := range []string{tok1, tok2} {
		if in := e.introspect(rs, tok); in.JSON["active"] != false {
			t.Fatalf("token of a suspended agent is active: %s", in.Raw)
		}
	}
	if in := e.introspect(rs, good); in.JSON["active"] != true {
		t.Fatal("another agent's token was revoked")
	}
	if e.storedStatus(t1) != "revoked" || e.storedStatus(t2) != "revoked" || e.storedStatus(t3) != "denied" {
		t.Fatalf("statuses %s %s %s", e.storedStatus(t1), e.storedStatus(t2), e.storedStatus(t3))
	}
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", e.agent("rogue"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub},
	}), 403, "agent_suspended")
	// A task that slipped in while the suspension committed (as a create
	// racing it would) can be neither approved nor used.
	now := time.Now().UTC().Truncate(time.Microsecond)
	raced := broker.Task{ID: "tsk_" + strings.Repeat("r", 26), Version: 1, Status: broker.StatusPending,
		Agent: broker.Ref{Issuer: e.agents.URL, Subject: "rogue"}, User: broker.Ref{Issuer: e.users.URL, Subject: "alice"},
		Goal: "g", Scopes: broker.Scopes{broker.MustParseScope("github.repo.read:acme/x")}, Audiences: []string{apiGitHub},
		Risk: broker.RiskLow, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := e.st.InTx(context.Background(), func(tx broker.Tx) error { return tx.InsertTask(context.Background(), &raced) }); err != nil {
		t.Fatal(err)
	}
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+raced.ID+"/approve", e.user("alice", "eng"), nil), 403, "agent_suspended")
	e.mustStatus(e.do("POST", "/v1/agents/unsuspend", admin, map[string]any{"agent": agent}), 200)
	e.task("rogue", "alice", "github.repo.read:acme/**")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/agents/unsuspend", admin, map[string]any{"agent": agent}), 404, "not_found")
}

// TestCloseOnOneReplicaIsInactiveOnTheOther: no cache stands between
// introspection and the database, so the close that commits on B is seen
// by A's very next introspection.
func TestCloseOnOneReplicaIsInactiveOnTheOther(t *testing.T) {
	a := newEnv(t)
	b := a.replica()
	rs := a.resource("rs")
	for i := 0; i < 20; i++ {
		id := b.approved("agent-1", "alice", "github.repo.read:acme/**")
		tok := b.mustStatus(b.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
		if r := a.introspect(rs, tok); r.JSON["active"] != true {
			t.Fatalf("A does not see B's token: %s", r.Raw)
		}
		b.mustStatus(b.do("POST", "/v1/tasks/"+id+"/close", b.agent("agent-1"), nil), 200)
		if r := a.introspect(rs, tok); r.JSON["active"] != false {
			t.Fatalf("A still says active after B's close committed: %s", r.Raw)
		}
	}
}

// TestCloseWithAThousandCredentials: one close revokes them all, in one
// transaction.
func TestCloseWithAThousandCredentials(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	agent := broker.Principal{Issuer: e.agents.URL, Subject: "agent-1", Kind: broker.KindAgent}
	var last string
	for i := 0; i < 1000; i++ {
		m, err := e.svc.Mint(context.Background(), agent, id, broker.MintRequest{Scopes: []string{"github.repo.read:acme/api"}, Audience: apiGitHub})
		if err != nil {
			t.Fatal(err)
		}
		last = m.Token
	}
	r := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	if r.JSON["revoked"].(float64) != 1000 || e.liveCredentials(id) != 0 {
		t.Fatalf("close revoked %v; %d live", r.JSON["revoked"], e.liveCredentials(id))
	}
	if in := e.introspect(e.resource("rs"), last); in.JSON["active"] != false {
		t.Fatal("a token is still active")
	}
}

// sseEvent is one event of the revocation stream.
type sseEvent struct {
	id   string
	data revocationJSON
}

// openStream connects to the revocation stream and delivers its events.
func (e *env) openStream(t testing.TB, lastEventID string) (<-chan sseEvent, func()) {
	return e.openStreamAs(t, "rs", lastEventID)
}

// openStreamAs opens the stream as the resource server rsSub.
func (e *env) openStreamAs(t testing.TB, rsSub, lastEventID string) (<-chan sseEvent, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/revocations/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e.resource(rsSub))
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	ch := readEvents(res.Body)
	// A test that fails while the stream is open must not hang in the
	// server's Close, which waits for the stream's request to end.
	t.Cleanup(cancel)
	return ch, cancel
}

func recv(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
	}
	return sseEvent{}
}

// TestRevocationFeedAndStream: the feed lists revocations in commit order
// with a cursor; the stream pushes them as they commit and resumes after
// Last-Event-ID without loss or repetition.
func TestRevocationFeedAndStream(t *testing.T) {
	e := newEnv(t)
	rs := e.resource("rs")
	start := e.mustStatus(e.do("GET", "/v1/revocations?limit=1000", rs, nil), 200)
	cursor := start.str("next_cursor")
	for start.JSON["revocations"] != nil && len(start.JSON["revocations"].([]any)) == 1000 {
		start = e.mustStatus(e.do("GET", "/v1/revocations?limit=1000&since="+cursor, rs, nil), 200)
		cursor = start.str("next_cursor")
	}
	ch, stop := e.openStream(t, cursor)
	closeWith := func(n int) []string {
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		var jtis []string
		for i := 0; i < n; i++ {
			jtis = append(jtis, e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("jti"))
		}
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
		return jtis
	}
	first := closeWith(3)
	var lastID string
	seen := map[string]bool{}
	// Every event in commit order; another test's task that a background
	// worker of this package ends meanwhile may add its own.
	for n := 0; n < len(first); {
		ev := recv(t, ch)
		if slicesContains(first, ev.data.JTI) {
			seen[ev.data.JTI] = true
			n++
		}
		if lastID != "" && ev.id <= lastID && len(ev.id) <= len(lastID) {
			t.Fatalf("events out of order: %s after %s", ev.id, lastID)
		}
		lastID = ev.id
	}
	for _, j := range first {
		if !seen[j] {
			t.Fatalf("jti %s not streamed", j)
		}
	}
	stop()
	second := closeWith(2) // while disconnected
	ch2, stop2 := e.openStream(t, lastID)
	defer stop2()
	for n := 0; n < len(second); {
		ev := recv(t, ch2)
		if seen[ev.data.JTI] {
			t.Fatalf("resumed stream repeated %s", ev.data.JTI)
		}
		if slicesContains(second, ev.data.JTI) {
			seen[ev.data.JTI] = true
			n++
		}
	}
	page := e.mustStatus(e.do("GET", "/v1/revocations?since="+cursor, rs, nil), 200)
	var listed []string
	for _, r := range page.JSON["revocations"].([]any) {
		listed = append(listed, r.(map[string]any)["jti"].(string))
	}
	for _, j := range append(first, second...) {
		if !slicesContains(listed, j) {
			t.Fatalf("feed since the start lacks %s: %v", j, listed)
		}
	}
	before := e.snapshot()
	e.refused(before, e.do("GET", "/v1/revocations", e.agent("agent-1"), nil), 403, "wrong_principal_kind")
	before = e.snapshot()
	e.refused(before, e.do("GET", "/v1/revocations?since=-3", rs, nil), 400, "invalid_request")
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// flaky fails its first n revocations, then succeeds.
type flaky struct {
	n     atomic.Int64
	fails int64
	calls atomic.Int64
}

func (f *flaky) Revoke(_ context.Context, it broker.OutboxItem) error {
	f.calls.Add(1)
	if f.n.Add(1) <= f.fails {
		return errors.New("backend unavailable")
	}
	return nil
}

// TestOutboxRetriesUntilConfirmed: a backend credential's revocation is
// queued with the close; the task reads revoking until the backend
// confirms; failures back off, raise backend.revoke_failed once after the
// alarm time, and a replica that dies mid-drain loses nothing.
func TestOutboxRetriesUntilConfirmed(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	task, err := e.st.Task(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	backendCred := broker.Credential{ID: "lease-" + id, TaskID: id, Kind: "testbackend", Agent: task.Agent, User: task.User,
		Scopes: task.ApprovedScopes, Audience: apiGitHub, IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := e.st.InTx(context.Background(), func(tx broker.Tx) error { return tx.InsertCredential(context.Background(), &backendCred) }); err != nil {
		t.Fatal(err)
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "revoking" {
		t.Fatalf("status %q while the backend has not confirmed, want revoking", got)
	}

	// A replica claims the item and dies before it can record anything.
	clock := time.Now()
	claimed, err := e.st.ClaimOutbox(context.Background(), clock, time.Minute, 10)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}

	backend := &flaky{fails: 3}
	o := &revocation.Outbox{Store: e.st, Service: e.svc, Backends: map[broker.CredentialKind]revocation.Backend{"testbackend": backend},
		BaseDelay: time.Second, MaxDelay: 4 * time.Second, AlarmAfter: 2 * time.Minute, Now: func() time.Time { return clock }}
	if n, _ := o.Drain(context.Background()); n != 0 {
		t.Fatal("a leased item was taken by another replica")
	}
	for i := 0; i < 20 && backend.calls.Load() < 4; i++ {
		clock = clock.Add(90 * time.Second) // past the lease, then past each backoff
		if _, err := o.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if backend.calls.Load() != 4 {
		t.Fatalf("%d backend calls, want 3 failures and 1 success", backend.calls.Load())
	}
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "closed" {
		t.Fatalf("status %q after the backend confirmed, want closed", got)
	}
	if got := strings.Count(strings.Join(e.eventTypes(id), " "), "backend.revoke_failed"); got != 1 {
		t.Fatalf("%d backend.revoke_failed events, want exactly 1", got)
	}
	if n, _ := o.Drain(context.Background()); n != 0 {
		t.Fatal("a confirmed item was claimed again")
	}
}

// readEvents reads a revocation stream's Server-Sent Events until body
// ends, then closes body and the channel.
func readEvents(body io.ReadCloser) <-chan sseEvent {
	ch := make(chan sseEvent, 1000)
	go func() {
		defer close(ch)
		defer body.Close()
		sc := bufio.NewScanner(body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
			case line == "" && ev.id != "":
				ch <- ev
				ev = sseEvent{}
			}
		}
	}()
	return ch
}
