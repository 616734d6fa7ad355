package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testpg"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/store/postgres"
)

// cachedReplica is another Errand on e's database that answers
// introspection from memory (revocation.StatusCache), woken by
// LISTEN/NOTIFY, as serve wires it.
func cachedReplica(e *env) (*env, *revocation.StatusCache) {
	e.t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: testpg.URL(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(st.Close)
	tokens, err := jwt.New(context.Background(), jwt.Config{Issuer: publicURL, Keys: st, Secret: []byte(secret)})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hub := &revocation.Hub{Listen: st.Listen, Poll: time.Second}
	var id [8]byte
	_, _ = rand.Read(id[:])
	cache := &revocation.StatusCache{Store: st, Replica: hex.EncodeToString(id[:]), Wake: hub}
	done := make(chan struct{}, 2)
	go func() { _ = hub.Run(ctx); done <- struct{}{} }()
	go func() { _ = cache.Run(ctx); done <- struct{}{} }()
	e.t.Cleanup(func() { cancel(); <-done; <-done })
	svc, err := broker.NewService(broker.Config{Store: st, Tokens: tokens, Catalog: testCatalog(e.t),
		UserIssuers: []string{e.users.URL}, MaxPendingPerAgent: 10000, Cache: cache})
	if err != nil {
		e.t.Fatal(err)
	}
	api, err := New(Config{Service: svc, Auth: e.verifier, PublicURL: publicURL, JWKS: tokens.JWKS,
		UserIssuers: []string{e.users.URL}, CursorKey: []byte("cursor-key-for-tests-0123456789"),
		Logger: logger(nil), RateLimits: RateLimits{PerPrincipal: rate.Inf, PerAddress: rate.Inf}, Notifier: hub})
	if err != nil {
		e.t.Fatal(err)
	}
	r := *e
	r.st, r.svc, r.tokens, r.api = st, svc, tokens, api
	r.srv = httptest.NewServer(api)
	e.t.Cleanup(r.srv.Close)
	// Ready once its first heartbeat is in.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, _, ok := cache.Lookup("warm-up"); ok || healthy(cache) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatal("the cache never became usable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &r, cache
}

// healthy probes whether the cache answers from memory: a kept entry is
// served back.
func healthy(c *revocation.StatusCache) bool {
	far := time.Now().Add(time.Hour)
	c.Keep(c.Generation(), broker.Credential{JTI: "probe", ExpiresAt: far}, broker.Task{ExpiresAt: far})
	_, _, _, ok := c.Lookup("probe")
	return ok
}

// TestCachedIntrospectionIsExactAcrossReplicas: replica B answers an active
// token from memory; the moment a close (or a revocation, or a
// suspension) on replica A returns, B answers inactive — every time.
func TestCachedIntrospectionIsExactAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	a, _ := cachedReplica(e)
	b, bc := cachedReplica(e)
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
	for !healthy(c) {
		if time.Now().After(deadline) {
			t.Fatal("never usable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.Close() // the database is gone for this replica: beats fail
	time.Sleep(250 * time.Millisecond)
	if healthy(c) {
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
	_, c := cachedReplica(e)
	far := time.Now().Add(time.Hour)
	gen := c.Generation()
	_ = c.Revoked(context.Background(), 0, []string{"other"}) // a revocation is applied meanwhile
	c.Keep(gen, broker.Credential{JTI: "stale", ExpiresAt: far}, broker.Task{ExpiresAt: far})
	if _, _, _, ok := c.Lookup("stale"); ok {
		t.Fatal("a read from before a revocation was kept")
	}
}
