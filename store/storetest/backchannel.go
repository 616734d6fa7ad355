package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// testBackchannel: a backchannel request round-trips, is found only by
// its digest, keeps its polling state and redemption, and one task has at
// most one.
func testBackchannel(t *testing.T, s Store) {
	k := newTask("bot", "alice")
	insert(t, s, &k)
	n := now()
	r := broker.BackchannelRequest{
		IDHash: broker.HashID(id("ar_")), TaskID: k.ID, Agent: k.Agent, BindingMessage: "W4SCT",
		Interval: 5 * time.Second, CreatedAt: n, ExpiresAt: n.Add(time.Hour),
	}
	in := func(fn func(broker.BackchannelTx) error) error {
		return s.InTx(ctx, func(tx broker.Tx) error {
			return fn(tx)
		})
	}
	if err := in(func(b broker.BackchannelTx) error { return b.InsertBackchannel(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	var got broker.BackchannelRequest
	if err := in(func(b broker.BackchannelTx) (err error) { got, err = b.LockBackchannel(ctx, r.IDHash); return }); err != nil {
		t.Fatal(err)
	}
	if got != r {
		t.Fatalf("read back %+v, want %+v", got, r)
	}
	r.Interval, r.LastPollAt = 10*time.Second, n.Add(time.Second)
	if err := in(func(b broker.BackchannelTx) error { return b.UpdateBackchannel(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	r.RedeemedAt = n.Add(2 * time.Second)
	if err := in(func(b broker.BackchannelTx) error { return b.UpdateBackchannel(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	if err := in(func(b broker.BackchannelTx) (err error) { got, err = b.LockBackchannel(ctx, r.IDHash); return }); err != nil {
		t.Fatal(err)
	}
	if got != r {
		t.Fatalf("after updates read back %+v, want %+v", got, r)
	}
	err := in(func(b broker.BackchannelTx) error {
		_, err := b.LockBackchannel(ctx, broker.HashID("nope"))
		return err
	})
	if !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("unknown request: %v, want ErrNotFound", err)
	}
	err = in(func(b broker.BackchannelTx) error {
		return b.UpdateBackchannel(ctx, broker.BackchannelRequest{IDHash: broker.HashID("nope"), Interval: time.Second})
	})
	if !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("update of an unknown request: %v, want ErrNotFound", err)
	}
	second := r
	second.IDHash = broker.HashID(id("ar_"))
	if err := in(func(b broker.BackchannelTx) error { return b.InsertBackchannel(ctx, second) }); err == nil {
		t.Fatal("a second backchannel request for one task was stored")
	}
}
