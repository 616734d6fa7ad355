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

func quickCred(k broker.Task, jti string) *broker.Credential {
	return &broker.Credential{JTI: jti, TaskID: k.ID, Kind: "jwt", Agent: k.Agent, User: k.User,
		Scopes: k.ApprovedScopes, Audience: "aud"}
}

func quickEvent(c broker.Credential, now time.Time) broker.AuditEvent {
	return broker.AuditEvent{Time: now.UTC().Truncate(time.Microsecond), Type: broker.EventCredentialIssued,
		Actor: broker.Actor{Kind: "agent"}, TaskID: c.TaskID, Detail: []byte(`{"jti":"` + c.JTI + `"}`)}
}

// IssueQuick records a credential only when the task is still what the
// caller decided on; otherwise nothing at all is written: no credential,
// no audit event.
func TestIssueQuickReChecksTheTask(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	agent := broker.Ref{Issuer: "a", Subject: "agent"}
	suspended := broker.Ref{Issuer: "a", Subject: "suspended"}
	if err := st.InTx(ctx, func(tx broker.Tx) error {
		return tx.SetSuspended(ctx, suspended, "r", "admin", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		agent   broker.Ref
		expires time.Duration
		version int
		change  func(*broker.Task)
	}{
		{name: "stale version", agent: agent, expires: time.Hour, version: 1},
		{name: "closed", agent: agent, expires: time.Hour, version: 2, change: func(k *broker.Task) {
			k.Status, k.ClosedAt = broker.StatusClosed, k.CreatedAt
		}},
		{name: "revoking", agent: agent, expires: time.Hour, version: 2, change: func(k *broker.Task) { k.Revoking = true }},
		{name: "pending", agent: agent, expires: time.Hour, version: 2, change: func(k *broker.Task) {
			k.Status, k.ApprovedAt = broker.StatusPending, time.Time{}
		}},
		{name: "suspended agent", agent: suspended, expires: time.Hour, version: 2},
		// Less than a second from the database's clock truncated to the
		// second (from which the token's lifetime counts, as on the slow
		// path): the same second, or the next one already begun.
		{name: "expires within a second", agent: agent, expires: time.Hour, version: 2, change: func(k *broker.Task) {
			k.ExpiresAt = time.Now().UTC().Truncate(time.Second).Add(900 * time.Millisecond)
		}},
		{name: "expired", agent: agent, expires: -time.Second, version: 2},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := quickTask(t, st, fmt.Sprintf("tsk_quick_refused_%d", i), tc.agent, tc.expires, tc.change)
			seq, _, err := st.AuditHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c := quickCred(k, k.ID+"-jti")
			called := false
			ok, err := st.IssueQuick(ctx, c, tc.version, 5*time.Minute, func(c broker.Credential, now time.Time) broker.AuditEvent {
				called = true
				return quickEvent(c, now)
			})
			if err != nil || ok || called {
				t.Fatalf("IssueQuick = %v, %v (event built: %v); want false, nil", ok, err, called)
			}
			if _, err := st.Credential(ctx, c.JTI); err == nil {
				t.Fatal("a credential was recorded")
			}
			if after, _, _ := st.AuditHead(ctx); after != seq {
				t.Fatalf("audit head moved %d -> %d", seq, after)
			}
		})
	}
}

