// Package storetest is the conformance suite every broker.Store must pass,
// run against real databases by each store's own tests.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// Store is what the suite exercises: the storage port, every method of
// which the suite calls (a store missing one does not build), and the
// test-only Hooks.
type Store interface {
	broker.Store
	broker.KeyStore
	Hooks
}

// Hooks are what the suite needs of a store besides the port, to attack it
// from behind the broker's back. Each store implements them in its own
// test files, never in production code.
type Hooks interface {
	// Unrevoke tries to clear a credential's revocation with a direct
	// write; the store must refuse it.
	Unrevoke(ctx context.Context, jti string) error
}

// Run runs the suite; open returns the store under test (shared between
// subtests: every subtest uses its own identifiers).
func Run(t *testing.T, open func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, Store)
	}{
		{"TaskRoundTrip", testTaskRoundTrip},
		{"VaultIntentsResolveOnce", testVaultIntents},
		{"NotFound", testNotFound},
		{"RollbackLeavesNothing", testRollback},
		{"LockTaskSerialisesWriters", testLockSerialises},
		{"CredentialsRevokedOnce", testRevoke},
		{"IdempotencyKeyLookup", testIdempotencyKey},
		{"DueTasksFeedAndSuspension", testRevocationTx},
		{"OutboxLeaseRetryComplete", testOutbox},
		{"InvariantBackstops", testBackstops},
		{"AuditChainIsContiguousUnderConcurrency", testAuditChain},
		{"ListTasksKeysetAndEffectiveStatus", testListTasks},
		{"HistoryFilters", testHistoryFilters},
		{"OneCurrentSigningKey", testSigningKeys},
		{"StepUpsBudgetsAndGroups", testStepUps},
		{"KeyChangesMoveForward", testKeyChanges},
		{"H08PendingCapIsExactUnderConcurrency", testPendingCapExact},
		{"R10CreateRacingSuspensionLeavesNothingPending", testCreateRacingSuspension},
		{"ReplayCacheFreshOncePerKindUntilExpiry", testReplayCache},
		{"BackchannelRequestsKeepPollingState", testBackchannel},
		{"X05DPoPBindingKept", testDPoPBindingKept},
		{"W03WebhookDeliveriesLeaseRetryComplete", testDeliveries},
		{"InsertCredentialIfVersionRechecksTheTask", testInsertCredentialIfVersion},
		{"UpdateTaskBumpsTheVersion", testUpdateTaskBumpsVersion},
		{"VersionBumpsOnEveryChange", testVersionBumpsOnEveryChange},
		{"PortRoundTrips", testPortRoundTrips},
		{"InTxRunsEachFunctionOnce", testInTxRunsOnce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var ctx = context.Background()

func id(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func newTask(agent, user string) broker.Task {
	n := now()
	return broker.Task{
		ID: id("tsk_"), Version: 1, Status: broker.StatusPending,
		Agent: broker.Ref{Issuer: "https://agents.example", Subject: agent},
		User:  broker.Ref{Issuer: "https://users.example", Subject: user},
		Goal:  "read the repo", Scopes: broker.Scopes{broker.MustParseScope("github.repo.read:acme/**")},
		Audiences: []string{"https://api.github.com"}, Risk: broker.RiskLow,
		CreatedAt: n, ExpiresAt: n.Add(time.Hour),
	}
}

func insert(t *testing.T, s Store, k *broker.Task) {
	t.Helper()
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertTask(ctx, k) }); err != nil {
		t.Fatalf("InsertTask: %v", err)
	}
}

func testTaskRoundTrip(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	k.Tool, k.Dataset, k.TTLCapped = "gh-cli", "repos", true
	insert(t, s, &k)
	if k.Seq == 0 {
		t.Fatal("InsertTask did not assign Seq")
	}
	got, err := s.Task(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(k) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, k)
	}
	k.Status, k.Version, k.ApprovedAt = broker.StatusApproved, 2, now()
	k.ApprovedScopes = broker.Scopes{broker.MustParseScope("github.repo.read:acme/api")}
	k.ApprovedAudiences = k.Audiences
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, k) }); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.Task(ctx, k.ID); fmt.Sprint(got) != fmt.Sprint(k) {
		t.Fatalf("after update:\n got %+v\nwant %+v", got, k)
	}
}

