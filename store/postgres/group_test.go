package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
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
			errs[i] = st.InGroupTx(ctx, task.ID, func(tx broker.Tx) error {
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
			results[i] = st.InGroupTx(c, fmt.Sprint(i), func(tx broker.Tx) error {
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

// A call that goes on after a failed statement gets an error, and the call
// after it keeps its work: savepoints are per call.
func TestGroupCommitIsolatesAFailedStatement(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.InGroupTx(ctx, "one-lane", func(tx broker.Tx) error {
				if err := tx.SetSuspended(ctx, broker.Ref{Issuer: "iss", Subject: fmt.Sprintf("agent-%d", i)}, "r", "by", time.Now()); err != nil {
					return err
				}
				if i%2 == 0 {
					// A statement fails (a task id taken twice); the
					// function swallows the error.
					now := time.Now().UTC()
					task := broker.Task{ID: fmt.Sprintf("tsk_twice%022d", i), Version: 1, Status: broker.StatusPending,
						Agent: broker.Ref{Issuer: "a", Subject: "b"}, User: broker.Ref{Issuer: "c", Subject: "d"}, Goal: "g",
						Scopes: broker.Scopes{broker.MustParseScope("x.read")}, Audiences: []string{"aud"}, Risk: broker.RiskLow,
						CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
					_ = tx.InsertTask(ctx, &task)
					_ = tx.InsertTask(ctx, &task)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		suspended, serr := st.Suspended(ctx, broker.Ref{Issuer: "iss", Subject: fmt.Sprintf("agent-%d", i)})
		if serr != nil {
			t.Fatal(serr)
		}
		if i%2 == 0 && (err == nil || suspended) {
			t.Errorf("call %d swallowed a failed statement: err %v, its work kept %v", i, err, suspended)
		}
		if i%2 == 1 && (err != nil || !suspended) {
			t.Errorf("call %d: err %v, its work kept %v", i, err, suspended)
		}
	}
}

// Many tasks, many concurrent calls: calls of one task share a lane, so the
// two lanes never wait on each other's row locks.
func TestGroupCommitLanesNeverDeadlock(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	ids := make([]string, 8)
	for k := range ids {
		ids[k] = fmt.Sprintf("tsk_lane%022d", k)
		task := broker.Task{ID: ids[k], Version: 1, Status: broker.StatusApproved,
			Agent: broker.Ref{Issuer: "a", Subject: "b"}, User: broker.Ref{Issuer: "c", Subject: "d"}, Goal: "g",
			Scopes: broker.Scopes{broker.MustParseScope("x.read")}, Audiences: []string{"aud"}, Risk: broker.RiskLow,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := st.InTx(ctx, func(tx broker.Tx) error { return tx.InsertTask(ctx, &task) }); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 256)
	for i := 0; i < 256; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := ids[(i*7)%len(ids)]
			errs <- st.InGroupTx(ctx, id, func(tx broker.Tx) error {
				_, err := tx.LockTask(ctx, id)
				return err
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Replicas' positions: Laggards counts only live replicas behind a
// position; PruneAcks forgets long-silent ones.
func TestReplicaAcks(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	if _, err := st.Ack(ctx, "a", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Ack(ctx, "b", 5); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Ack(ctx, "b", 3); err != nil { // a position never goes back
		t.Fatal(err)
	}
	for _, c := range []struct {
		self string
		seq  int64
		want int
	}{{"a", 6, 1}, {"a", 5, 0}, {"b", 11, 1}, {"c", 11, 2}} {
		if n, err := st.Laggards(ctx, c.self, c.seq, time.Minute); err != nil || n != c.want {
			t.Errorf("Laggards(%s, %d) = %d %v, want %d", c.self, c.seq, n, err, c.want)
		}
	}
	if _, err := st.Pool().Exec(ctx, `UPDATE replica_acks SET beat_at = now() - interval '2 hours' WHERE replica = 'b'`); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Laggards(ctx, "a", 100, time.Minute); n != 0 {
		t.Fatalf("a silent replica is waited for (%d)", n)
	}
	if err := st.PruneAcks(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM replica_acks`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d rows after pruning (%v), want 1", rows, err)
	}
	if err := st.DropAck(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}
