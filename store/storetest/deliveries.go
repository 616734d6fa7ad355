package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// testDeliveries: a notification queued in a transaction exists only if
// that transaction commits; a claim leases the webhook's due deliveries
// (another webhook's are not its), counts the attempt and hides them for
// the lease; a stale worker (an older attempt) cannot record over a newer
// claim; a retry is due again at its time, with the same id and body; a
// completed delivery is never claimed again; a delivery given up is given
// up once.
func testDeliveries(t *testing.T, s Store) {
	ds := s
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	hookA, hookB := id("wh_"), id("wh_")
	base := now().Add(-time.Hour)
	enqueue := func(msg string, hooks ...string) error {
		return s.InTx(ctx, func(tx broker.Tx) error {
			nt := tx
			var rows []broker.Delivery
			for _, h := range hooks {
				rows = append(rows, broker.Delivery{MsgID: msg, Webhook: h, Type: broker.EventTaskCreated, TaskID: k.ID,
					Notice: []byte(`{"type":"task.created"}`), CreatedAt: base, NextAttemptAt: base})
			}
			return nt.EnqueueDeliveries(ctx, rows)
		})
	}
	// A rolled-back change leaves no notification behind.
	boom := errors.New("boom")
	rolled := id("msg_")
	if err := s.InTx(ctx, func(tx broker.Tx) error {
		if err := tx.EnqueueDeliveries(ctx, []broker.Delivery{{MsgID: rolled, Webhook: hookA,
			Type: broker.EventTaskCreated, TaskID: k.ID, Notice: []byte(`{}`), CreatedAt: base, NextAttemptAt: base}}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("InTx = %v", err)
	}
	msg := id("msg_")
	if err := enqueue(msg, hookA, hookB); err != nil {
		t.Fatal(err)
	}
	at := now()
	got, err := ds.ClaimDeliveries(ctx, hookA, at, time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MsgID != msg || got[0].Webhook != hookA || got[0].Attempts != 1 ||
		got[0].TaskID != k.ID || got[0].Type != broker.EventTaskCreated || string(got[0].Notice) != `{"type":"task.created"}` ||
		!got[0].CreatedAt.Equal(base) {
		t.Fatalf("claimed %+v, want the one delivery of %s to %s (the rolled-back %s never)", got, msg, hookA, rolled)
	}
	first := got[0]
	// Leased: not claimed again before the lease ends, by this or another replica.
	if again, err := ds.ClaimDeliveries(ctx, hookA, at.Add(30*time.Second), time.Minute, 10); err != nil || len(again) != 0 {
		t.Fatalf("claimed during the lease: %v, %v", again, err)
	}
	// The lease ends without a word from the worker (it crashed): claimed
	// again, same id, attempts moved on.
	got, err = ds.ClaimDeliveries(ctx, hookA, at.Add(2*time.Minute), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].MsgID != msg || got[0].Attempts != 2 {
		t.Fatalf("after the lease: %+v, %v", got, err)
	}
	second := got[0]
	// The first worker wakes up late: it records nothing over the second.
	if err := ds.CompleteDelivery(ctx, first, at.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := ds.RetryDelivery(ctx, second, at.Add(10*time.Minute), "503 from the receiver"); err != nil {
		t.Fatal(err)
	}
	if got, err = ds.ClaimDeliveries(ctx, hookA, at.Add(9*time.Minute), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("claimed before its retry time (a stale complete must not end it either): %+v, %v", got, err)
	}
	got, err = ds.ClaimDeliveries(ctx, hookA, at.Add(10*time.Minute), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].Attempts != 3 || got[0].LastError != "503 from the receiver" ||
		string(got[0].Notice) != `{"type":"task.created"}` {
		t.Fatalf("the retry: %+v, %v", got, err)
	}
	if err := ds.CompleteDelivery(ctx, got[0], at.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, err = ds.ClaimDeliveries(ctx, hookA, at.Add(time.Hour), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("a delivered notification was claimed again: %+v, %v", got, err)
	}
	// The other webhook's delivery is its own; give it up, once.
	got, err = ds.ClaimDeliveries(ctx, hookB, at, time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].Webhook != hookB || got[0].MsgID != msg {
		t.Fatalf("webhook B: %+v, %v", got, err)
	}
	fail := func() bool {
		var failed bool
		if err := s.InTx(ctx, func(tx broker.Tx) error {
			var err error
			failed, err = tx.FailDelivery(ctx, got[0], at, "gave up")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return failed
	}
	if !fail() {
		t.Error("FailDelivery did not give up a pending delivery")
	}
	if fail() {
		t.Error("FailDelivery gave the same delivery up twice")
	}
	if got, err = ds.ClaimDeliveries(ctx, hookB, at.Add(time.Hour), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("a delivery given up was claimed again: %+v, %v", got, err)
	}
	// Pruning deletes finished deliveries only, and only older ones.
	pending := id("msg_")
	if err := enqueue(pending, hookA); err != nil {
		t.Fatal(err)
	}
	if n, err := ds.PruneDeliveries(ctx, at, 1000); err != nil || n != 0 {
		t.Fatalf("pruned %d (%v) before anything finished", n, err)
	}
	n, err := ds.PruneDeliveries(ctx, at.Add(11*time.Minute), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("pruned %d, want the delivered and the given-up one", n)
	}
	if got, err = ds.ClaimDeliveries(ctx, hookA, at.Add(time.Hour), time.Minute, 10); err != nil || len(got) != 1 || got[0].MsgID != pending {
		t.Fatalf("the pending delivery did not survive pruning: %+v, %v", got, err)
	}
}