// A recorded quick credential: whole seconds from the database's clock,
// the TTL cut to the task's expiry, its event chained, all committed
// before IssueQuick returns.
func TestIssueQuickRecords(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	k := quickTask(t, st, "tsk_quick_ok", broker.Ref{Issuer: "a", Subject: "agent"}, 90*time.Second+500*time.Millisecond, nil)
	c := quickCred(k, k.ID+"-ok")
	var at time.Time
	ok, err := st.IssueQuick(ctx, c, k.Version, 5*time.Minute, func(c broker.Credential, now time.Time) broker.AuditEvent {
		at = now
		return quickEvent(c, now)
	})
	if err != nil || !ok {
		t.Fatalf("IssueQuick = %v, %v", ok, err)
	}
	if !c.IssuedAt.Equal(c.IssuedAt.Truncate(time.Second)) || !c.ExpiresAt.Equal(c.ExpiresAt.Truncate(time.Second)) {
		t.Fatalf("times not whole seconds: %v %v", c.IssuedAt, c.ExpiresAt)
	}
	if at.Before(c.IssuedAt) || at.Sub(c.IssuedAt) >= time.Second {
		t.Fatalf("issued at %v for a clock of %v", c.IssuedAt, at)
	}
	if c.ExpiresAt.After(k.ExpiresAt) || k.ExpiresAt.Sub(c.ExpiresAt) >= time.Second {
		t.Fatalf("expires at %v, task at %v: not cut to the task", c.ExpiresAt, k.ExpiresAt)
	}
	got, err := st.Credential(ctx, c.JTI)
	if err != nil || got.Seq != c.Seq || !got.ExpiresAt.Equal(c.ExpiresAt) || !got.IssuedAt.Equal(c.IssuedAt) {
		t.Fatalf("recorded %+v (%v), returned %+v", got, err, *c)
	}
	evs, err := st.AuditEvents(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 10})
	if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Detail), c.JTI) {
		t.Fatalf("events %+v, %v", evs, err)
	}

	// The store does not trust its caller with whose task it is.
	for _, c := range []*broker.Credential{quickCred(k, k.ID+"-other-agent"), quickCred(k, k.ID+"-other-user")} {
		if strings.HasSuffix(c.JTI, "agent") {
			c.Agent.Subject = "another-agent"
		} else {
			c.User.Subject = "another-user"
		}
		if ok, err := st.IssueQuick(ctx, c, k.Version, time.Minute, quickEvent); err != nil || ok {
			t.Fatalf("%s: IssueQuick = %v, %v; want false", c.JTI, ok, err)
		}
	}

	// A short TTL is kept.
	c2 := quickCred(k, k.ID+"-short")
	if ok, err := st.IssueQuick(ctx, c2, k.Version, 7*time.Second, quickEvent); err != nil || !ok {
		t.Fatalf("IssueQuick = %v, %v", ok, err)
	}
	if d := c2.ExpiresAt.Sub(c2.IssuedAt); d != 7*time.Second {
		t.Fatalf("lifetime %v, want 7s", d)
	}
}

// A quick statement that fails (here on a duplicate jti) fails no one:
// its group runs again without the quick calls, which report false and
// record nothing (their callers take the slow path, where a failure is
// the caller's own), and every slow call of the group commits.
func TestIssueQuickFailureIsolated(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	k := quickTask(t, st, "tsk_quick_fail", broker.Ref{Issuer: "a", Subject: "agent"}, time.Hour, nil)
	if ok, err := st.IssueQuick(ctx, quickCred(k, k.ID+"-dup"), k.Version, time.Minute, quickEvent); err != nil || !ok {
		t.Fatalf("IssueQuick = %v, %v", ok, err)
	}
	const n = 48
	var wg sync.WaitGroup
	oks, errs := make([]bool, n), make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch {
			case i%12 == 0:
				oks[i], errs[i] = st.IssueQuick(ctx, quickCred(k, k.ID+"-dup"), k.Version, time.Minute, quickEvent)
			case i%3 == 0: // slow calls in the same lane
				errs[i] = st.InGroupTx(ctx, k.ID, func(tx broker.Tx) error {
					return tx.SetSuspended(ctx, broker.Ref{Issuer: k.ID, Subject: fmt.Sprint(i)}, "r", "by", time.Now())
				})
			default:
				oks[i], errs[i] = st.IssueQuick(ctx, quickCred(k, fmt.Sprintf("%s-%d", k.ID, i)), k.Version, time.Minute, quickEvent)
			}
		}()
	}
	wg.Wait()
	recorded := 1
	for i := 0; i < n; i++ {
		switch {
		case errs[i] != nil:
			t.Errorf("call %d: %v", i, errs[i])
		case i%12 == 0:
			if oks[i] {
				t.Errorf("call %d: a duplicate jti was recorded", i)
			}
		case i%3 == 0:
			if s, err := st.Suspended(ctx, broker.Ref{Issuer: k.ID, Subject: fmt.Sprint(i)}); err != nil || !s {
				t.Errorf("slow call %d: its work was lost (%v)", i, err)
			}
		default:
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
	// Alone (a group of quick calls only, which runs without pgx's
	// transaction): the duplicate reports false, its transaction is
	// rolled back, and the connections serve the next calls.
	head, _, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if ok, err := st.IssueQuick(ctx, quickCred(k, k.ID+"-dup"), k.Version, time.Minute, quickEvent); err != nil || ok {
			t.Fatalf("duplicate alone = %v, %v", ok, err)
		}
	}
	if after, _, _ := st.AuditHead(ctx); after != head {
		t.Fatalf("refused duplicates moved the audit head %d -> %d", head, after)
	}
	c := quickCred(k, k.ID+"-alone")
	if ok, err := st.IssueQuick(ctx, c, k.Version, time.Minute, quickEvent); err != nil || !ok {
		t.Fatalf("IssueQuick alone = %v, %v", ok, err)
	}
	if after, _, _ := st.AuditHead(ctx); after != head+1 {
		t.Fatalf("audit head %d -> %d, want one event", head, after)
	}
}

