package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// writeReq asks to read under acme/ and write acme/web's pull requests.
func writeReq() broker.CreateTaskRequest {
	r := readReq()
	r.Scopes = []string{"repo.read:acme/**", "pr.write:acme/web"}
	return r
}

// The task's user approves it as asked or narrower; the approval is
// recorded with the clock's time and a task.approved event.
func TestApprove(t *testing.T) {
	for _, tt := range []struct {
		name        string
		req         broker.ApproveRequest
		wantScopes  []string
		wantExpires time.Time
	}{
		{"as asked", broker.ApproveRequest{}, []string{"pr.write:acme/web", "repo.read:acme/**"}, t0.Add(time.Hour)},
		{"narrower scopes", broker.ApproveRequest{Scopes: []string{"repo.read:acme/api"}}, []string{"repo.read:acme/api"}, t0.Add(time.Hour)},
		{"a shorter life", broker.ApproveRequest{TTLSeconds: 600}, []string{"pr.write:acme/web", "repo.read:acme/**"}, t0.Add(time.Second + 10*time.Minute)},
		{"a longer life keeps the asked one", broker.ApproveRequest{TTLSeconds: 7200}, []string{"pr.write:acme/web", "repo.read:acme/**"}, t0.Add(time.Hour)},
		{"bound to the version seen", broker.ApproveRequest{Version: 1}, []string{"pr.write:acme/web", "repo.read:acme/**"}, t0.Add(time.Hour)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.create(t, agent, writeReq())
			e.skip(t)
			e.clock.Advance(time.Second) // the approval's time is its own
			out, err := e.svc.Approve(context.Background(), alice, task.ID, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if out.Status != broker.StatusApproved || out.Version != 2 || !out.ApprovedAt.Equal(t0.Add(time.Second)) {
				t.Errorf("approved task: %s v%d at %v", out.Status, out.Version, out.ApprovedAt)
			}
			if !slices.Equal(out.ApprovedScopes.Strings(), tt.wantScopes) || !slices.Equal(out.ApprovedAudiences, []string{apiAud}) {
				t.Errorf("approved %v for %v, want %v", out.ApprovedScopes.Strings(), out.ApprovedAudiences, tt.wantScopes)
			}
			if !out.ExpiresAt.Equal(tt.wantExpires) || !slices.Equal(out.UserGroups, alice.Groups) {
				t.Errorf("expires %v (want %v), groups %v", out.ExpiresAt, tt.wantExpires, out.UserGroups)
			}
			if stored := e.taskOf(t, task.ID); stored.Status != broker.StatusApproved || stored.Version != 2 {
				t.Errorf("stored: %s v%d", stored.Status, stored.Version)
			}
			got := e.wantEvents(t, ev{Type: broker.EventTaskApproved, Actor: alice, Task: task.ID})
			d := detailOf(t, got[0])
			if !slices.Equal(strs(d["approved_scopes"]), tt.wantScopes) || d["version"] != float64(2) ||
				d["expires_at"] != tt.wantExpires.Format(time.RFC3339) {
				t.Errorf("task.approved detail = %v", d)
			}
		})
	}
}

// A refused approval changes nothing and is recorded with its code.
func TestApproveRefusals(t *testing.T) {
	for _, tt := range []struct {
		name   string
		caller broker.Principal
		setup  func(t *testing.T, e *flowEnv, id string)
		req    broker.ApproveRequest
		want   *broker.Error
	}{
		{name: "the agent approves its own task", caller: agent, want: broker.ErrApprovalForbidden},
		{name: "another user", caller: carol, want: broker.ErrApprovalForbidden},
		{name: "a resource server", caller: rs, want: broker.ErrApprovalForbidden},
		{name: "scopes wider than asked", caller: alice, want: broker.ErrScopeExceedsRequest,
			req: broker.ApproveRequest{Scopes: []string{"repo.read:**"}}},
		{name: "an audience not asked", caller: alice, want: broker.ErrScopeExceedsRequest,
			req: broker.ApproveRequest{Scopes: []string{"repo.read:acme/api"}, Audiences: []string{vaultAud}}},
		{name: "a stale version", caller: alice, want: broker.ErrTaskChanged, req: broker.ApproveRequest{Version: 7}},
		{name: "a stale digest", caller: alice, want: broker.ErrTaskChanged, req: broker.ApproveRequest{Digest: "00"}},
		{name: "already approved", caller: alice, want: broker.ErrTaskImmutable,
			setup: func(t *testing.T, e *flowEnv, id string) {
				if _, err := e.svc.Approve(context.Background(), alice, id, broker.ApproveRequest{}); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "already denied", caller: alice, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, id string) {
				if _, err := e.svc.Deny(context.Background(), alice, id, broker.DenyRequest{}); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "the approval window elapsed", caller: alice, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, id string) { e.clock.Advance(time.Hour) }},
		{name: "the agent is suspended", caller: alice, want: broker.ErrAgentSuspended,
			setup: func(t *testing.T, e *flowEnv, id string) {
				// Suspended after the task was asked for, without the
				// suspension reaching the task (as if it raced).
				if err := e.st.InTx(context.Background(), func(tx broker.Tx) error {
					return tx.SetSuspended(context.Background(), agent.Ref(), "leaked", "root", t0)
				}); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.create(t, agent, readReq())
			if tt.setup != nil {
				tt.setup(t, e, task.ID)
			}
			e.skip(t)
			before := e.taskOf(t, task.ID)
			_, err := e.svc.Approve(context.Background(), tt.caller, task.ID, tt.req)
			e.refused(t, err, tt.want, tt.caller, task.ID, "approve")
			if after := e.taskOf(t, task.ID); after.Version != before.Version || after.Status != before.Status {
				t.Errorf("a refused approval changed the task: %s v%d → %s v%d", before.Status, before.Version, after.Status, after.Version)
			}
		})
	}
}

