package revocation_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/store/postgres"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

// revoke commits n feed entries the way a close does: credential.revoked
// events, and feed rows keyed by their seqs. It returns the seqs.
func revoke(t *testing.T, st *postgres.Store, n int) []int64 {
	t.Helper()
	now := time.Now().UTC()
	evs := make([]broker.AuditEvent, n)
	for i := range evs {
		evs[i] = broker.AuditEvent{Time: now, Type: broker.EventCredentialRevoked, Actor: broker.SystemActor, TaskID: "tsk_feedtest"}
	}
	var seqs []int64
	err := st.InTx(context.Background(), func(tx broker.Tx) error {
		if err := tx.AppendAudit(context.Background(), evs...); err != nil {
			return err
		}
		revs := make([]broker.Revocation, n)
		for i, ev := range evs {
			revs[i] = broker.Revocation{Seq: ev.Seq, JTI: "jti-" + time.Now().Format("150405.000000000"), TaskID: "tsk_feedtest",
				RevokedAt: now, Reason: "closed"}
			seqs = append(seqs, ev.Seq)
		}
		return tx.InsertRevocations(context.Background(), revs)
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}

// waitReads waits until the reader has read the store more than n times
// and returns the count.
func waitReads(t *testing.T, f *revocation.Feed, n int64) int64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.Reads() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not read (%d reads)", f.Reads())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f.Reads()
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestR03FeedKeepsTheNewestWindow: the reader starts when a stream first
// asks, at the audit head, reads once per wake-up, keeps only the newest Window entries, moves its
// floor past what it dropped (a stream behind it must read the store) and
// closes Moved only when its head moves.
func TestR03FeedKeepsTheNewestWindow(t *testing.T) {
	st := testpg.Store(t)
	revoke(t, st, 2) // before the start: not the reader's
	hub := &revocation.Hub{Poll: time.Hour}
	f := &revocation.Feed{Store: st, Wake: hub, Window: 4}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	hub.Notify()
	time.Sleep(100 * time.Millisecond)
	if n := f.Reads(); n != 0 {
		t.Fatalf("a reader no stream asked read the feed %d times", n)
	}
	moved := f.Moved() // a stream asks: the reader starts
	reads := waitReads(t, f, 0)
	// The read is counted as it returns, the streams woken once the
	// reader has taken it: wait for the wake, not only the count.
	select {
	case <-moved:
	case <-time.After(5 * time.Second):
		t.Fatal("Moved not closed when the reader started")
	}
	start, ok := f.Floor()
	if !ok {
		t.Fatal("the reader has read but is not ready")
	}
	if _, next, ok := f.After(start, 10); !ok || next != start {
		t.Fatalf("After(start) = %d, %v; want the start, held", next, ok)
	}
	if _, _, ok := f.After(start-1, 10); ok {
		t.Fatal("an entry before the start was claimed held")
	}

	moved = f.Moved()
	hub.Notify() // nothing new
	reads = waitReads(t, f, reads)
	if closed(moved) {
		t.Fatal("Moved closed with nothing new")
	}

	seqs := revoke(t, st, 6)
	hub.Notify()
	select {
	case <-moved:
	case <-time.After(5 * time.Second):
		t.Fatal("Moved not closed when the head moved")
	}
	floor, _ := f.Floor()
	if floor != seqs[1] {
		t.Fatalf("floor %d, want %d: the oldest two of six dropped from a window of four", floor, seqs[1])
	}
	if _, _, ok := f.After(seqs[0], 10); ok {
		t.Fatal("a position behind the window was claimed held")
	}
	revs, next, ok := f.After(seqs[1], 10)
	if !ok || len(revs) != 4 || revs[0].Seq != seqs[2] || next != seqs[5] {
		t.Fatalf("After(floor): %d entries from %v, next %d, %v", len(revs), revs, next, ok)
	}
	revs, next, ok = f.After(seqs[2], 2)
	if !ok || len(revs) != 2 || revs[1].Seq != seqs[4] || next != seqs[4] {
		t.Fatalf("After with a limit: %v, next %d, %v", revs, next, ok)
	}
	if revs, next, ok := f.After(seqs[5], 10); !ok || len(revs) != 0 || next != seqs[5] {
		t.Fatalf("After(head): %v, next %d, %v", revs, next, ok)
	}
}
