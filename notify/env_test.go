package notify_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/notify"
	"github.com/errandhq/errand/store/postgres"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

const (
	publicURL = "https://errand.example.com"
	apiGitHub = "https://api.github.com"
	agentsURL = "https://agents.example"
	usersURL  = "https://users.example"
)

var ctx = context.Background()

// env is a broker on a real PostgreSQL store with webhooks configured,
// and the worker that delivers to them.
type env struct {
	t      *testing.T
	st     *postgres.Store
	svc    *broker.Service
	worker *notify.Worker
	agent  broker.Principal
	user   broker.Principal
	logs   *syncBuffer
	clock  *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// stepUp is a policy that asks the user to approve every mint.
type stepUp struct{}

func (stepUp) Decide(r broker.PolicyRequest) broker.PolicyDecision {
	if r.Operation == broker.OpMint {
		return broker.PolicyDecision{Effect: broker.EffectStepUp, Policies: []string{"mints-need-a-person"}}
	}
	return broker.PolicyDecision{Effect: broker.EffectAllow}
}

func newEnv(t *testing.T, policy broker.Policy, targets ...notify.Target) *env {
	t.Helper()
	st := testpg.Store(t)
	tokens, err := jwt.New(ctx, jwt.Config{Issuer: publicURL, Keys: st, Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	sc := func(ss ...string) broker.Scopes {
		out, err := broker.ParseScopes(ss)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cat, err := broker.NewCatalog([]broker.Action{
		{Name: "github.repo.read", Class: broker.ClassRead, Risk: broker.RiskLow},
		{Name: "github.pr.write", Class: broker.ClassWrite, Risk: broker.RiskMedium},
	}, []broker.Audience{{URL: apiGitHub, Environment: "prod", AnyIntrospector: true}},
		[]broker.Grant{{Group: "eng", Scopes: sc("github.repo.read:acme/**", "github.pr.write:acme/**")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var hooks []broker.Webhook
	for _, tg := range targets {
		hooks = append(hooks, broker.Webhook{Key: tg.Key(), Events: tg.Events})
	}
	cfg := broker.Config{Store: st, Tokens: tokens, Catalog: cat, UserIssuers: []string{usersURL},
		AgentIssuers: []string{agentsURL}, Webhooks: hooks, MaxPendingPerAgent: 1000}
	if policy != nil {
		cfg.Policy = policy
	}
	svc, err := broker.NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	// A little ahead of the database's clock, which stamps the events.
	c := &clock{t: time.Now().Add(2 * time.Second)}
	e := &env{t: t, st: st, svc: svc, logs: logs, clock: c,
		agent: broker.Principal{Kind: broker.KindAgent, Issuer: agentsURL, Subject: "agent-" + rid()},
		user:  broker.Principal{Kind: broker.KindUser, Issuer: usersURL, Subject: "alice-" + rid(), Groups: []string{"eng"}},
	}
	e.worker = &notify.Worker{Store: st, Failures: svc, Targets: targets, PublicURL: publicURL,
		Poll: 20 * time.Millisecond, Timeout: 2 * time.Second, Now: c.Now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return e
}

func rid() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newSecret is a fresh Standard Webhooks secret.
func newSecret(t *testing.T) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

// target is a webhook to url with a fresh secret.
func target(t *testing.T, url, format string, events ...string) notify.Target {
	t.Helper()
	u, err := notify.CheckURL(url, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		events = broker.NoticeTypes
	}
	return notify.Target{URL: u, Secrets: []string{newSecret(t)}, Events: events, Format: format}
}

// createTask creates a pending task as the agent.
func (e *env) createTask(goal string) broker.Task {
	e.t.Helper()
	k, err := e.svc.CreateTask(ctx, e.agent, broker.CreateTaskRequest{OnBehalfOf: e.user.Subject, Goal: goal,
		Scopes: []string{"github.repo.read:acme/api", "github.pr.write:acme/api"}, Audiences: []string{apiGitHub},
		TTLSeconds: 600, Tool: "tool.gh.v2", Dataset: "acme/api"})
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// drain delivers whatever is due to tg now.
func (e *env) drain(tg notify.Target) int {
	e.t.Helper()
	n, err := e.worker.Drain(ctx, tg)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// delivery is a request a receiver got.
type delivery struct {
	Header http.Header
	Body   []byte
}

// receiver records every request and answers with status().
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []delivery
	status func() int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{status: func() int { return http.StatusNoContent }}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, delivery{Header: req.Header.Clone(), Body: body})
		st := r.status
		r.mu.Unlock()
		w.WriteHeader(st())
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func (r *receiver) answer(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = func() int { return status }
}