// An approval beyond the approver's grants is refused: carol may read but
// not write, even on a task asked on her behalf.
func TestApproveBeyondGrants(t *testing.T) {
	e := newFlowEnv(t)
	r := writeReq()
	r.OnBehalfOf = "carol"
	task := e.create(t, agent, r)
	e.skip(t)
	_, err := e.svc.Approve(context.Background(), carol, task.ID, broker.ApproveRequest{})
	e.refused(t, err, broker.ErrScopeExceedsGrant, carol, task.ID, "approve")
	// Narrowed to what her grants cover, it is approved.
	out, err := e.svc.Approve(context.Background(), carol, task.ID, broker.ApproveRequest{Scopes: []string{"repo.read:acme/**"}})
	if err != nil || out.Status != broker.StatusApproved {
		t.Fatalf("narrowed approval: %v %v", out.Status, err)
	}
	e.wantEvents(t, ev{Type: broker.EventTaskApproved, Actor: carol, Task: task.ID})
}

// The task's user denies it, with a reason that the event keeps.
func TestDeny(t *testing.T) {
	e := newFlowEnv(t)
	task := e.create(t, agent, readReq())
	e.skip(t)
	out, err := e.svc.Deny(context.Background(), alice, task.ID, broker.DenyRequest{Reason: "not today", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != broker.StatusDenied || out.DenyReason != "not today" || !out.ClosedAt.Equal(t0) || out.Version != 2 {
		t.Fatalf("denied task: %s %q %v v%d", out.Status, out.DenyReason, out.ClosedAt, out.Version)
	}
	got := e.wantEvents(t, ev{Type: broker.EventTaskDenied, Actor: alice, Task: task.ID})
	if d := detailOf(t, got[0]); d["reason"] != "not today" || d["version"] != float64(2) {
		t.Errorf("task.denied detail = %v", d)
	}
	// A denied task is never minted for.
	_, err = e.svc.Mint(context.Background(), agent, task.ID, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud})
	e.refused(t, err, broker.ErrTaskNotActive, agent, task.ID, "mint")
}

func TestDenyRefusals(t *testing.T) {
	for _, tt := range []struct {
		name    string
		caller  broker.Principal
		approve bool
		req     broker.DenyRequest
		want    *broker.Error
	}{
		{name: "the agent", caller: agent, want: broker.ErrApprovalForbidden},
		{name: "another user", caller: carol, want: broker.ErrApprovalForbidden},
		{name: "an approved task", caller: alice, approve: true, want: broker.ErrTaskImmutable},
		{name: "a stale version", caller: alice, req: broker.DenyRequest{Version: 3}, want: broker.ErrTaskChanged},
		{name: "a reason too long", caller: alice, req: broker.DenyRequest{Reason: string(make([]byte, 2000))}, want: broker.ErrInvalidRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.create(t, agent, readReq())
			if tt.approve {
				task = e.approved(t, readReq())
			}
			e.skip(t)
			_, err := e.svc.Deny(context.Background(), tt.caller, task.ID, tt.req)
			e.refused(t, err, tt.want, tt.caller, task.ID, "deny")
			if st := e.taskOf(t, task.ID).Status; st == broker.StatusDenied {
				t.Error("a refused denial denied the task")
			}
		})
	}
}
