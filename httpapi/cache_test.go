package httpapi

import (
	"context"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/store/postgres"
)

// TestCachedIntrospectionIsExactAcrossReplicas: replica B answers an active
// token from memory; the moment a close (or a revocation, or a
// suspension) on replica A returns, B answers inactive — every time.
func TestCachedIntrospectionIsExactAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	a, _ := e.replicaWith(true)
	b, bc := e.replicaWith(true)
	rs := e.resource("gateway")
	for i := 0; i < 20; i++ {
		id := a.approved("agent-1", "alice", "github.repo.read:acme/**")
		tok := a.mustStatus(a.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
		before := bc.Hits()
		for j := 0; j < 3; j++ {
			if r := b.introspect(rs, tok); r.JSON["active"] != true {
				t.Fatalf("round %d: active token: %s", i, r.Raw)
			}
		}
		if bc.Hits() < before+2 {
			t.Fatalf("round %d: B did not answer from memory (%d hits)", i, bc.Hits()-before)
		}
		switch i % 3 {
		case 0:
			a.mustStatus(a.do("POST", "/v1/tasks/"+id+"/close", a.agent("agent-1"), nil), 200)
		case 1:
			a.mustStatus(a.revokeToken(a.agent("agent-1"), tok), 200)
		case 2:
			a.mustStatus(a.do("POST", "/v1/agents/suspend", a.user("root", "admins"),
				map[string]any{"agent": e.agents.URL + "#agent-1", "reason": "test"}), 200)
			a.mustStatus(a.do("POST", "/v1/agents/unsuspend", a.user("root", "admins"),
				map[string]any{"agent": e.agents.URL + "#agent-1"}), 200)
		}
		if r := b.introspect(rs, tok); r.JSON["active"] != false {
			t.Fatalf("round %d: B answered %s right after the revocation returned on A", i, r.Raw)
		}
	}
}

// A replica that cannot beat stops answering from memory before the others
// stop waiting for it.
func TestCacheStopsAnsweringWhenItCannotBeat(t *testing.T) {
	e := newEnv(t)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: testpg.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := &revocation.StatusCache{Store: st, Replica: "lonely", Alive: 400 * time.Millisecond, Beat: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !cacheUsable(c) {
		if time.Now().After(deadline) {
			t.Fatal("never usable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.Close() // the database is gone for this replica: beats fail
	time.Sleep(250 * time.Millisecond)
	if cacheUsable(c) {
		t.Fatal("a replica that cannot beat still answers from memory after Alive/2")
	}
	cancel()
	<-done
	_ = e
}

// A database read that started before a revocation was applied is not
// kept.
func TestCacheKeepsNothingReadBeforeARevocation(t *testing.T) {
	e := newEnv(t)
	_, c := e.replicaWith(true)
	far := time.Now().Add(time.Hour)
	gen := c.Generation()
	_ = c.Revoked(context.Background(), 0, []string{"other"}) // a revocation is applied meanwhile
	c.Keep(gen, broker.Credential{ID: "stale", ExpiresAt: far}, broker.Task{ExpiresAt: far})
	if _, _, _, ok := c.Lookup("stale"); ok {
		t.Fatal("a read from before a revocation was kept")
	}
}
