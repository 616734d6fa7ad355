package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/errandhq/errand/broker"
)

// noTokens is the token issuer of a Service whose tests mint nothing.
type noTokens struct{}

func (noTokens) Sign(context.Context, broker.AccessToken) (string, error) {
	return "", errors.New("storetest: no tokens")
}

func (noTokens) Verify(context.Context, string) (broker.AccessToken, error) {
	return broker.AccessToken{}, broker.ErrInvalidToken
}

const (
	usersIssuer  = "https://users.example"
	agentsIssuer = "https://agents.example"
)

// service is a broker.Service over s with one action, one audience and a
// pending cap of maxPending.
func service(t *testing.T, s Store, maxPending int) *broker.Service {
	t.Helper()
	cat, err := broker.NewCatalog([]broker.Action{{Name: "github.repo.read", Class: broker.ClassRead, Risk: broker.RiskLow}},
		[]broker.Audience{{URL: "https://api.github.com"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.NewService(broker.Config{Store: s, Tokens: noTokens{}, Catalog: cat,
		UserIssuers: []string{usersIssuer}, AgentIssuers: []string{agentsIssuer}, MaxPendingPerAgent: maxPending})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func agentPrincipal(sub string) broker.Principal {
	return broker.Principal{Issuer: agentsIssuer, Subject: sub, Kind: broker.KindAgent}
}

func createReq() broker.CreateTaskRequest {
	return broker.CreateTaskRequest{OnBehalfOf: "bob", Goal: "read", Scopes: []string{"github.repo.read:acme/**"},
		Audiences: []string{"https://api.github.com"}, TTLSeconds: 600}
}

func pendingOf(t *testing.T, s Store, agent broker.Ref) int {
	t.Helper()
	now, err := s.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := s.ListTasks(ctx, broker.TaskFilter{Agent: &agent, Status: broker.StatusPending, Now: now, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(tasks)
}

// testPendingCapExact (H08): concurrent creates never leave an agent more
// pending tasks than its cap: the count is read under the agent's lock in
// the inserting transaction.
func testPendingCapExact(t *testing.T, s Store) {
	const limit, callers = 5, 24
	svc := service(t, s, limit)
	p := agentPrincipal(id("flooder-"))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		limited int
	)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.CreateTask(ctx, p, createReq())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, broker.ErrRateLimited):
				limited++
			default:
				t.Errorf("CreateTask: %v", err)
			}
		}()
	}
	wg.Wait()
	if created != limit || limited != callers-limit {
		t.Fatalf("created %d, refused %d; want exactly %d and %d", created, limited, limit, callers-limit)
	}
	if n := pendingOf(t, s, p.Ref()); n != limit {
		t.Fatalf("%d pending tasks stored against a cap of %d", n, limit)
	}
}

// testCreateRacingSuspension (R10): a create racing the kill switch either
// commits first (and the suspension denies it) or reads the suspension and
// is refused; no task of a suspended agent is left pending.
func testCreateRacingSuspension(t *testing.T, s Store) {
	svc := service(t, s, 1000)
	admin := broker.Principal{Issuer: usersIssuer, Subject: "root", Kind: broker.KindUser, Admin: true}
	for round := 0; round < 8; round++ {
		p := agentPrincipal(id("rogue-"))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for j := 0; j < 4; j++ {
					if _, err := svc.CreateTask(ctx, p, createReq()); err != nil && !errors.Is(err, broker.ErrAgentSuspended) {
						t.Errorf("CreateTask: %v", err)
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, _, err := svc.SuspendAgent(ctx, admin, p.Ref().String(), "rogue"); err != nil {
				t.Errorf("SuspendAgent: %v", err)
			}
		}()
		close(start)
		wg.Wait()
		if n := pendingOf(t, s, p.Ref()); n != 0 {
			t.Fatalf("round %d: %d tasks of a suspended agent are pending", round, n)
		}
		if _, err := svc.CreateTask(ctx, p, createReq()); !errors.Is(err, broker.ErrAgentSuspended) {
			t.Fatalf("round %d: create after the suspension: %v", round, fmt.Sprint(err))
		}
	}
}
