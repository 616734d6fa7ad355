package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/store/sqlite"
)

// The flow tests drive broker.Service on an in-memory SQLite store, with a
// clock that moves only when a test moves it, and check what each call
// returns and what it appended to the audit trail.

// t0 is the fixed time every flow starts at.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	usersURL  = "https://users.test"
	agentsURL = "https://agents.test"
	rsURL     = "https://rs-idp.test"
	apiAud    = "https://api.test"   // any resource server may introspect
	vaultAud  = "https://vault.test" // only ledgerRS may
)

// The principals of the flows. alice is in eng (reads) and maintainers
// (writes); carol is in eng only.
var (
	agent    = broker.Principal{Issuer: agentsURL, Subject: "bot", Kind: broker.KindAgent}
	agent2   = broker.Principal{Issuer: agentsURL, Subject: "bot-2", Kind: broker.KindAgent}
	alice    = broker.Principal{Issuer: usersURL, Subject: "alice", Kind: broker.KindUser, Groups: []string{"eng", "maintainers"}}
	carol    = broker.Principal{Issuer: usersURL, Subject: "carol", Kind: broker.KindUser, Groups: []string{"eng"}}
	auditor  = broker.Principal{Issuer: usersURL, Subject: "audrey", Kind: broker.KindUser, Auditor: true}
	admin    = broker.Principal{Issuer: usersURL, Subject: "root", Kind: broker.KindUser, Admin: true}
	rs       = broker.Principal{Issuer: rsURL, Subject: "api", Kind: broker.KindResource}
	ledgerRS = broker.Principal{Issuer: rsURL, Subject: "ledger", Kind: broker.KindResource}
)

// flowClock is the flows' clock: fixed at t0 until a test advances it.
type flowClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *flowClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *flowClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// flowEnv is a Service on its own store, keys and clock.
type flowEnv struct {
	svc    *broker.Service
	st     *sqlite.Store
	tokens *jwt.Issuer
	clock  *flowClock
	// seen is the seq of the last audit event a test has looked at.
	seen int64
}

