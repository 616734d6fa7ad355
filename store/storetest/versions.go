package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// signer signs nothing real: the suite checks what the store records,
// and a token is only the broker's answer on top of that.
type signer struct{ noTokens }

func (signer) Sign(_ context.Context, t broker.AccessToken) (string, error) {
	return "tok." + t.JTI, nil
}

// stateOf is everything of a task that can change after it is created;
// a change of any of it is a change of the task's state.
func stateOf(k broker.Task) string {
	return fmt.Sprint(k.Status, k.Revoking, k.ApprovedScopes.Strings(), k.ApprovedAudiences, k.DenyReason,
		k.ApprovedAt.UnixMicro(), k.ExpiresAt.UnixMicro(), k.ClosedAt.UnixMicro(), k.UserGroups)
}

// Every change of a task's state bumps its version, whatever sequence of
// operations made it, and nothing else moves the version: the rule Mint's
// snapshot branch stands on (a credential decided on version V is
// recorded only while the task is at V). Random sequences of the
// broker's operations, and of the store's own (the outbox clearing
// revoking), on one task each; the seed is logged.
func testVersionBumpsOnEveryChange(t *testing.T, s Store) {
	cat, err := broker.NewCatalog([]broker.Action{{Name: "github.repo.read", Class: broker.ClassRead, Risk: broker.RiskLow}},
		[]broker.Audience{{URL: "https://api.github.com"}},
		[]broker.Grant{{Group: "eng", Scopes: broker.Scopes{broker.MustParseScope("github.repo.read:acme/**")}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.NewService(broker.Config{Store: s, Tokens: signer{}, Catalog: cat, BackendKinds: []broker.CredentialKind{"backend"},
		UserIssuers: []string{usersIssuer}, AgentIssuers: []string{agentsIssuer}, MaxPendingPerAgent: 100})
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	user := broker.Principal{Issuer: usersIssuer, Subject: "bob", Kind: broker.KindUser, Groups: []string{"eng"}}
	admin := broker.Principal{Issuer: usersIssuer, Subject: "root", Kind: broker.KindUser, Admin: true}
	const ops = 8
	var worked [ops]int // operations that succeeded and changed the task
	// The first runs are fixed, so that every kind of change happens at
	// least once; the others are random.
	fixed := [][]int{{0, 2, 4, 6, 2, 7, 0}, {0, 2, 5, 1}, {1, 0}}
	for run := range 16 {
		agent := agentPrincipal(id("agent-"))
		k, err := svc.CreateTask(ctx, agent, createReq())
		if err != nil {
			t.Fatal(err)
		}
		prev := k
		var trail []string
		for i := range 10 {
			op := rng.IntN(ops)
			if run < len(fixed) {
				if i >= len(fixed[run]) {
					break
				}
				op = fixed[run][i]
			}
			var err error
			switch op {
			case 0:
				_, err = svc.Approve(ctx, user, k.ID, broker.ApproveRequest{})
			case 1:
				_, err = svc.Deny(ctx, user, k.ID, broker.DenyRequest{Reason: "no"})
			case 2, 3:
				_, err = svc.Mint(ctx, agent, k.ID, broker.MintRequest{Scopes: []string{"github.repo.read:acme/x"}, Audience: "https://api.github.com"})
			case 4:
				_, _, err = svc.Close(ctx, agent, k.ID)
			case 5:
				_, _, err = svc.SuspendAgent(ctx, admin, agent.Issuer+"#"+agent.Subject, "test")
				if err != nil {
					_, _, err = svc.SuspendAgent(ctx, admin, agent.Subject, "test")
				}
			case 6:
				err = backendRevocationStarts(s, k.ID)
			case 7:
				err = backendRevocationsDone(s, k.ID)
			}
			trail = append(trail, fmt.Sprintf("%d:%v", op, broker.CodeOf(err)))
			if err != nil && broker.CodeOf(err) == "" {
				t.Fatalf("run %d, ops %v: %v", run, trail, err)
			}
			got, err := s.Task(ctx, k.ID)
			if err != nil {
				t.Fatal(err)
			}
			changed := stateOf(got) != stateOf(prev)
			switch {
			case got.Version < prev.Version:
				t.Fatalf("run %d, ops %v: the version went back %d -> %d", run, trail, prev.Version, got.Version)
			case changed && got.Version == prev.Version:
				t.Fatalf("run %d, ops %v: the state changed (%s -> %s) at version %d", run, trail, stateOf(prev), stateOf(got), got.Version)
			case !changed && got.Version != prev.Version:
				t.Fatalf("run %d, ops %v: the version moved %d -> %d with no change", run, trail, prev.Version, got.Version)
			}
			if changed {
				worked[op]++
			}
			prev = got
		}
	}
	// Each kind of change happened: a sequence that only ever refused
	// would prove nothing. (Mint changes no task state.)
	for op, n := range worked {
		if n == 0 && op != 2 && op != 3 {
			t.Errorf("operation %d never changed a task in this run (seed %d)", op, seed)
		}
	}
}

// backendRevocationStarts queues a backend revocation for the task if it
// has ended, as the broker does for a Vault credential: the task reads
// revoking until the backend confirms.
func backendRevocationStarts(s Store, taskID string) error {
	return s.InTx(ctx, func(tx broker.Tx) error {
		k, err := tx.LockTask(ctx, taskID)
		if err != nil {
			return err
		}
		if !slices.Contains([]broker.Status{broker.StatusClosed, broker.StatusRevoked, broker.StatusExpired}, k.Status) || k.Revoking {
			return nil
		}
		k.Revoking, k.Version = true, k.Version+1
		if err := tx.UpdateTask(ctx, k); err != nil {
			return err
		}
		n := now()
		return tx.Enqueue(ctx, []broker.OutboxItem{{TaskID: taskID, Kind: "backend", Ref: id("ref-"), CreatedAt: n, NextAttemptAt: n}})
	})
}

// backendRevocationsDone completes every outbox item of the task, as the
// worker does once the backend confirms: the store clears revoking.
func backendRevocationsDone(s Store, taskID string) error {
	items, err := s.ClaimOutbox(ctx, now().Add(time.Hour), time.Minute, 1000)
	if err != nil {
		return err
	}
	for _, it := range items {
		if it.TaskID != taskID {
			if err := s.RetryOutbox(ctx, it.ID, it.Attempts, now(), "not this test's"); err != nil {
				return err
			}
			continue
		}
		if err := s.CompleteOutbox(ctx, it.ID, now()); err != nil {
			return err
		}
	}
	return nil
}
