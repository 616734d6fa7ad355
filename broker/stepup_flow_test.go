package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// reviewWrites is a @step_up policy: every write the agent mints needs the
// user's approval of that exact request; reads are allowed.
type reviewWrites struct{}

func (reviewWrites) Decide(r broker.PolicyRequest) broker.PolicyDecision {
	if r.Operation == broker.OpMint && r.Class == broker.ClassWrite {
		return broker.PolicyDecision{Effect: broker.EffectStepUp, Policies: []string{"review-writes"},
			Reasons: []string{"writes need the user's eyes"}}
	}
	return broker.PolicyDecision{Effect: broker.EffectAllow}
}

func newStepUpEnv(t *testing.T) (*flowEnv, broker.Task) {
	t.Helper()
	e := newFlowEnv(t, func(c *broker.Config) { c.Policy = reviewWrites{} })
	task := e.approved(t, writeReq())
	e.skip(t)
	return e, task
}

var writeMint = broker.MintRequest{Scopes: []string{"pr.write:acme/web"}, Audience: apiAud}

// askStepUp mints a write, which the policy turns into a pending step-up
// approval; it checks the refusal and its one approval.requested event,
// and returns the approval's id.
func askStepUp(t *testing.T, e *flowEnv, task broker.Task) string {
	t.Helper()
	_, err := e.svc.Mint(context.Background(), agent, task.ID, writeMint)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.ErrApprovalRequired.Code {
		t.Fatalf("a write mint: %v; want approval_required", err)
	}
	id := be.ApprovalID
	if !broker.ValidStepUpID(id) {
		t.Fatalf("approval id %q", id)
	}
	got := e.wantEvents(t, ev{Type: broker.EventApprovalRequested, Actor: agent, Task: task.ID, Code: "approval_required"})
	d := detailOf(t, got[0])
	if d["approval_id"] != id || d["op"] != "mint" || d["audience"] != apiAud || strs(d["policies"])[0] != "review-writes" ||
		strs(d["scopes"])[0] != "pr.write:acme/web" {
		t.Errorf("approval.requested detail = %v", d)
	}
	return id
}

// A step-up policy makes a write wait for the user's approval of that
// request; once approved it is minted once, under that approval.
func TestStepUpFlow(t *testing.T) {
	ctx := context.Background()
	e, task := newStepUpEnv(t)
	id := askStepUp(t, e, task)
	if n := len(credentials(t, e, task.ID)); n != 0 {
		t.Fatalf("%d credentials before the approval", n)
	}
	u, err := e.svc.GetStepUp(ctx, agent, id)
	if err != nil || u.Status != broker.StepUpPending || u.TaskID != task.ID || !u.ExpiresAt.Equal(t0.Add(broker.DefaultStepUpTTL)) {
		t.Fatalf("the approval: %+v, %v", u, err)
	}

	// Asking again while it waits names the same approval, in one
	// request.refused event (the approval was asked for once).
	_, err = e.svc.Mint(ctx, agent, task.ID, writeMint)
	var be *broker.Error
	if !errors.As(err, &be) || be.ApprovalID != id {
		t.Fatalf("asked again: %v", err)
	}
	e.refused(t, err, broker.ErrApprovalRequired, agent, task.ID, "mint")

	// A read needs no approval.
	e.mint(t, task.ID, "repo.read:acme/api")
	e.skip(t)

	e.clock.Advance(time.Minute)
	u, err = e.svc.DecideStepUp(ctx, alice, id, true, "")
	if err != nil || u.Status != broker.StepUpApproved || !u.DecidedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("approved: %+v, %v", u, err)
	}
	got := e.wantEvents(t, ev{Type: broker.EventApprovalApproved, Actor: alice, Task: task.ID})
	if detailOf(t, got[0])["approval_id"] != id {
		t.Errorf("approval.approved detail = %v", detailOf(t, got[0]))
	}

	m, err := e.svc.Mint(ctx, agent, task.ID, writeMint)
	if err != nil {
		t.Fatal(err)
	}
	if m.Credential.StepUpID != id {
		t.Fatalf("minted under approval %q, want %q", m.Credential.StepUpID, id)
	}
	got = e.wantEvents(t, ev{Type: broker.EventCredentialIssued, Actor: agent, Task: task.ID})
	if detailOf(t, got[0])["step_up_id"] != id {
		t.Errorf("credential.issued detail = %v", detailOf(t, got[0]))
	}
	if u, err := e.svc.GetStepUp(ctx, alice, id); err != nil || u.Status != broker.StepUpUsed {
		t.Fatalf("after the mint the approval is %s (%v)", u.Status, err)
	}
	// Used once: the next write asks again.
	if again := askStepUp(t, e, task); again == id {
		t.Fatal("a used approval was asked for again")
	}
}