// newFlowEnv builds a Service on a fresh in-memory database; opts adjust
// its Config.
func newFlowEnv(t *testing.T, opts ...func(*broker.Config)) *flowEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Memory)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e := &flowEnv{st: st, clock: &flowClock{now: t0}}
	st.Clock = e.clock.Now
	e.tokens, err = jwt.New(ctx, jwt.Config{Issuer: "https://errand.test", Keys: st,
		Secret: []byte(strings.Repeat("s", 32)), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := broker.NewCatalog(
		[]broker.Action{
			{Name: "repo.read", Class: broker.ClassRead, Risk: broker.RiskLow},
			{Name: "pr.write", Class: broker.ClassWrite, Risk: broker.RiskMedium},
			{Name: "repo.token.create", Class: broker.ClassToken, Risk: broker.RiskHigh},
		},
		[]broker.Audience{
			{URL: apiAud, AnyIntrospector: true},
			{URL: vaultAud, Introspectors: []broker.Ref{ledgerRS.Ref()}},
		},
		[]broker.Grant{
			{Group: "eng", Scopes: broker.Scopes{broker.MustParseScope("repo.read:acme/**")}},
			{Group: "maintainers", Scopes: broker.Scopes{broker.MustParseScope("pr.write:acme/**")}},
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.Config{Store: st, Tokens: e.tokens, Catalog: cat, Now: e.clock.Now,
		UserIssuers: []string{usersURL}, AgentIssuers: []string{agentsURL}}
	for _, o := range opts {
		o(&cfg)
	}
	if e.svc, err = broker.NewService(cfg); err != nil {
		t.Fatal(err)
	}
	e.seen = e.head(t)
	return e
}

func (e *flowEnv) head(t *testing.T) int64 {
	t.Helper()
	seq, _, err := e.st.AuditHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// readReq is the request of a task that reads under acme/, for 1 h.
func readReq() broker.CreateTaskRequest {
	return broker.CreateTaskRequest{OnBehalfOf: "alice", Goal: "triage issues",
		Scopes: []string{"repo.read:acme/**"}, Audiences: []string{apiAud}, TTLSeconds: 3600}
}

// create asks for req as agent p; the task must be created.
func (e *flowEnv) create(t *testing.T, p broker.Principal, req broker.CreateTaskRequest) broker.Task {
	t.Helper()
	task, err := e.svc.CreateTask(context.Background(), p, req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return task
}

// approved is a task of agent's, asked with req and approved by alice as
// asked.
func (e *flowEnv) approved(t *testing.T, req broker.CreateTaskRequest) broker.Task {
	t.Helper()
	task := e.create(t, agent, req)
	out, err := e.svc.Approve(context.Background(), alice, task.ID, broker.ApproveRequest{})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	return out
}

// mint mints scopes for apiAud as agent; it must succeed.
func (e *flowEnv) mint(t *testing.T, id string, scopes ...string) broker.Minted {
	t.Helper()
	m, err := e.svc.Mint(context.Background(), agent, id, broker.MintRequest{Scopes: scopes, Audience: apiAud})
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	return m
}

// events returns the audit events appended since the last call (or since
// the env was built), and marks them seen.
func (e *flowEnv) events(t *testing.T) []broker.AuditEvent {
	t.Helper()
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: e.seen, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) > 0 {
		e.seen = evs[len(evs)-1].Seq
	}
	return evs
}

// skip marks every event so far seen (the setup of a case).
func (e *flowEnv) skip(t *testing.T) { t.Helper(); e.events(t) }

// ev is an audit event as a test expects it. Code, when set, is the
// refusal code its detail must carry.
type ev struct {
	Type  string
	Actor broker.Principal // the zero Principal: SystemActor
	Task  string
	Code  string
}

// wantEvents checks that exactly the events want were appended since the
// last look, in order, each at the clock's time, and returns them.
func (e *flowEnv) wantEvents(t *testing.T, want ...ev) []broker.AuditEvent {
	t.Helper()
	got := e.events(t)
	if len(got) != len(want) {
		t.Fatalf("%d audit events appended, want %d: %v", len(got), len(want), types(got))
	}
	for i, w := range want {
		g := got[i]
		actor := broker.SystemActor
		if w.Actor.Kind != "" {
			actor = broker.ActorOf(w.Actor)
		}
		if g.Type != w.Type || g.Actor != actor || g.TaskID != w.Task {
			t.Errorf("event %d = %s by %+v on %q; want %s by %+v on %q", i, g.Type, g.Actor, g.TaskID, w.Type, actor, w.Task)
		}
		if !g.Time.Equal(e.clock.Now()) {
			t.Errorf("event %d (%s) at %v, want the clock's %v", i, g.Type, g.Time, e.clock.Now())
		}
		if c, _ := detailOf(t, g)["code"].(string); c != w.Code {
			t.Errorf("event %d (%s) code %q, want %q", i, g.Type, c, w.Code)
		}
	}
	return got
}

func types(evs []broker.AuditEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func detailOf(t *testing.T, e broker.AuditEvent) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(e.Detail, &d); err != nil {
		t.Fatalf("detail of %s: %v", e.Type, err)
	}
	return d
}

// wantCode checks that err is a refusal with code want.
func wantCode(t *testing.T, err error, want *broker.Error) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded; want %s", want.Code)
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v; want %s", err, want.Code)
	}
}

// refused checks that err is a refusal with code want and that the
// service audited it itself: exactly one request.refused event, by p,
// about taskID, naming the domain operation op and the refusal's detail.
func (e *flowEnv) refused(t *testing.T, err error, want *broker.Error, p broker.Principal, taskID, op string) {
	t.Helper()
	wantCode(t, err, want)
	got := e.wantEvents(t, ev{Type: broker.EventRequestRefused, Actor: p, Task: taskID, Code: want.Code})
	if d := detailOf(t, got[0]); d["op"] != op || d["detail"] != broker.RefusalDetail(err) {
		t.Errorf("refusal detail = %v; want op %q and detail %q", d, op, broker.RefusalDetail(err))
	}
}

// taskOf reads a task as the store has it.
func (e *flowEnv) taskOf(t *testing.T, id string) broker.Task {
	t.Helper()
	task, err := e.st.Task(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// strs reads a JSON list of strings from an event's detail.
func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
