package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testpg"
)

// TestGroupCommit: concurrent InGroupTx calls commit together; a call that
// fails leaves nothing (its savepoint is rolled back) and does not disturb
// the others; every call returns after its work is committed and visible
// to any connection; the audit chain stays contiguous and verifies.
func TestGroupCommit(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	task := broker.Task{ID: "tsk_group", Version: 1, Status: broker.StatusApproved,
		Agent: broker.Ref{Issuer: "a", Subject: "b"}, User: broker.Ref{Issuer: "c", Subject: "d"}, Goal: "g",
		Scopes: broker.Scopes{broker.MustParseScope("x.read")}, Audiences: []string{"aud"}, Risk: broker.RiskLow,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := st.InTx(ctx, func(tx broker.Tx) error { return tx.InsertTask(ctx, &task) }); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.InGroupTx(ctx, func(tx broker.Tx) error {
				if _, err := tx.LockTask(ctx, task.ID); err != nil {
					return err
				}
				c := broker.Credential{JTI: fmt.Sprintf("jti-%d", i), TaskID: task.ID, Kind: "jwt", Agent: task.Agent,
					User: task.User, Scopes: task.Scopes, Audience: "aud", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
				if err := tx.InsertCredential(ctx, &c); err != nil {
					return err
				}
				if err := tx.AppendAudit(ctx, broker.AuditEvent{Time: now, Type: broker.EventCredentialIssued,
					Actor: broker.Actor{Kind: "agent"}, TaskID: task.ID}); err != nil {
					return err
				}
				switch i % 10 {
				case 3: // a refusal after writing: nothing of it may stay
					return broker.Errorf(broker.ErrScopeExceedsApproval, "no")
				case 7: // a database error after writing (a duplicate key)
					dup := c
					return tx.InsertCredential(ctx, &dup)
				}
				return nil
			})
			if errs[i] == nil {
				// Returned means committed: visible on another connection.
				if _, err := st.Credential(ctx, fmt.Sprintf("jti-%d", i)); err != nil {
					errs[i] = fmt.Errorf("returned before commit: %w", err)
				}
			}
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch i % 10 {
		case 3:
			if !errors.Is(err, broker.ErrScopeExceedsApproval) {
				t.Errorf("call %d: %v, want its refusal", i, err)
			}
		case 7:
			if err == nil {
				t.Errorf("call %d: a duplicate key was accepted", i)
			}
		default:
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			ok++
		}
	}
	cs, err := st.Credentials(ctx, broker.HistoryFilter{TaskID: task.ID, Limit: 1000})
	if err != nil || len(cs) != ok {
		t.Fatalf("%d credentials kept, want %d (%v)", len(cs), ok, err)
	}
	evs, err := st.AuditEvents(ctx, broker.HistoryFilter{Limit: 1000})
	if err != nil || len(evs) != ok {
		t.Fatalf("%d audit events, want %d (%v)", len(evs), ok, err)
	}
	v := broker.NewChainVerifier()
	for _, e := range evs {
		if err := v.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	seq, hash, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Finish(seq, hash); err != nil {
		t.Fatal(err)
	}
}

// A caller whose context ends while its group runs does not end the group.
func TestGroupCommitSurvivesACancelledCaller(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	var wg sync.WaitGroup
	results := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctx
			if i == 0 {
				c = gone
			}
			results[i] = st.InGroupTx(c, func(tx broker.Tx) error {
				_, err := tx.(broker.Clock).Now(c)
				return err
			})
		}()
	}
	wg.Wait()
	for i, err := range results {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
}