// Many quick calls over many tasks, one of them ended: the group's one
// statement records every call of a live task, each with its own scopes
// and TTL, and none of the ended task.
func TestIssueQuickManyTasks(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	agent := broker.Ref{Issuer: "a", Subject: "agent"}
	var ks []broker.Task
	for i := 0; i < 4; i++ {
		ks = append(ks, quickTask(t, st, fmt.Sprintf("tsk_quick_many%d", i), agent, time.Hour, func(k *broker.Task) {
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
		c := quickCred(k, fmt.Sprintf("%s-%d", k.ID, i))
		c.Scopes = broker.Scopes{broker.MustParseScope(fmt.Sprintf("x.read:r/%d", i))}
		if i%2 == 0 {
			c.Scopes = append(c.Scopes, broker.MustParseScope("y.write:z"))
		}
		creds[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			oks[i], errs[i] = st.IssueQuick(ctx, c, k.Version, time.Duration(10+i)*time.Second, quickEvent)
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
		got, err := st.Credential(ctx, creds[i].JTI)
		if err != nil || strings.Join(got.Scopes.Strings(), " ") != strings.Join(creds[i].Scopes.Strings(), " ") || got.TaskID != creds[i].TaskID ||
			got.ExpiresAt.Sub(got.IssuedAt) != time.Duration(10+i)*time.Second || got.Seq != creds[i].Seq {
			t.Fatalf("call %d recorded %+v (%v), asked %+v", i, got, err, *creds[i])
		}
	}
}

// A task that expires while a mint waits for its row lock (held by
// another transaction that changes nothing, so PostgreSQL re-checks
// nothing) must not issue: both paths read the clock once the lock is
// granted.
func TestClockIsReadAfterTheLockWait(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	for _, path := range []string{"quick", "slow"} {
		t.Run(path, func(t *testing.T) {
			k := quickTask(t, st, "tsk_lockwait_"+path, broker.Ref{Issuer: "a", Subject: "agent"}, time.Hour, func(k *broker.Task) {
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
				ok  bool
				now time.Time
				err error
			}
			done := make(chan result, 1)
			go func() {
				if path == "quick" {
					ok, err := st.IssueQuick(ctx, quickCred(k, k.ID+"-late"), k.Version, time.Minute, quickEvent)
					done <- result{ok: ok, err: err}
					return
				}
				var r result
				r.err = st.InTx(ctx, func(tx broker.Tx) error {
					_, _, now, err := tx.(broker.TaskLocker).LockTaskChecked(ctx, k.ID)
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
			if path == "quick" && r.ok {
				t.Fatal("a task that expired during the lock wait issued a credential")
			}
			if path == "slow" && r.now.Before(released.Add(-100*time.Millisecond)) {
				t.Fatalf("clock %v read before the lock was released at %v", r.now, released)
			}
		})
	}
}
