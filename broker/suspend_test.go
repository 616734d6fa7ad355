package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// The kill switch: an admin suspends an agent, which denies its pending
// tasks, revokes its approved ones with every credential, leaves other
// agents alone, and refuses the agent's new tasks until lifted.
func TestSuspendAgent(t *testing.T) {
	ctx := context.Background()
	e := newFlowEnv(t)
	pending := e.create(t, agent, readReq())
	live := e.approved(t, readReq())
	m1 := e.mint(t, live.ID, "repo.read:acme/api")
	m2 := e.mint(t, live.ID, "repo.read:acme/web")
	otherTask, err := e.svc.CreateTask(ctx, agent2, readReq())
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.skip(t)

	tasks, creds, err := e.svc.SuspendAgent(ctx, admin, agentsURL+"#bot", "token leaked in CI logs")
	if err != nil {
		t.Fatal(err)
	}
	if tasks != 2 || creds != 2 {
		t.Fatalf("suspension ended %d tasks and %d credentials, want 2 and 2", tasks, creds)
	}
	got := e.wantEvents(t,
		ev{Type: broker.EventTaskDenied, Actor: admin, Task: pending.ID},
		ev{Type: broker.EventTaskRevoked, Actor: admin, Task: live.ID},
		ev{Type: broker.EventCredentialRevoked, Actor: admin, Task: live.ID},
		ev{Type: broker.EventCredentialRevoked, Actor: admin, Task: live.ID},
		ev{Type: broker.EventAgentSuspended, Actor: admin},
	)
	if d := detailOf(t, got[0]); d["reason"] != "agent suspended" {
		t.Errorf("task.denied detail = %v", d)
	}
	if d := detailOf(t, got[1]); d["reason"] != "agent_suspended" || d["revoked"] != float64(2) {
		t.Errorf("task.revoked detail = %v", d)
	}
	if d := detailOf(t, got[4]); d["agent"] != agentsURL+"#bot" || d["reason"] != "token leaked in CI logs" ||
		d["tasks"] != float64(2) || d["revoked"] != float64(2) {
		t.Errorf("agent.suspended detail = %v", d)
	}
	if st := e.taskOf(t, pending.ID).Status; st != broker.StatusDenied {
		t.Errorf("the pending task is %s", st)
	}
	if st := e.taskOf(t, live.ID).Status; st != broker.StatusRevoked {
		t.Errorf("the approved task is %s", st)
	}
	if st := e.taskOf(t, otherTask.ID).Status; st != broker.StatusPending {
		t.Errorf("another agent's task is %s", st)
	}
	for _, m := range []broker.Minted{m1, m2} {
		if in, err := e.svc.Introspect(ctx, rs, m.Token); err != nil || in.Active {
			t.Errorf("a suspended agent's token is active=%v (%v)", in.Active, err)
		}
	}
	if suspended, err := e.st.Suspended(ctx, agent.Ref()); err != nil || !suspended {
		t.Fatalf("suspended = %v, %v", suspended, err)
	}

	_, err = e.svc.CreateTask(ctx, agent, readReq())
	e.refused(t, err, broker.ErrAgentSuspended, agent, "", "create")
	if _, err := e.svc.CreateTask(ctx, agent2, readReq()); err != nil {
		t.Fatalf("another agent is refused: %v", err)
	}
	e.skip(t)

	if err := e.svc.UnsuspendAgent(ctx, admin, agentsURL+"#bot"); err != nil {
		t.Fatal(err)
	}
	got = e.wantEvents(t, ev{Type: broker.EventAgentUnsuspended, Actor: admin})
	if d := detailOf(t, got[0]); d["agent"] != agentsURL+"#bot" {
		t.Errorf("agent.unsuspended detail = %v", d)
	}
	task := e.create(t, agent, readReq())
	e.wantEvents(t, ev{Type: broker.EventTaskCreated, Actor: agent, Task: task.ID})
	// Lifting it does not revive what it ended.
	if st := e.taskOf(t, live.ID).Status; st != broker.StatusRevoked {
		t.Errorf("after the lift the revoked task is %s", st)
	}
}

// Only admins suspend, only configured agents, with a reason; only a
// suspension is lifted.
func TestSuspendRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name      string
		caller    broker.Principal
		agent     string
		reason    string
		unsuspend bool
		want      *broker.Error
	}{
		{name: "a user who is no admin", caller: alice, agent: agentsURL + "#bot", reason: "r", want: broker.ErrWrongPrincipalKind},
		{name: "an auditor", caller: auditor, agent: agentsURL + "#bot", reason: "r", want: broker.ErrWrongPrincipalKind},
		{name: "the agent itself", caller: agent, agent: agentsURL + "#bot", reason: "r", want: broker.ErrWrongPrincipalKind},
		{name: "an unconfigured issuer", caller: admin, agent: "https://evil.test#bot", reason: "r", want: broker.ErrInvalidRequest},
		{name: "no reason", caller: admin, agent: agentsURL + "#bot", want: broker.ErrInvalidRequest},
		{name: "lifting by a user who is no admin", caller: alice, agent: agentsURL + "#bot", unsuspend: true, want: broker.ErrWrongPrincipalKind},
		{name: "lifting what is not suspended", caller: admin, agent: agentsURL + "#bot", unsuspend: true, want: broker.ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.approved(t, readReq())
			e.skip(t)
			var err error
			if tt.unsuspend {
				err = e.svc.UnsuspendAgent(ctx, tt.caller, tt.agent)
			} else {
				_, _, err = e.svc.SuspendAgent(ctx, tt.caller, tt.agent, tt.reason)
			}
			op := broker.OpSuspend
			if tt.unsuspend {
				op = broker.OpUnsuspend
			}
			e.refused(t, err, tt.want, tt.caller, "", op)
			if st := e.taskOf(t, task.ID).Status; st != broker.StatusApproved {
				t.Errorf("a refused suspension left the task %s", st)
			}
			if suspended, err := e.st.Suspended(ctx, agent.Ref()); err != nil || suspended {
				t.Errorf("suspended = %v, %v", suspended, err)
			}
		})
	}
}

// The sweeper ends what the clock ended: approved tasks past expiry become
// expired with their credentials revoked, pending ones denied, by the
// system.
func TestExpireDue(t *testing.T) {
	ctx := context.Background()
	e := newFlowEnv(t)
	short := readReq()
	short.TTLSeconds = 600
	pending := e.create(t, agent, short)
	live := e.approved(t, short)
	e.mint(t, live.ID, "repo.read:acme/api")
	later := e.approved(t, readReq()) // an hour: not due
	e.skip(t)
	e.clock.Advance(10 * time.Minute)
	n, err := e.svc.ExpireDue(ctx, 100)
	if err != nil || n != 2 {
		t.Fatalf("ExpireDue = %d, %v; want 2", n, err)
	}
	e.wantEvents(t,
		ev{Type: broker.EventTaskDenied, Task: pending.ID},
		ev{Type: broker.EventTaskExpired, Task: live.ID},
		ev{Type: broker.EventCredentialRevoked, Task: live.ID},
	)
	if st := e.taskOf(t, later.ID).Status; st != broker.StatusApproved {
		t.Errorf("a task not due is %s", st)
	}
	if n, err := e.svc.ExpireDue(ctx, 100); err != nil || n != 0 {
		t.Fatalf("a second sweep ended %d (%v)", n, err)
	}
	e.wantEvents(t)
}
