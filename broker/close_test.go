package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// Closing a task revokes every credential of it in the same step: each is
// marked revoked at the clock's time, enters the revocation feed, and
// gets a credential.revoked event after the task.closed one.
func TestClose(t *testing.T) {
	for _, tt := range []struct {
		name   string
		caller broker.Principal
		mints  int
	}{
		{"by its agent, three credentials", agent, 3},
		{"by its user, one credential", alice, 1},
		{"by its agent, none minted", agent, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newFlowEnv(t)
			task := e.approved(t, readReq())
			other := e.approved(t, readReq()) // another task's credential stays live
			otherCred := e.mint(t, other.ID, "repo.read:acme/api")
			var minted []broker.Minted
			for i := 0; i < tt.mints; i++ {
				minted = append(minted, e.mint(t, task.ID, "repo.read:acme/api"))
			}
			e.clock.Advance(time.Minute)
			e.skip(t)
			feed := e.feedHead(t)
			out, n, err := e.svc.Close(ctx, tt.caller, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			now := t0.Add(time.Minute)
			if out.Status != broker.StatusClosed || n != tt.mints || !out.ClosedAt.Equal(now) || out.Version != 3 {
				t.Fatalf("closed: %s, %d revoked, at %v, v%d", out.Status, n, out.ClosedAt, out.Version)
			}
			want := []ev{{Type: broker.EventTaskClosed, Actor: tt.caller, Task: task.ID}}
			for range minted {
				want = append(want, ev{Type: broker.EventCredentialRevoked, Actor: tt.caller, Task: task.ID})
			}
			got := e.wantEvents(t, want...)
			if d := detailOf(t, got[0]); d["revoked"] != float64(tt.mints) || d["reason"] != "task_closed" || d["version"] != float64(3) {
				t.Errorf("task.closed detail = %v", d)
			}
			var hashes, wantHashes []string
			for _, ev := range got[1:] {
				hashes = append(hashes, detailOf(t, ev)["jti_sha256"].(string))
			}
			for _, m := range minted {
				wantHashes = append(wantHashes, broker.HashID(m.Credential.ID))
				c, err := e.st.Credential(ctx, m.Credential.ID)
				if err != nil || !c.RevokedAt.Equal(now) {
					t.Errorf("credential %s revoked at %v (%v), want %v", m.Credential.ID, c.RevokedAt, err, now)
				}
				if in, err := e.svc.Introspect(ctx, rs, m.Token); err != nil || in.Active {
					t.Errorf("a closed task's token introspects active=%v (%v)", in.Active, err)
				}
			}
			slices.Sort(hashes)
			slices.Sort(wantHashes)
			if !slices.Equal(hashes, wantHashes) {
				t.Errorf("credential.revoked events name %v, want %v", hashes, wantHashes)
			}
			revs, err := e.st.Revocations(ctx, feed, 100)
			if err != nil {
				t.Fatal(err)
			}
			var fed []string
			for _, r := range revs {
				if r.TaskID != task.ID || !r.RevokedAt.Equal(now) || r.Reason != "task_closed" {
					t.Errorf("feed entry %+v", r)
				}
				fed = append(fed, broker.HashID(r.JTI))
			}
			slices.Sort(fed)
			if !slices.Equal(fed, wantHashes) {
				t.Errorf("the feed carries %d revocations, want %d", len(fed), len(wantHashes))
			}
			if in, err := e.svc.Introspect(ctx, rs, otherCred.Token); err != nil || !in.Active {
				t.Errorf("another task's token was revoked too: active=%v (%v)", in.Active, err)
			}
		})
	}
}

// feedHead is the position of the newest revocation feed entry.
func (e *flowEnv) feedHead(t *testing.T) int64 {
	t.Helper()
	revs, err := e.st.Revocations(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) == 0 {
		return 0
	}
	return revs[len(revs)-1].Seq
}

// A refused close revokes nothing, and its refusal is recorded.
func TestCloseRefusals(t *testing.T) {
	for _, tt := range []struct {
		name    string
		caller  broker.Principal
		pending bool
		setup   func(t *testing.T, e *flowEnv, id string)
		want    *broker.Error
	}{
		{name: "another agent", caller: agent2, want: broker.ErrNotTaskParty},
		{name: "another user", caller: carol, want: broker.ErrNotTaskParty},
		{name: "a resource server", caller: rs, want: broker.ErrWrongPrincipalKind},
		{name: "a pending task", caller: agent, pending: true, want: broker.ErrTaskNotActive},
		{name: "closed twice", caller: agent, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, id string) {
				if _, _, err := e.svc.Close(context.Background(), alice, id); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "an expired task", caller: agent, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, id string) { e.clock.Advance(2 * time.Hour) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			var task broker.Task
			if tt.pending {
				task = e.create(t, agent, readReq())
			} else {
				task = e.approved(t, readReq())
				e.mint(t, task.ID, "repo.read:acme/api")
			}
			if tt.setup != nil {
				tt.setup(t, e, task.ID)
			}
			e.skip(t)
			before := credentials(t, e, task.ID)
			_, _, err := e.svc.Close(context.Background(), tt.caller, task.ID)
			e.refused(t, err, tt.want, tt.caller, task.ID, "close")
			after := credentials(t, e, task.ID)
			for i := range after {
				if !after[i].RevokedAt.Equal(before[i].RevokedAt) {
					t.Errorf("a refused close changed credential %s", after[i].ID)
				}
			}
		})
	}
}