// A denied request is not asked again in any overlapping form, until the
// user lifts the denial by approving it.
func TestStepUpDenied(t *testing.T) {
	ctx := context.Background()
	e, task := newStepUpEnv(t)
	id := askStepUp(t, e, task)
	u, err := e.svc.DecideStepUp(ctx, alice, id, false, "not this week")
	if err != nil || u.Status != broker.StepUpDenied || u.DenyReason != "not this week" {
		t.Fatalf("denied: %+v, %v", u, err)
	}
	got := e.wantEvents(t, ev{Type: broker.EventApprovalDenied, Actor: alice, Task: task.ID})
	if d := detailOf(t, got[0]); d["approval_id"] != id || d["reason"] != "not this week" {
		t.Errorf("approval.denied detail = %v", d)
	}

	_, err = e.svc.Mint(ctx, agent, task.ID, writeMint)
	var be *broker.Error
	if !errors.As(err, &be) || be.ApprovalID != id {
		t.Fatalf("after the denial: %v", err)
	}
	e.refused(t, err, broker.ErrPolicyDenied, agent, task.ID, "mint")

	lifted, err := e.svc.DecideStepUp(ctx, alice, id, true, "")
	if err != nil || lifted.Status != broker.StepUpApproved || lifted.ID == id {
		t.Fatalf("lifting: %+v, %v", lifted, err)
	}
	got = e.wantEvents(t, ev{Type: broker.EventApprovalApproved, Actor: alice, Task: task.ID})
	if d := detailOf(t, got[0]); d["approval_id"] != lifted.ID || d["lifts"] != id {
		t.Errorf("the lift's detail = %v", d)
	}
	if m, err := e.svc.Mint(ctx, agent, task.ID, writeMint); err != nil || m.Credential.StepUpID != lifted.ID {
		t.Fatalf("minted after the lift: %q, %v", m.Credential.StepUpID, err)
	}
}

// Only the task's user decides a pending approval of a live task; a
// refusal names the approval and its task in its event.
func TestDecideStepUpRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		caller broker.Principal
		setup  func(t *testing.T, e *flowEnv, task broker.Task, id string)
		want   *broker.Error
		// early: refused before the approval is read, so naming neither.
		early bool
	}{
		{name: "the agent", caller: agent, want: broker.ErrApprovalForbidden, early: true},
		{name: "another user", caller: carol, want: broker.ErrApprovalForbidden},
		{name: "decided already", caller: alice, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, _ broker.Task, id string) {
				if _, err := e.svc.DecideStepUp(ctx, alice, id, true, ""); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "the approval expired", caller: alice, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, _ broker.Task, _ string) { e.clock.Advance(broker.DefaultStepUpTTL) }},
		{name: "the task was closed", caller: alice, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, task broker.Task, _ string) {
				if _, _, err := e.svc.Close(ctx, agent, task.ID); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, task := newStepUpEnv(t)
			id := askStepUp(t, e, task)
			if tt.setup != nil {
				tt.setup(t, e, task, id)
			}
			e.skip(t)
			_, err := e.svc.DecideStepUp(ctx, tt.caller, id, true, "")
			wantCode(t, err, tt.want)
			// The approval's URL names no task: the refusal's event does.
			wantTask, wantApproval := task.ID, any(id)
			if tt.early {
				wantTask, wantApproval = "", nil
			}
			got := e.wantEvents(t, ev{Type: broker.EventRequestRefused, Actor: tt.caller, Task: wantTask, Code: tt.want.Code})
			if d := detailOf(t, got[0]); d["approval"] != wantApproval {
				t.Errorf("refusal detail = %v", d)
			}
		})
	}
}