func testNotFound(t *testing.T, s Store) {
	if _, err := s.Task(ctx, "tsk_nope"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Task: %v, want ErrNotFound", err)
	}
	if _, err := s.Credential(ctx, "nope"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Credential: %v, want ErrNotFound", err)
	}
	err := s.InTx(ctx, func(tx broker.Tx) error {
		_, err := tx.LockTask(ctx, "tsk_nope")
		return err
	})
	if !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("LockTask: %v, want ErrNotFound", err)
	}
	// A credential of no task is refused, and nothing is stored.
	orphan := broker.Credential{ID: id("jti-"), TaskID: "tsk_nope", Kind: broker.KindJWT, Agent: broker.Ref{Issuer: "a", Subject: "b"},
		User: broker.Ref{Issuer: "c", Subject: "d"}, Scopes: broker.Scopes{broker.MustParseScope("github.repo.read")},
		Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute)}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &orphan) }); err == nil {
		t.Error("a credential of no task was stored")
	}
	if _, err := s.Credential(ctx, orphan.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Credential after the refused insert: %v, want ErrNotFound", err)
	}
}

func testRollback(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	boom := errors.New("boom")
	err := s.InTx(ctx, func(tx broker.Tx) error {
		if err := tx.InsertTask(ctx, &k); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, broker.AuditEvent{Time: now(), Type: broker.EventTaskCreated,
			Actor: broker.Actor{Kind: "agent"}, TaskID: k.ID}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx returned %v, want the closure's error", err)
	}
	if _, err := s.Task(ctx, k.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("rolled-back task is visible: %v", err)
	}
	evs, err := s.AuditEvents(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 10})
	if err != nil || len(evs) != 0 {
		t.Fatalf("rolled-back audit event is visible: %v %v", evs, err)
	}
}

// testLockSerialises proves that a second LockTask waits for the first
// transaction to end and then sees its write.
func testLockSerialises(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	locked := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.InTx(ctx, func(tx broker.Tx) error {
			t1, err := tx.LockTask(ctx, k.ID)
			if err != nil {
				return err
			}
			close(locked)
			<-release
			t1.Status, t1.Version, t1.ClosedAt = broker.StatusDenied, 2, now()
			return tx.UpdateTask(ctx, t1)
		})
	}()
	<-locked
	seen := make(chan broker.Status, 1)
	go func() {
		_ = s.InTx(ctx, func(tx broker.Tx) error {
			t2, err := tx.LockTask(ctx, k.ID)
			seen <- t2.Status
			return err
		})
	}()
	select {
	case st := <-seen:
		t.Fatalf("second LockTask did not wait for the first transaction (saw %s)", st)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	select {
	case st := <-seen:
		if st != broker.StatusDenied {
			t.Fatalf("second LockTask saw %s, want the first transaction's write", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second LockTask never returned")
	}
}

func testRevoke(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	for i := 0; i < 3; i++ {
		c := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
			Scopes: k.Scopes, Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute)}
		if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &c) }); err != nil {
			t.Fatal(err)
		}
		got, err := s.Credential(ctx, c.ID)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c) {
			t.Fatalf("credential round trip: %+v %v, want %+v", got, err, c)
		}
	}
	at := now()
	var first, second []broker.Credential
	err := s.InTx(ctx, func(tx broker.Tx) error {
		var err error
		first, err = tx.RevokeCredentials(ctx, k.ID, at)
		return err
	})
	if err != nil || len(first) != 3 {
		t.Fatalf("first revoke: %d, %v", len(first), err)
	}
	for _, c := range first {
		if !c.RevokedAt.Equal(at) {
			t.Fatalf("revoked_at = %v, want %v", c.RevokedAt, at)
		}
	}
	err = s.InTx(ctx, func(tx broker.Tx) error {
		var err error
		second, err = tx.RevokeCredentials(ctx, k.ID, now())
		return err
	})
	if err != nil || len(second) != 0 {
		t.Fatalf("second revoke: %d, %v", len(second), err)
	}
}

