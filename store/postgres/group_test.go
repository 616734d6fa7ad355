package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/postgres"
)

// The group commit of InsertCredentialIfVersion is this store's own; the
// port's contract (the checks, both stores) is the conformance suite's.

// quickTask stores an approved task (version 2) whose id starts with
// prefix; the package's database outlives one run (-count).
func quickTask(t *testing.T, st *postgres.Store, prefix string, agent broker.Ref, expires time.Duration, change func(*broker.Task)) broker.Task {
	t.Helper()
	id := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	k := broker.Task{ID: id, Version: 2, Status: broker.StatusApproved,
		Agent: agent, User: broker.Ref{Issuer: "u", Subject: "alice"}, Goal: "g",
		Scopes: broker.Scopes{broker.MustParseScope("x.read")}, ApprovedScopes: broker.Scopes{broker.MustParseScope("x.read")},
		Audiences: []string{"aud"}, ApprovedAudiences: []string{"aud"}, Risk: broker.RiskLow,
		CreatedAt: now, ApprovedAt: now, ExpiresAt: now.Add(expires)}
	if change != nil {
		change(&k)
	}
	if err := st.InTx(ctx, func(tx broker.Tx) error { return tx.InsertTask(ctx, &k) }); err != nil {
		t.Fatal(err)
	}
	return k
}

// quickCred is a credential of k, issued now for ttl (cut to k's expiry).
func quickCred(k broker.Task, jti string, ttl time.Duration) *broker.Credential {
	iat := time.Now().UTC().Truncate(time.Second)
	exp := iat.Add(ttl)
	if k.ExpiresAt.Before(exp) {
		exp = k.ExpiresAt.Truncate(time.Second)
	}
	return &broker.Credential{ID: jti, TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.ApprovedScopes, Audience: "aud", IssuedAt: iat, ExpiresAt: exp}
}

func quickEvent(c *broker.Credential) broker.AuditEvent {
	return broker.AuditEvent{Time: c.IssuedAt, Type: broker.EventCredentialIssued,
		Actor: broker.Actor{Kind: "agent"}, TaskID: c.TaskID, Detail: []byte(`{"jti":"` + c.ID + `"}`)}
}

// insertIf is InsertCredentialIfVersion of c, at k's version.
func insertIf(st *postgres.Store, c *broker.Credential, version int) (bool, error) {
	return st.InsertCredentialIfVersion(context.Background(), c, version, quickEvent(c))
}

// A group whose statement fails (here on a duplicate jti) keeps nothing
// and fails no one: every call of it answers false (its caller takes the
// broker's locked branch, where a failure is its own), the connections
// serve the next groups, and the audit head never moves for a refusal.
func TestGroupFailureKeepsNothingAndFailsNoOne(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	k := quickTask(t, st, "tsk_group_fail", broker.Ref{Issuer: "a", Subject: "agent"}, time.Hour, nil)
	if ok, err := insertIf(st, quickCred(k, k.ID+"-dup", time.Minute), k.Version); err != nil || !ok {
		t.Fatalf("first = %v, %v", ok, err)
	}
	const n = 48
	var wg sync.WaitGroup
	oks, errs := make([]bool, n), make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jti := fmt.Sprintf("%s-%d", k.ID, i)
			if i%12 == 0 {
				jti = k.ID + "-dup"
			}
			oks[i], errs[i] = insertIf(st, quickCred(k, jti, time.Minute), k.Version)
		}()
	}
	wg.Wait()
	recorded := 1
	for i := 0; i < n; i++ {
		switch {
		case errs[i] != nil:
			t.Errorf("call %d: %v", i, errs[i])
		case i%12 == 0 && oks[i]:
			t.Errorf("call %d: a duplicate jti was recorded", i)
		case i%12 != 0:
			_, err := st.Credential(ctx, fmt.Sprintf("%s-%d", k.ID, i))
			if oks[i] != (err == nil) {
				t.Errorf("call %d reported %v, but its credential's read says %v", i, oks[i], err)
			}
			if oks[i] {
				recorded++
			}
		}
	}
	cs, err := st.Credentials(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 1000})
	if err != nil || len(cs) != recorded {
		t.Fatalf("%d credentials, want %d (%v)", len(cs), recorded, err)
	}
	evs, err := st.AuditEvents(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 1000})
	if err != nil || len(evs) != recorded {
		t.Fatalf("%d events, want %d (%v)", len(evs), recorded, err)
	}
	head, _, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if ok, err := insertIf(st, quickCred(k, k.ID+"-dup", time.Minute), k.Version); err != nil || ok {
			t.Fatalf("duplicate alone = %v, %v", ok, err)
		}
	}
	if after, _, _ := st.AuditHead(ctx); after != head {
		t.Fatalf("refused duplicates moved the audit head %d -> %d", head, after)
	}
	if ok, err := insertIf(st, quickCred(k, k.ID+"-alone", time.Minute), k.Version); err != nil || !ok {
		t.Fatalf("alone = %v, %v", ok, err)
	}
	if after, _, _ := st.AuditHead(ctx); after != head+1 {
		t.Fatalf("audit head %d -> %d, want one event", head, after)
	}
}

