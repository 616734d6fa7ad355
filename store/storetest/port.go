package storetest

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// The port's methods that the flows above reach only through the broker,
// each called directly: what it reads back is what was written, and a
// miss is ErrNotFound.
func testPortRoundTrips(t *testing.T, s Store) {
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	k := approvedTask(t, s, nil)

	// LockTaskChecked: the task, its agent's suspension, the store's clock.
	before := now().Add(-time.Second)
	if err := s.InTx(ctx, func(tx broker.Tx) error {
		got, suspended, at, err := tx.LockTaskChecked(ctx, k.ID)
		switch {
		case err != nil:
			return err
		case got.ID != k.ID || got.Version != k.Version || suspended:
			t.Errorf("LockTaskChecked = %+v, suspended %v", got, suspended)
		case at.Before(before):
			t.Errorf("LockTaskChecked's clock %v is before %v", at, before)
		}
		if _, _, _, err := tx.LockTaskChecked(ctx, id("tsk_")); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("LockTaskChecked of no task: %v", err)
		}
		if err := tx.SetSuspended(ctx, k.Agent, "r", "admin", now()); err != nil {
			return err
		}
		if yes, err := tx.IsSuspended(ctx, k.Agent); err != nil || !yes {
			t.Errorf("IsSuspended after SetSuspended = %v, %v", yes, err)
		}
		if _, suspended, _, err := tx.LockTaskChecked(ctx, k.ID); err != nil || !suspended {
			t.Errorf("LockTaskChecked of a suspended agent's task: suspended %v, %v", suspended, err)
		}
		// LockAgent reads the standing the transaction decides on.
		suspended, pending, err := tx.LockAgent(ctx, k.Agent, now(), 10)
		if err != nil || !suspended || pending != 0 {
			t.Errorf("LockAgent = %v, %d, %v; want suspended, 0 pending", suspended, pending, err)
		}
		other := broker.Ref{Issuer: k.Agent.Issuer, Subject: id("agent-")}
		if yes, err := tx.IsSuspended(ctx, other); err != nil || yes {
			t.Errorf("IsSuspended of another agent = %v, %v", yes, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A task's Vault token: none, then the one inserted.
	tok := broker.TaskToken{Accessor: id("acc-"), Sealed: []byte("sealed"), ExpiresAt: now().Add(time.Hour)}
	if err := s.InTx(ctx, func(tx broker.Tx) error {
		if _, err := tx.TaskToken(ctx, k.ID); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("TaskToken before any: %v", err)
		}
		if err := tx.InsertTaskToken(ctx, k.ID, tok); err != nil {
			return err
		}
		got, err := tx.TaskToken(ctx, k.ID)
		if err != nil || got.Accessor != tok.Accessor || !bytes.Equal(got.Sealed, tok.Sealed) || !got.ExpiresAt.Equal(tok.ExpiresAt) {
			t.Errorf("TaskToken = %+v, %v; want %+v", got, err, tok)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A step-up read, locked and not; a denied one is listed as denied.
	u := broker.StepUp{ID: id("apr_"), TaskID: k.ID, Agent: k.Agent, User: k.User, Scopes: k.Scopes,
		Audience: k.ApprovedAudiences[0], RequestHash: id("h"), Status: broker.StepUpPending,
		CreatedAt: now(), ExpiresAt: now().Add(time.Minute)}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertStepUp(ctx, &u) }); err != nil {
		t.Fatal(err)
	}
	if err := s.InTx(ctx, func(tx broker.Tx) error {
		got, err := tx.ReadStepUp(ctx, u.ID, true)
		if err != nil || got.ID != u.ID || got.Status != broker.StepUpPending {
			t.Errorf("ReadStepUp(locked) = %+v, %v", got, err)
		}
		if _, err := tx.ReadStepUp(ctx, id("apr_"), false); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("ReadStepUp of none: %v", err)
		}
		got.Status, got.DenyReason, got.DecidedAt = broker.StepUpDenied, "no", now()
		if err := tx.UpdateStepUp(ctx, got); err != nil {
			return err
		}
		denied, err := tx.DeniedStepUps(ctx, k.ID)
		if err != nil || len(denied) != 1 || denied[0].ID != u.ID || denied[0].DenyReason != "no" {
			t.Errorf("DeniedStepUps = %+v, %v", denied, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.StepUp(ctx, u.ID); err != nil || got.Status != broker.StepUpDenied {
		t.Errorf("StepUp = %+v, %v", got, err)
	}
	if _, err := s.StepUp(ctx, id("apr_")); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("StepUp of none: %v", err)
	}

	// An outbox item's alarm is recorded.
	n := now()
	if err := s.InTx(ctx, func(tx broker.Tx) error {
		return tx.Enqueue(ctx, []broker.OutboxItem{{TaskID: k.ID, Kind: "backend", Ref: id("ref-"), CreatedAt: n, NextAttemptAt: n}})
	}); err != nil {
		t.Fatal(err)
	}
	items, err := s.ClaimOutbox(ctx, n.Add(time.Minute), time.Minute, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var mine *broker.OutboxItem
	for i := range items {
		if items[i].TaskID == k.ID {
			mine = &items[i]
		}
	}
	if mine == nil || !mine.AlarmedAt.IsZero() {
		t.Fatalf("claimed %+v", mine)
	}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.MarkAlarmed(ctx, mine.ID, n) }); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryOutbox(ctx, mine.ID, mine.Attempts, n, "later"); err != nil {
		t.Fatal(err)
	}
	items, err = s.ClaimOutbox(ctx, n.Add(2*time.Minute), time.Minute, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, it := range items {
		if it.ID == mine.ID {
			found = true
			if !it.AlarmedAt.Equal(n) {
				t.Errorf("alarmed at %v, want %v", it.AlarmedAt, n)
			}
		}
	}
	if !found {
		t.Error("the retried item was not claimed again")
	}
}

// InTx runs each function exactly once, however many run at once and
// whether it commits or fails: the broker may count, sign or decide in
// one without guarding against a second run.
func testInTxRunsOnce(t *testing.T, s Store) {
	k := approvedTask(t, s, nil)
	const n = 16
	var (
		mu   sync.Mutex
		runs = map[int]int{}
		wg   sync.WaitGroup
	)
	boom := errors.New("boom")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.InTx(ctx, func(tx broker.Tx) error {
				mu.Lock()
				runs[i]++
				mu.Unlock()
				if _, err := tx.LockTask(ctx, k.ID); err != nil {
					return err
				}
				if i%4 == 0 {
					return boom
				}
				return tx.AppendAudit(ctx, broker.AuditEvent{Time: now(), Type: broker.EventTaskCreated,
					Actor: broker.Actor{Kind: "agent"}, TaskID: k.ID, Detail: []byte(`{}`)})
			})
			if (i%4 == 0) != errors.Is(err, boom) || (i%4 != 0 && err != nil) {
				t.Errorf("call %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if runs[i] != 1 {
			t.Errorf("function %d ran %d times", i, runs[i])
		}
	}
	evs, err := s.AuditEvents(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 100})
	if err != nil || len(evs) != n-n/4 {
		t.Fatalf("%d events, want %d (%v)", len(evs), n-n/4, err)
	}
}