// testAuditChain appends from many goroutines and checks that seq is
// contiguous and every hash links to the previous one.
func testAuditChain(t *testing.T, s Store) {
	task := id("tsk_")
	const writers, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := s.InTx(ctx, func(tx broker.Tx) error {
					return tx.AppendAudit(ctx,
						broker.AuditEvent{Time: now(), Type: broker.EventRequestRefused, Actor: broker.Actor{Kind: "agent", Issuer: "i", Subject: fmt.Sprint(w)}, TaskID: task, Detail: []byte(`{"code":"x","n":1}`)},
						broker.AuditEvent{Time: now(), Type: broker.EventTaskCreated, Actor: broker.Actor{Kind: "anonymous"}, TaskID: task})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := s.AuditEvents(ctx, broker.HistoryFilter{Limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	prev := broker.GenesisHash
	mine := 0
	for i, e := range all {
		if e.Seq != int64(i+1) {
			t.Fatalf("seq %d at position %d: the chain has a gap", e.Seq, i)
		}
		if want := broker.ChainHash(prev, e); e.Hash != want {
			t.Fatalf("seq %d: hash %s, want %s", e.Seq, e.Hash, want)
		}
		prev = e.Hash
		if e.TaskID == task {
			mine++
		}
	}
	if mine != writers*each*2 {
		t.Fatalf("found %d events of this test, want %d", mine, writers*each*2)
	}
}

func testListTasks(t *testing.T, s Store) {
	user := broker.Ref{Issuer: "https://users.example", Subject: id("user-")}
	var ids []string
	for i := 0; i < 5; i++ {
		k := newTask(id("agent-"), user.Subject)
		if i == 4 {
			k.ExpiresAt = now().Add(-time.Second) // pending past its window: effectively denied
		}
		insert(t, s, &k)
		ids = append(ids, k.ID)
	}
	n := now()
	page1, err := s.ListTasks(ctx, broker.TaskFilter{User: &user, Status: broker.StatusPending, Now: n, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page1) != 3 || page1[0].ID != ids[0] || page1[1].ID != ids[1] {
		t.Fatalf("page 1 = %d tasks, want limit+1 = 3 in insertion order", len(page1))
	}
	page2, err := s.ListTasks(ctx, broker.TaskFilter{User: &user, Status: broker.StatusPending, Now: n, AfterSeq: page1[1].Seq, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page2) != 2 || page2[0].ID != ids[2] || page2[1].ID != ids[3] {
		t.Fatalf("page 2 = %v", page2)
	}
	denied, err := s.ListTasks(ctx, broker.TaskFilter{User: &user, Status: broker.StatusDenied, Now: n, Limit: 10})
	if err != nil || len(denied) != 1 || denied[0].ID != ids[4] {
		t.Fatalf("effectively denied = %v, %v", denied, err)
	}
	other := broker.Ref{Issuer: "https://other.example", Subject: user.Subject}
	if none, err := s.ListTasks(ctx, broker.TaskFilter{User: &other, Now: n, Limit: 10}); err != nil || len(none) != 0 {
		t.Fatalf("same sub at another issuer sees %d tasks, %v", len(none), err)
	}
}

func testHistoryFilters(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	t0 := now()
	agent := broker.Actor{Kind: "agent", Issuer: k.Agent.Issuer, Subject: k.Agent.Subject}
	err := s.InTx(ctx, func(tx broker.Tx) error {
		return tx.AppendAudit(ctx,
			broker.AuditEvent{Time: t0, Type: broker.EventTaskCreated, Actor: agent, TaskID: k.ID},
			broker.AuditEvent{Time: t0.Add(time.Second), Type: broker.EventRequestRefused, Actor: agent, TaskID: k.ID, Detail: []byte(`{"code":"blocked_action"}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	c := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.Scopes, Audience: "https://api.github.com", IssuedAt: t0, ExpiresAt: t0.Add(time.Minute)}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &c) }); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		f    broker.HistoryFilter
		want int
	}{
		{"task", broker.HistoryFilter{TaskID: k.ID}, 2},
		{"type", broker.HistoryFilter{TaskID: k.ID, Type: broker.EventRequestRefused}, 1},
		{"actor iss#sub", broker.HistoryFilter{Actor: k.Agent.String()}, 2},
		{"actor bare sub", broker.HistoryFilter{Actor: k.Agent.Subject}, 2},
		{"actor at another issuer", broker.HistoryFilter{Actor: "https://evil.example#" + k.Agent.Subject}, 0},
		{"since", broker.HistoryFilter{TaskID: k.ID, Since: t0.Add(time.Second)}, 1},
		{"until", broker.HistoryFilter{TaskID: k.ID, Until: t0.Add(time.Second)}, 1},
		{"injection is a literal", broker.HistoryFilter{TaskID: "' OR 1=1--"}, 0},
	}
	for _, tc := range cases {
		tc.f.Limit = 100
		evs, err := s.AuditEvents(ctx, tc.f)
		if err != nil || len(evs) != tc.want {
			t.Errorf("%s: %d events, %v; want %d", tc.name, len(evs), err, tc.want)
		}
	}
	for _, f := range []broker.HistoryFilter{{TaskID: k.ID}, {Actor: k.User.String()}, {Actor: k.Agent.Subject, Type: "jwt"}} {
		f.Limit = 10
		cs, err := s.Credentials(ctx, f)
		if err != nil || len(cs) != 1 || cs[0].ID != c.ID {
			t.Errorf("Credentials(%+v) = %v, %v", f, cs, err)
		}
	}
}

func testSigningKeys(t *testing.T, s Store) {
	existing, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k := broker.SigningKey{KID: id("kid-"), Alg: "EdDSA", Private: []byte("sealed"), PublicJWK: []byte(`{"kty":"OKP"}`), CreatedAt: now()}
	ok, err := s.InsertCurrentKey(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	hasCurrent := false
	for _, e := range existing {
		hasCurrent = hasCurrent || e.State == "current"
	}
	if ok == hasCurrent {
		t.Fatalf("InsertCurrentKey = %v with an existing current key = %v", ok, hasCurrent)
	}
	k2 := k
	k2.KID = id("kid-")
	if ok, err := s.InsertCurrentKey(ctx, k2); err != nil || ok {
		t.Fatalf("second current key accepted: %v %v", ok, err)
	}
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	current := 0
	for _, x := range keys {
		if x.State == "current" {
			current++
		}
	}
	if current != 1 {
		t.Fatalf("%d current keys, want 1", current)
	}
}

func testIdempotencyKey(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	c := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.Scopes, Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute),
		IdempotencyKey: "retry-1", RequestHash: "h1"}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &c) }); err != nil {
		t.Fatal(err)
	}
	var got broker.Credential
	err := s.InTx(ctx, func(tx broker.Tx) error {
		var err error
		got, err = tx.CredentialByIdempotencyKey(ctx, k.ID, "retry-1")
		return err
	})
	if err != nil || got.ID != c.ID || got.RequestHash != "h1" {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	err = s.InTx(ctx, func(tx broker.Tx) error {
		_, err := tx.CredentialByIdempotencyKey(ctx, k.ID, "retry-2")
		return err
	})
	if !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	dup := c
	dup.ID = id("jti-")
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &dup) }); err == nil {
		t.Fatal("a second credential with the same task and Idempotency-Key was stored")
	}
	plain := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.Scopes, Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute)}
	plain2 := plain
	plain2.ID = id("jti-")
	for _, p := range []*broker.Credential{&plain, &plain2} {
		if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, p) }); err != nil {
			t.Fatalf("credentials without a key must not collide: %v", err)
		}
	}
}

func testRevocationTx(t *testing.T, s Store) {
	agent := id("agent-")
	due := newTask(agent, id("user-"))
	due.Status, due.ExpiresAt = broker.StatusApproved, now().Add(-time.Second)
	insert(t, s, &due)
	live := newTask(agent, id("user-"))
	insert(t, s, &live)
	err := s.InTx(ctx, func(tx broker.Tx) error {
		got, err := tx.LockDue(ctx, now(), 1000)
		if err != nil {
			return err
		}
		found := false
		for _, k := range got {
			found = found || k.ID == due.ID
			if k.ID == live.ID {
				t.Errorf("a live task was returned as due")
			}
		}
		if !found {
			t.Errorf("the due task was not returned")
		}
		open, err := tx.LockOpenTasks(ctx, due.Agent)
		if err != nil {
			return err
		}
		if len(open) != 2 {
			t.Errorf("%d open tasks of the agent, want 2", len(open))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := broker.Credential{ID: id("jti-"), TaskID: due.ID, Kind: broker.KindJWT, Agent: due.Agent, User: due.User,
		Scopes: due.Scopes, Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute)}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &c) }); err != nil {
		t.Fatal(err)
	}
	var feedFrom int64
	if revs, err := s.Revocations(ctx, 0, 1<<30); err == nil && len(revs) > 0 {
		feedFrom = revs[len(revs)-1].Seq
	}
	err = s.InTx(ctx, func(tx broker.Tx) error {
		got, err := tx.RevokeCredential(ctx, c.ID, now())
		if err != nil || got.ID != c.ID || got.RevokedAt.IsZero() {
			t.Errorf("RevokeCredential: %+v %v", got, err)
		}
		if _, err := tx.RevokeCredential(ctx, c.ID, now()); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("second RevokeCredential: %v", err)
		}
		evs := []broker.AuditEvent{{Time: now(), Type: broker.EventCredentialRevoked, Actor: broker.SystemActor, TaskID: due.ID}}
		if err := tx.AppendAudit(ctx, evs...); err != nil {
			return err
		}
		return tx.InsertRevocations(ctx, []broker.Revocation{{Seq: evs[0].Seq, JTI: c.ID, TaskID: due.ID, RevokedAt: now(), Reason: "test"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	revs, err := s.Revocations(ctx, feedFrom, 10)
	if err != nil || len(revs) != 1 || revs[0].JTI != c.ID || revs[0].Reason != "test" {
		t.Fatalf("feed: %+v %v", revs, err)
	}
	a := broker.Ref{Issuer: "https://agents.example", Subject: id("rogue-")}
	err = s.InTx(ctx, func(tx broker.Tx) error { return tx.SetSuspended(ctx, a, "r", "admin", now()) })
	if ok, err2 := s.Suspended(ctx, a); err != nil || err2 != nil || !ok {
		t.Fatalf("suspend: %v %v %v", ok, err, err2)
	}
	var cleared bool
	err = s.InTx(ctx, func(tx broker.Tx) error {
		var err error
		cleared, err = tx.ClearSuspended(ctx, a)
		return err
	})
	if ok, _ := s.Suspended(ctx, a); err != nil || !cleared || ok {
		t.Fatalf("unsuspend: %v %v %v", cleared, ok, err)
	}
}

func testOutbox(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	k.Status, k.Revoking = broker.StatusClosed, true
	insert(t, s, &k)
	t0 := now()
	items := []broker.OutboxItem{{TaskID: k.ID, Kind: "vault", Ref: id("lease-"), CreatedAt: t0, NextAttemptAt: t0},
		{TaskID: k.ID, Kind: "vault", Ref: id("lease-"), CreatedAt: t0, NextAttemptAt: t0}}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.Enqueue(ctx, items) }); err != nil {
		t.Fatal(err)
	}
	mine := func(its []broker.OutboxItem) []broker.OutboxItem {
		var out []broker.OutboxItem
		for _, it := range its {
			if it.TaskID == k.ID {
				out = append(out, it)
			}
		}
		return out
	}
	got, err := s.ClaimOutbox(ctx, t0, time.Minute, 1000)
	got = mine(got)
	if err != nil || len(got) != 2 || got[0].Attempts != 1 {
		t.Fatalf("claim: %+v %v", got, err)
	}
	if again, _ := s.ClaimOutbox(ctx, t0.Add(30*time.Second), time.Minute, 1000); len(mine(again)) != 0 {
		t.Fatal("leased items were claimed again")
	}
	if err := s.RetryOutbox(ctx, got[0].ID, got[0].Attempts, t0.Add(2*time.Minute), "boom"); err != nil {
		t.Fatal(err)
	}
	// A worker from an older claim (fewer attempts) changes nothing.
	if err := s.RetryOutbox(ctx, got[0].ID, got[0].Attempts-1, t0.Add(time.Hour), "stale"); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteOutbox(ctx, got[1].ID, t0); err != nil {
		t.Fatal(err)
	}
	if tk, _ := s.Task(ctx, k.ID); !tk.Revoking {
		t.Fatal("task stopped revoking with an item outstanding")
	}
	retry, _ := s.ClaimOutbox(ctx, t0.Add(3*time.Minute), time.Minute, 1000)
	retry = mine(retry)
	if len(retry) != 1 || retry[0].ID != got[0].ID || retry[0].Attempts != 2 || retry[0].LastError != "boom" {
		t.Fatalf("retry claim: %+v", retry)
	}
	if err := s.CompleteOutbox(ctx, retry[0].ID, t0); err != nil {
		t.Fatal(err)
	}
	if tk, _ := s.Task(ctx, k.ID); tk.Revoking {
		t.Fatal("task still revoking after every item completed")
	}
}

// testBackstops: whoever writes, the database refuses to widen an approved
// task, to move a task out of a terminal state, or to un-revoke a
// credential.
func testBackstops(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	k.Status, k.Version, k.ApprovedAt, k.ApprovedScopes, k.ApprovedAudiences = broker.StatusApproved, 2, now(), k.Scopes, k.Audiences
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, k) }); err != nil {
		t.Fatal(err)
	}
	c := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.Scopes, Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute)}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &c) }); err != nil {
		t.Fatal(err)
	}
	refused := func(name string, fn func(tx broker.Tx) error) {
		t.Helper()
		if err := s.InTx(ctx, fn); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	wider := k
	wider.ExpiresAt = k.ExpiresAt.Add(time.Hour)
	refused("growing an approved task's expiry", func(tx broker.Tx) error { return tx.UpdateTask(ctx, wider) })
	widerScopes := k
	widerScopes.ApprovedScopes = broker.Scopes{broker.MustParseScope("github.repo.read")}
	refused("changing an approved task's scopes", func(tx broker.Tx) error { return tx.UpdateTask(ctx, widerScopes) })
	closed := k
	closed.Status, closed.Version, closed.ClosedAt = broker.StatusClosed, 3, now()
	if err := s.InTx(ctx, func(tx broker.Tx) error {
		if err := tx.UpdateTask(ctx, closed); err != nil {
			return err
		}
		_, err := tx.RevokeCredentials(ctx, k.ID, now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	reopened := closed
	reopened.Status = broker.StatusApproved
	refused("reopening a closed task", func(tx broker.Tx) error { return tx.UpdateTask(ctx, reopened) })
	// Outside any transaction: a second connection would wait on ours.
	if err := s.Unrevoke(ctx, c.ID); err == nil {
		t.Error("un-revoking a credential was accepted")
	}
	// The legitimate transition still works: the outbox clears revoking.
	closed.Revoking, closed.Version = true, closed.Version+1
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, closed) }); err != nil {
		t.Fatalf("a terminal task could not record its backend revocation state: %v", err)
	}
}

func testStepUps(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	k.Budget = broker.Budget{MaxCredentials: 3, MaxResources: 2}
	insert(t, s, &k)
	k.Status, k.Version, k.ApprovedAt, k.ApprovedScopes, k.ApprovedAudiences = broker.StatusApproved, 2, now(), k.Scopes, k.Audiences
	k.UserGroups = []string{"eng", "payments"}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, k) }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Task(ctx, k.ID)
	if err != nil || got.Budget != k.Budget || fmt.Sprint(got.UserGroups) != "[eng payments]" {
		t.Fatalf("task %+v %v: budget or groups not kept", got, err)
	}
	stx := func(fn func(broker.Tx, broker.StepUpTx) error) error {
		return s.InTx(ctx, func(tx broker.Tx) error { return fn(tx, tx) })
	}
	u := broker.StepUp{ID: id("apr_"), TaskID: k.ID, Agent: k.Agent, User: k.User, Scopes: k.Scopes,
		Audience: "https://api.github.com", Tool: "gh", RequestHash: "h1", Policies: []string{"p1"},
		Reasons: []string{"why"}, Status: broker.StepUpPending, CreatedAt: now(), ExpiresAt: now().Add(time.Minute)}
	if err := stx(func(_ broker.Tx, st broker.StepUpTx) error { return st.InsertStepUp(ctx, &u) }); err != nil {
		t.Fatal(err)
	}
	var open broker.StepUp
	var pending int
	if err := stx(func(_ broker.Tx, st broker.StepUpTx) error {
		var err error
		if open, err = st.OpenStepUp(ctx, k.ID, "h1", now()); err != nil {
			return err
		}
		if _, err := st.OpenStepUp(ctx, k.ID, "h2", now()); !errors.Is(err, broker.ErrNotFound) {
			return fmt.Errorf("another request's step-up: %v", err)
		}
		if _, err := st.OpenStepUp(ctx, k.ID, "h1", now().Add(2*time.Minute)); !errors.Is(err, broker.ErrNotFound) {
			return fmt.Errorf("an expired step-up is open: %v", err)
		}
		pending, err = st.PendingStepUps(ctx, k.ID, now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if open.ID != u.ID || open.Tool != "gh" || fmt.Sprint(open.Policies, open.Reasons) != "[p1] [why]" || pending != 1 {
		t.Fatalf("open step-up %+v, %d pending", open, pending)
	}
	r := k.User
	list, err := s.ListStepUps(ctx, broker.StepUpFilter{User: &r, Status: broker.StepUpPending, Now: now(), Limit: 10})
	if err != nil || len(list) != 1 || list[0].ID != u.ID {
		t.Fatalf("pending list %v %v", list, err)
	}
	refused := func(name string, fn func(broker.Tx, broker.StepUpTx) error) {
		t.Helper()
		if err := stx(fn); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	skip := u
	skip.Status, skip.UsedAt = broker.StepUpUsed, now()
	refused("using a step-up nobody approved", func(_ broker.Tx, st broker.StepUpTx) error { return st.UpdateStepUp(ctx, skip) })
	u.Status, u.DecidedAt = broker.StepUpApproved, now()
	if err := stx(func(_ broker.Tx, st broker.StepUpTx) error { return st.UpdateStepUp(ctx, u) }); err != nil {
		t.Fatal(err)
	}
	back := u
	back.Status = broker.StepUpPending
	refused("a step-up going back to pending", func(_ broker.Tx, st broker.StepUpTx) error { return st.UpdateStepUp(ctx, back) })
	u.Status, u.UsedAt = broker.StepUpUsed, now()
	if err := stx(func(_ broker.Tx, st broker.StepUpTx) error { return st.UpdateStepUp(ctx, u) }); err != nil {
		t.Fatal(err)
	}
	again := u
	again.Status = broker.StepUpApproved
	refused("a used step-up approved again", func(_ broker.Tx, st broker.StepUpTx) error { return st.UpdateStepUp(ctx, again) })

	c := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User, Scopes: k.Scopes,
		Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute), StepUpID: u.ID}
	v := broker.Credential{ID: id("vtok-"), TaskID: k.ID, Kind: broker.KindVaultToken, Agent: k.Agent, User: k.User, Scopes: k.Scopes,
		Audience: "vault", IssuedAt: now(), ExpiresAt: now().Add(time.Minute)}
	var minted []broker.Scopes
	if err := stx(func(tx broker.Tx, st broker.StepUpTx) error {
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		if err := tx.InsertCredential(ctx, &v); err != nil {
			return err
		}
		var err error
		minted, err = st.MintedScopes(ctx, k.ID, []broker.CredentialKind{"jwt", broker.KindVaultLease})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(minted) != 1 || minted[0].Strings()[0] != "github.repo.read:acme/**" {
		t.Fatalf("minted scopes %v: the Vault token must not count", minted)
	}
	if got, err := s.Credential(ctx, c.ID); err != nil || got.StepUpID != u.ID {
		t.Fatalf("credential step-up %q %v", got.StepUpID, err)
	}
	changed := k
	changed.Budget.MaxCredentials = 100
	// UpdateTask never writes a budget (and the database refuses a raw
	// UPDATE of one); either way the budget stays.
	_ = s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, changed) })
	if got, err := s.Task(ctx, k.ID); err != nil || got.Budget != k.Budget {
		t.Errorf("the budget changed to %+v (%v)", got.Budget, err)
	}
	regroup := k
	regroup.UserGroups = []string{"admins"}
	refused("changing an approved task's groups", func(tx broker.Tx, _ broker.StepUpTx) error { return tx.UpdateTask(ctx, regroup) })
}

// testKeyChanges: a rotation (next → current → previous, and a new next)
// applies in one transaction with its audit event, whatever order the
// states are listed in; states never move backwards.
func testKeyChanges(t *testing.T, s Store) {
	stateOf := func() map[string]string {
		t.Helper()
		keys, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, k := range keys {
			out[k.KID] = k.State
		}
		return out
	}
	mk := func(st string) broker.SigningKey {
		return broker.SigningKey{KID: id("kid-"), Alg: "EdDSA", Private: []byte("sealed"), PublicJWK: []byte(`{"kty":"OKP"}`), State: st}
	}
	// Whatever is there, bring it to exactly one current and one next.
	next := mk(broker.KeyNext)
	if _, err := s.ChangeKeys(ctx, func(keys []broker.SigningKey, _ time.Time) (broker.KeyChange, error) {
		c := broker.KeyChange{States: map[string]string{}}
		hasCurrent := false
		for _, k := range keys {
			switch k.State {
			case broker.KeyNext:
				c.States[k.KID] = broker.KeyRetired
			case broker.KeyCurrent:
				hasCurrent = true
			}
		}
		if !hasCurrent {
			c.Insert = append(c.Insert, mk(broker.KeyCurrent))
		}
		c.Insert = append(c.Insert, next)
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	var current string
	for kid, st := range stateOf() {
		if st == broker.KeyCurrent {
			current = kid
		}
	}
	seq0, _, err := s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newNext := mk(broker.KeyNext)
	var at time.Time
	if _, err := s.ChangeKeys(ctx, func(_ []broker.SigningKey, now time.Time) (broker.KeyChange, error) {
		at = now
		return broker.KeyChange{
			Insert: []broker.SigningKey{newNext},
			States: map[string]string{next.KID: broker.KeyCurrent, current: broker.KeyPrevious},
			Events: []broker.AuditEvent{{Time: now, Type: broker.EventKeysChanged, Actor: broker.SystemActor, Detail: []byte(`{"reason":"test"}`)}},
		}, nil
	}); err != nil {
		t.Fatal(err)
	}
	st := stateOf()
	if st[next.KID] != broker.KeyCurrent || st[current] != broker.KeyPrevious || st[newNext.KID] != broker.KeyNext {
		t.Fatalf("after the rotation: %v", st)
	}
	keys, _ := s.SigningKeys(ctx)
	for _, k := range keys {
		if k.KID == next.KID && !k.ActivatedAt.Equal(at) || k.KID == current && !k.DeactivatedAt.Equal(at) {
			t.Fatalf("key %s: activated %v, deactivated %v, want %v", k.KID, k.ActivatedAt, k.DeactivatedAt, at)
		}
	}
	if seq, _, _ := s.AuditHead(ctx); seq != seq0+1 {
		t.Fatalf("the rotation wrote %d audit events, want 1", seq-seq0)
	}
	// Backwards, or a plan that fails, changes nothing.
	for name, plan := range map[string]broker.KeyChange{
		"previous back to current": {States: map[string]string{current: broker.KeyCurrent, next.KID: broker.KeyPrevious}},
		"two next keys":            {Insert: []broker.SigningKey{mk(broker.KeyNext)}},
	} {
		if _, err := s.ChangeKeys(ctx, func([]broker.SigningKey, time.Time) (broker.KeyChange, error) { return plan, nil }); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	if got := stateOf(); fmt.Sprint(got) != fmt.Sprint(st) {
		t.Fatalf("a refused change changed the keys: %v", got)
	}
}
