package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// testReplayCache: an identifier is fresh once per kind until it expires,
// of concurrent callers exactly one is fresh, and an expired one is fresh
// again (its row was swept or overwritten).
func testReplayCache(t *testing.T, s Store) {
	jti := id("jti_")
	later := now().Add(time.Hour)
	remember := func(kind, jti string, exp time.Time) bool {
		t.Helper()
		fresh, err := s.RememberJTI(ctx, kind, jti, exp)
		if err != nil {
			t.Fatal(err)
		}
		return fresh
	}
	if !remember(broker.ReplayClientAssertion, jti, later) {
		t.Fatal("a new jti is not fresh")
	}
	if remember(broker.ReplayClientAssertion, jti, later) {
		t.Fatal("a reused jti is fresh")
	}
	if !remember(broker.ReplayDPoP, jti, later) {
		t.Fatal("the same jti of another kind is not fresh")
	}
	if !remember(broker.ReplayClientAssertion, jti+"x", later) {
		t.Fatal("another jti is not fresh")
	}

	old := id("jti_")
	if !remember(broker.ReplayClientAssertion, old, now().Add(-time.Minute)) {
		t.Fatal("a new (already expired) jti is not fresh")
	}
	if !remember(broker.ReplayClientAssertion, old, later) {
		t.Fatal("an expired jti is still remembered")
	}
	if remember(broker.ReplayClientAssertion, old, later) {
		t.Fatal("a jti remembered again after expiry is fresh twice")
	}

	race := id("jti_")
	var fresh atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.RememberJTI(ctx, broker.ReplayDPoP, race, later)
			if err != nil {
				t.Error(err)
			}
			if ok {
				fresh.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := fresh.Load(); n != 1 {
		t.Fatalf("%d of 8 concurrent callers saw the same jti fresh, want exactly 1", n)
	}
}
