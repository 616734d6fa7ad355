package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/store/sqlite"
)

type fsmEnv struct {
	svc    *broker.Service
	clock  time.Time
	st     *sqlite.Store
	tokens *jwt.Issuer
}

// withCatalog is a service on the same store and keys with another catalog.
func (e *fsmEnv) withCatalog(tb testing.TB, cat *broker.Catalog) *broker.Service {
	return e.withPolicy(tb, cat, nil)
}

func (e *fsmEnv) withPolicy(tb testing.TB, cat *broker.Catalog, p broker.Policy) *broker.Service {
	svc, err := broker.NewService(broker.Config{Store: e.st, Tokens: e.tokens, Catalog: cat,
		UserIssuers: []string{"https://users"}, MaxPendingPerAgent: 1 << 20, Policy: p})
	if err != nil {
		tb.Fatal(err)
	}
	return svc
}

func newFSMEnv(tb testing.TB) *fsmEnv {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Memory)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	e := &fsmEnv{clock: time.Now().UTC(), st: st}
	now := func() time.Time { return e.clock }
	st.Clock = now
	tokens, err := jwt.New(ctx, jwt.Config{Issuer: "https://errand.test", Keys: st, Secret: []byte(strings.Repeat("s", 32)), Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	e.tokens = tokens
	cat, err := broker.NewCatalog([]broker.Action{{Name: "r.read", Class: broker.ClassRead, Risk: broker.RiskLow}},
		[]broker.Audience{{URL: "https://rs", AnyIntrospector: true}},
		[]broker.Grant{{Group: "g", Scopes: broker.Scopes{broker.MustParseScope("r.read:a/**")}}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	e.svc, err = broker.NewService(broker.Config{Store: st, Tokens: tokens, Catalog: cat,
		UserIssuers: []string{"https://users"}, Now: now, MaxPendingPerAgent: 1 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// FuzzTaskFSM drives one task through a random sequence of approve, deny,
// mint, close, a forged approval by the agent, and the clock moving on. A
// model of the task state machine (docs/design.md) says what must succeed; above all, no
// mint ever succeeds unless the task is approved and unexpired, terminal
// states never change, and every minted credential dies with its task.
func FuzzTaskFSM(f *testing.F) {
	f.Add([]byte{0, 2, 3, 2})
	f.Add([]byte{1, 0, 2})
	f.Add([]byte{0, 4, 4, 4, 4, 2, 3})
	f.Add([]byte{5, 0, 0, 2, 2, 3, 3, 2})
	e := newFSMEnv(f)
	agent := broker.Principal{Issuer: "https://agents", Subject: "bot", Kind: broker.KindAgent}
	user := broker.Principal{Issuer: "https://users", Subject: "alice", Kind: broker.KindUser, Groups: []string{"g"}}
	rs := broker.Principal{Issuer: "https://rs-idp", Subject: "rs", Kind: broker.KindResource}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 32 {
			ops = ops[:32]
		}
		task, err := e.svc.CreateTask(ctx, agent, broker.CreateTaskRequest{OnBehalfOf: "alice", Goal: "g",
			Scopes: []string{"r.read:a/**"}, Audiences: []string{"https://rs"}, TTLSeconds: 3600})
		if err != nil {
			t.Fatal(err)
		}
		state, expires := broker.StatusPending, e.clock.Add(time.Hour)
		var tokens []string
		for _, op := range ops {
			now := e.clock
			if !now.Before(expires) && state == broker.StatusApproved {
				state = broker.StatusExpired
			}
			if !now.Before(expires) && state == broker.StatusPending {
				state = broker.StatusDenied
			}
			switch op % 6 {
			case 0:
				_, err := e.svc.Approve(ctx, user, task.ID, broker.ApproveRequest{})
				if (err == nil) != (state == broker.StatusPending) {
					t.Fatalf("approve in state %s: %v", state, err)
				}
				if err == nil {
					state = broker.StatusApproved
				}
			case 1:
				_, err := e.svc.Deny(ctx, user, task.ID, broker.DenyRequest{})
				if (err == nil) != (state == broker.StatusPending) {
					t.Fatalf("deny in state %s: %v", state, err)
				}
				if err == nil {
					state = broker.StatusDenied
				}
			case 2:
				m, err := e.svc.Mint(ctx, agent, task.ID, broker.MintRequest{Scopes: []string{"r.read:a/b"}, Audience: "https://rs"})
				if (err == nil) != (state == broker.StatusApproved) {
					t.Fatalf("mint in state %s: %v", state, err)
				}
				if err == nil {
					if m.Credential.ExpiresAt.After(expires) {
						t.Fatalf("token outlives its task: %v > %v", m.Credential.ExpiresAt, expires)
					}
					tokens = append(tokens, m.Token)
				}
			case 3:
				_, _, err := e.svc.Close(ctx, agent, task.ID)
				if (err == nil) != (state == broker.StatusApproved) {
					t.Fatalf("close in state %s: %v", state, err)
				}
				if err == nil {
					state = broker.StatusClosed
				}
			case 4:
				e.clock = e.clock.Add(20 * time.Minute)
			case 5:
				if _, err := e.svc.Approve(ctx, agent, task.ID, broker.ApproveRequest{}); broker.CodeOf(err) != "approval_forbidden" {
					t.Fatalf("agent approval: %v", err)
				}
			}
			got, err := e.svc.GetTask(ctx, agent, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			if s := e.svc.StatusOf(got); s != state && !(state == broker.StatusApproved && !e.clock.Before(expires)) &&
				!(state == broker.StatusPending && !e.clock.Before(expires)) {
				t.Fatalf("status %s, model %s", s, state)
			}
		}
		if state != broker.StatusApproved || !e.clock.Before(expires) {
			for _, tok := range tokens {
				in, err := e.svc.Introspect(ctx, rs, tok)
				if err != nil || in.Active {
					t.Fatalf("a token of a %s task is active (%v)", state, err)
				}
			}
		}
	})
}
