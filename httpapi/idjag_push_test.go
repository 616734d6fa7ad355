package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/revocation"
)

// setReceiver is a target authorization server's RFC 8935 push endpoint:
// it verifies each Security Event Token with go-jose against Errand's
// published JWKS and keeps the verified claims; while fail is set it
// answers as RFC 8935 §2.3 says a receiver refuses.
type setReceiver struct {
	e    *env
	srv  *httptest.Server
	mu   sync.Mutex
	got  []map[string]any
	jtis []string
	fail int
}

func newSETReceiver(t *testing.T) *setReceiver {
	r := &setReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/secevent+jwt" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		typ, c := r.e.verifyIDJAG(string(body)) // a JWS verified with Errand's JWKS
		if typ != "secevent+jwt" {
			t.Errorf("SET typ %q", typ)
		}
		r.jtis = append(r.jtis, c["jti"].(string))
		if r.fail > 0 {
			r.fail--
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"err":"invalid_key","description":"try later"}`))
			return
		}
		r.got = append(r.got, c)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *setReceiver) events() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.got...)
}

// TestX07IDJAGRevocationPush: a revoked ID-JAG of a target with an
// events_endpoint is announced there — a Security Event Token (RFC 8417)
// with the CAEP session-revoked event whose sub_id is the grant's jti —
// through the outbox, so that the target drops the grant and what it
// issued from it. The holder's RFC 7009 revocation of one ID-JAG revokes
// that one only; closing the task revokes the rest; a target without an
// endpoint queues nothing; a refused push is retried with the same SET
// jti and the task reads revoking until the target confirms; another
// agent cannot revoke the grant.
func TestX07IDJAGRevocationPush(t *testing.T) {
	recv := newSETReceiver(t)
	targets := idjagTargets()
	targets[0].EventsEndpoint = recv.srv.URL + "/events"
	e := newEnvWith(t, envOptions{idjagTargets: targets})
	recv.e = e
	push := revocation.NewEventPush(e.st, e.tokens, targets)
	if push == nil {
		t.Fatal("no push backend for a target with an events endpoint")
	}
	clock := time.Now()
	ob := &revocation.Outbox{Store: e.st, Service: e.svc, Backends: map[broker.CredentialKind]revocation.Backend{broker.KindIDJAG: push},
		BaseDelay: time.Second, MaxDelay: 2 * time.Second, Now: func() time.Time { return clock }}
	drain := func() {
		t.Helper()
		clock = clock.Add(3 * time.Second) // past any backoff
		if _, err := ob.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	pending := func(task string) int {
		t.Helper()
		var n int
		if err := e.st.Pool().QueryRow(context.Background(),
			`SELECT count(*) FROM outbox WHERE task_id = $1 AND done_at IS NULL`, task).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	grantOf := func(id string, extra url.Values) (string, string) {
		t.Helper()
		r := e.mustStatus(e.form("/oauth/token", "", e.idjagForm("bot", id, extra)), http.StatusOK)
		_, c := e.verifyIDJAG(r.str("access_token"))
		return r.str("access_token"), c["jti"].(string)
	}

	id := e.idjagApproved("bot", "alice", nil, readAcme)
	g1, jti1 := grantOf(id, nil)
	_, jti2 := grantOf(id, nil)
	_, jtiPlain := grantOf(id, url.Values{"audience": {plainAS}, "resource": nil})

	// Another agent's revocation changes nothing.
	before := e.snapshot()
	e.mustStatus(e.form("/v1/revoke", "", asClient(e.agent("mallory"), url.Values{"token": {g1}})), http.StatusOK)
	if after := e.snapshot(); after != before {
		t.Fatalf("another agent's revocation changed the store: %+v → %+v", before, after)
	}

	// The holder revokes one grant: it alone is revoked, and queued.
	recv.fail = 1
	e.mustStatus(e.form("/v1/revoke", "", asClient(e.agent("bot"), url.Values{"token": {g1}})), http.StatusOK)
	if !e.revoked(jti1) || e.revoked(jti2) || e.revoked(jtiPlain) {
		t.Fatalf("revoked: %v %v %v, want only the first", e.revoked(jti1), e.revoked(jti2), e.revoked(jtiPlain))
	}
	if n := pending(id); n != 1 {
		t.Fatalf("%d outbox items after one revocation, want 1", n)
	}
	// The resource servers' feed lists access tokens only.
	var onFeed int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM revocations WHERE jti = $1`, jti1).Scan(&onFeed); err != nil || onFeed != 0 {
		t.Fatalf("the ID-JAG is on the revocation feed (%d rows, %v)", onFeed, err)
	}
	drain() // refused by the receiver
	if len(recv.events()) != 0 || pending(id) != 1 {
		t.Fatalf("a refused push was confirmed: %d events, %d pending", len(recv.events()), pending(id))
	}
	var lastErr string
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT last_error FROM outbox WHERE task_id = $1`, id).Scan(&lastErr); err != nil || lastErr == "" {
		t.Fatalf("the refusal is not recorded: %q %v", lastErr, err)
	}
	drain()
	evs := recv.events()
	if len(evs) != 1 || pending(id) != 0 {
		t.Fatalf("%d events, %d pending after the retry", len(evs), pending(id))
	}
	if recv.jtis[0] != recv.jtis[1] {
		t.Fatalf("the retry is another SET (jti %s, then %s)", recv.jtis[0], recv.jtis[1])
	}
	checkSET(t, evs[0], jti1, id)

	// Closing the task revokes the rest; only the pushing target's is queued.
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("bot"), nil), http.StatusOK)
	if !e.revoked(jti2) || !e.revoked(jtiPlain) {
		t.Fatal("closing the task left an ID-JAG unrevoked")
	}
	if n := pending(id); n != 1 {
		t.Fatalf("%d outbox items after close, want 1 (the other target takes no events)", n)
	}
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("bot"), nil), http.StatusOK).str("status"); got != "revoking" {
		t.Fatalf("status %q while the target has not confirmed, want revoking", got)
	}
	drain()
	if evs = recv.events(); len(evs) != 2 || pending(id) != 0 {
		t.Fatalf("%d events, %d pending after close", len(evs), pending(id))
	}
	checkSET(t, evs[1], jti2, id)
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("bot"), nil), http.StatusOK).str("status"); got != "closed" {
		t.Fatalf("status %q after the target confirmed, want closed", got)
	}
}

func checkSET(t *testing.T, c map[string]any, grant, task string) {
	t.Helper()
	if c["iss"] != publicURL || c["aud"] != mcpAS || c["txn"] != task || c["iat"] == nil {
		t.Errorf("SET claims %v", c)
	}
	sub, _ := c["sub_id"].(map[string]any)
	if sub["format"] != "opaque" || sub["id"] != grant {
		t.Errorf("sub_id %v, want the grant %s", sub, grant)
	}
	ev, _ := c["events"].(map[string]any)
	if _, ok := ev[revocation.SessionRevoked].(map[string]any); !ok || len(ev) != 1 {
		t.Errorf("events %v", ev)
	}
	b, _ := json.Marshal(c)
	if len(b) > 2048 {
		t.Errorf("SET of %d bytes", len(b))
	}
}

func (e *env) revoked(jti string) bool {
	e.t.Helper()
	var r bool
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT revoked_at IS NOT NULL FROM credentials WHERE jti = $1`, jti).Scan(&r); err != nil {
		e.t.Fatal(err)
	}
	return r
}
