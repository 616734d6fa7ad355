package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// approvedTask stores an approved task at version 2, changed by change.
func approvedTask(t *testing.T, s Store, change func(*broker.Task)) broker.Task {
	t.Helper()
	k := newTask(id("agent-"), id("user-"))
	k.Status, k.Version, k.ApprovedAt = broker.StatusApproved, 2, k.CreatedAt
	k.ApprovedScopes, k.ApprovedAudiences = k.Scopes, k.Audiences
	if change != nil {
		change(&k)
	}
	insert(t, s, &k)
	return k
}

// credentialOf is a credential of k issued now for a minute (cut to k's
// expiry), and its event.
func credentialOf(k broker.Task) (*broker.Credential, broker.AuditEvent) {
	iat := now().Truncate(time.Second)
	exp := iat.Add(time.Minute)
	if k.ExpiresAt.Before(exp) {
		exp = k.ExpiresAt.Truncate(time.Second)
	}
	c := &broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.ApprovedScopes, Audience: k.ApprovedAudiences[0], IssuedAt: iat, ExpiresAt: exp, JKT: "thumb"}
	return c, broker.AuditEvent{Time: iat, Type: broker.EventCredentialIssued, Actor: broker.Actor{Kind: "agent"},
		TaskID: k.ID, Detail: []byte(`{"jti":"` + c.ID + `"}`)}
}

// InsertCredentialIfVersion records a credential decided on a snapshot of
// its task only while the task is at that version and lives; otherwise
// nothing at all is written: no credential, no audit event.
func testInsertCredentialIfVersion(t *testing.T, s Store) {
	cases := []struct {
		name    string
		version int
		change  func(*broker.Task)
	}{
		{name: "stale version", version: 1},
		{name: "newer version", version: 3},
		{name: "closed", version: 2, change: func(k *broker.Task) { k.Status, k.ClosedAt = broker.StatusClosed, k.CreatedAt }},
		{name: "revoked", version: 2, change: func(k *broker.Task) { k.Status, k.ClosedAt = broker.StatusRevoked, k.CreatedAt }},
		{name: "revoking", version: 2, change: func(k *broker.Task) { k.Revoking = true }},
		{name: "pending", version: 2, change: func(k *broker.Task) { k.Status, k.ApprovedAt = broker.StatusPending, time.Time{} }},
		{name: "expired by the store's clock", version: 2, change: func(k *broker.Task) { k.ExpiresAt = now().Add(-time.Second) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := approvedTask(t, s, tc.change)
			head, _, err := s.AuditHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c, ev := credentialOf(k)
			if ok, err := s.InsertCredentialIfVersion(ctx, c, tc.version, ev); err != nil || ok {
				t.Fatalf("InsertCredentialIfVersion = %v, %v; want false, nil", ok, err)
			}
			if _, err := s.Credential(ctx, c.ID); !errors.Is(err, broker.ErrNotFound) {
				t.Fatalf("a credential was recorded (%v)", err)
			}
			if after, _, _ := s.AuditHead(ctx); after != head {
				t.Fatalf("the audit head moved %d -> %d", head, after)
			}
		})
	}
	t.Run("recorded", func(t *testing.T) {
		k := approvedTask(t, s, nil)
		c, ev := credentialOf(k)
		ok, err := s.InsertCredentialIfVersion(ctx, c, k.Version, ev)
		if err != nil || !ok || c.Seq == 0 {
			t.Fatalf("InsertCredentialIfVersion = %v, %v (seq %d)", ok, err, c.Seq)
		}
		got, err := s.Credential(ctx, c.ID)
		if err != nil || got.Seq != c.Seq || !got.IssuedAt.Equal(c.IssuedAt) || !got.ExpiresAt.Equal(c.ExpiresAt) ||
			got.JKT != "thumb" || got.Kind != broker.KindJWT || got.Agent != k.Agent || got.User != k.User ||
			strings.Join(got.Scopes.Strings(), " ") != strings.Join(k.ApprovedScopes.Strings(), " ") {
			t.Fatalf("recorded %+v (%v), asked %+v", got, err, *c)
		}
		evs, err := s.AuditEvents(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 10})
		if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Detail), c.ID) || evs[0].Type != broker.EventCredentialIssued {
			t.Fatalf("events %+v, %v", evs, err)
		}
	})
	t.Run("concurrent calls each record once", func(t *testing.T) {
		k := approvedTask(t, s, nil)
		const n = 24
		var wg sync.WaitGroup
		errs := make([]error, n)
		creds := make([]*broker.Credential, n)
		for i := range n {
			c, ev := credentialOf(k)
			creds[i] = c
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.InsertCredentialIfVersion(ctx, c, k.Version, ev)
				if err == nil && !ok {
					err = fmt.Errorf("not recorded")
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		cs, err := s.Credentials(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 100})
		if err != nil || len(cs) != n {
			t.Fatalf("%d credentials, want %d (%v)", len(cs), n, err)
		}
		evs, err := s.AuditEvents(ctx, broker.HistoryFilter{TaskID: k.ID, Limit: 100})
		if err != nil || len(evs) != n {
			t.Fatalf("%d events, want %d (%v)", len(evs), n, err)
		}
	})
}

// UpdateTask writes only the version after the stored one: an update
// that skips or repeats a version changes nothing.
func testUpdateTaskBumpsVersion(t *testing.T, s Store) {
	k := approvedTask(t, s, nil)
	for _, v := range []int{k.Version, k.Version + 2} {
		u := k
		u.Version, u.Status, u.ClosedAt = v, broker.StatusClosed, now()
		if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, u) }); err == nil {
			t.Fatalf("an update to version %d of a task at %d was written", v, k.Version)
		}
	}
	if got, err := s.Task(ctx, k.ID); err != nil || got.Version != k.Version || got.Status != broker.StatusApproved {
		t.Fatalf("task after refused updates: %+v, %v", got, err)
	}
	u := k
	u.Version, u.Revoking = k.Version+1, true
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, u) }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Task(ctx, k.ID); err != nil || got.Version != k.Version+1 || !got.Revoking {
		t.Fatalf("task after the update: %+v, %v", got, err)
	}
}