// Many calls over many tasks, one of them ended: the group's one
// statement records every call of a live task, each with its own scopes
// and lifetime, and none of the ended task.
func TestGroupRecordsManyTasks(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	agent := broker.Ref{Issuer: "a", Subject: "agent"}
	var ks []broker.Task
	for i := 0; i < 4; i++ {
		ks = append(ks, quickTask(t, st, fmt.Sprintf("tsk_group_many%d", i), agent, time.Hour, func(k *broker.Task) {
			if i == 3 {
				k.Status, k.ClosedAt = broker.StatusClosed, k.CreatedAt
			}
		}))
	}
	const n = 64
	var wg sync.WaitGroup
	oks, errs := make([]bool, n), make([]error, n)
	creds := make([]*broker.Credential, n)
	for i := 0; i < n; i++ {
		k := ks[i%len(ks)]
		c := quickCred(k, fmt.Sprintf("%s-%d", k.ID, i), time.Duration(10+i)*time.Second)
		c.Scopes = broker.Scopes{broker.MustParseScope(fmt.Sprintf("x.read:r/%d", i))}
		if i%2 == 0 {
			c.Scopes = append(c.Scopes, broker.MustParseScope("y.write:z"))
			c.JKT = "thumb-" + fmt.Sprint(i)
		}
		creds[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			oks[i], errs[i] = insertIf(st, c, k.Version)
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		ended := i%len(ks) == 3
		if errs[i] != nil || oks[i] == ended {
			t.Fatalf("call %d (task ended %v): %v, %v", i, ended, oks[i], errs[i])
		}
		if ended {
			continue
		}
		got, err := st.Credential(ctx, creds[i].ID)
		if err != nil || strings.Join(got.Scopes.Strings(), " ") != strings.Join(creds[i].Scopes.Strings(), " ") || got.TaskID != creds[i].TaskID ||
			got.ExpiresAt.Sub(got.IssuedAt) != time.Duration(10+i)*time.Second || got.Seq != creds[i].Seq || got.JKT != creds[i].JKT {
			t.Fatalf("call %d recorded %+v (%v), asked %+v", i, got, err, *creds[i])
		}
	}
}

// A task whose row another transaction holds is skipped, not waited for:
// the call answers false at once, so one held task never holds up the
// group (its caller takes the locked branch, which waits alone).
func TestGroupSkipsAHeldTask(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	k := quickTask(t, st, "tsk_group_held", broker.Ref{Issuer: "a", Subject: "agent"}, time.Hour, nil)
	holder, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE`, k.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ok, err := insertIf(st, quickCred(k, k.ID+"-held", time.Minute), k.Version)
		if err == nil && ok {
			err = fmt.Errorf("recorded while another transaction held the task")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the group waited on a held task's row lock")
	}
}

// A caller whose context ends while its group runs does not end the
// group: the others' credentials commit.
func TestGroupCommitSurvivesACancelledCaller(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	k := quickTask(t, st, "tsk_group_cancel", broker.Ref{Issuer: "a", Subject: "agent"}, time.Hour, nil)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	var wg sync.WaitGroup
	oks, errs := make([]bool, 8), make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctx
			if i == 0 {
				c = gone
			}
			cred := quickCred(k, fmt.Sprintf("%s-%d", k.ID, i), time.Minute)
			oks[i], errs[i] = st.InsertCredentialIfVersion(c, cred, k.Version, quickEvent(cred))
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil || !oks[i] {
			t.Errorf("call %d: %v, %v", i, oks[i], errs[i])
		}
	}
}

// The locked branch reads the database's clock once the task's lock is
// granted, however long the wait: a task that expired meanwhile must not
// issue.
func TestClockIsReadAfterTheLockWait(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	k := quickTask(t, st, "tsk_lockwait", broker.Ref{Issuer: "a", Subject: "agent"}, time.Hour, func(k *broker.Task) {
		k.ExpiresAt = time.Now().UTC().Truncate(time.Microsecond).Add(1500 * time.Millisecond)
	})
	holder, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE`, k.ID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		now time.Time
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = st.InTx(ctx, func(tx broker.Tx) error {
			_, _, now, err := tx.LockTaskChecked(ctx, k.ID)
			r.now = now
			return err
		})
		done <- r
	}()
	time.Sleep(2500 * time.Millisecond) // past the task's expiry, lock still held
	released := time.Now()
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.now.Before(released.Add(-100 * time.Millisecond)) {
		t.Fatalf("clock %v read before the lock was released at %v", r.now, released)
	}
	if ok, err := insertIf(st, quickCred(k, k.ID+"-late", time.Minute), k.Version); err != nil || ok {
		t.Fatalf("a task expired by the database's clock recorded a credential: %v, %v", ok, err)
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
