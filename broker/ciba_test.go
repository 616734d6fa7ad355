package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// startBackchannel asks for readReq's task over CIBA, naming the audience
// as a resource indicator.
func startBackchannel(t *testing.T, e *flowEnv) broker.BackchannelStarted {
	t.Helper()
	r := readReq()
	r.Goal = ""
	r.Audiences = []string{apiAud + "/"}
	s, err := e.svc.StartBackchannel(context.Background(), agent, broker.BackchannelStart{Task: r, BindingMessage: "triage 4711"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pollRefused polls as p and checks the refusal and the one event the
// service recorded for it (naming the task when it knows one).
func pollRefused(t *testing.T, e *flowEnv, p broker.Principal, authReqID string, want *broker.Error, wantTask string) {
	t.Helper()
	_, err := e.svc.PollBackchannel(context.Background(), p, authReqID, "")
	wantCode(t, err, want)
	if want == broker.ErrAuthorizationPending {
		e.wantEvents(t) // an answer of the protocol, asked every few seconds: not audited
		return
	}
	e.wantEvents(t, ev{Type: broker.EventRequestRefused, Actor: p, Task: wantTask, Code: want.Code})
}

// A backchannel request creates its task as CreateTask does; polls wait
// for the user at the interval given, and once approved the agent gets
// one token, and the request is spent.
func TestBackchannelFlow(t *testing.T) {
	ctx := context.Background()
	e := newFlowEnv(t)
	s := startBackchannel(t, e)
	if s.ExpiresIn != 3600 || s.Interval != 5 || s.Task.Goal != "triage 4711" || s.Task.Audiences[0] != apiAud ||
		s.Task.Status != broker.StatusPending {
		t.Fatalf("started: %+v", s)
	}
	e.wantEvents(t, ev{Type: broker.EventTaskCreated, Actor: agent, Task: s.Task.ID})

	pollRefused(t, e, agent, s.AuthReqID, broker.ErrAuthorizationPending, s.Task.ID)
	e.clock.Advance(time.Second)
	pollRefused(t, e, agent, s.AuthReqID, broker.ErrSlowDown, s.Task.ID) // sooner than 5 s: now 10 s
	e.clock.Advance(5 * time.Second)
	pollRefused(t, e, agent, s.AuthReqID, broker.ErrSlowDown, s.Task.ID) // sooner than 10 s: now 15 s
	e.clock.Advance(15 * time.Second)
	pollRefused(t, e, agent, s.AuthReqID, broker.ErrAuthorizationPending, s.Task.ID)
	pollRefused(t, e, agent2, s.AuthReqID, broker.ErrInvalidGrant, "") // another agent learns nothing

	if _, err := e.svc.Approve(ctx, alice, s.Task.ID, broker.ApproveRequest{}); err != nil {
		t.Fatal(err)
	}
	e.skip(t)
	e.clock.Advance(15 * time.Second)
	m, err := e.svc.PollBackchannel(ctx, agent, s.AuthReqID, "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Credential.TaskID != s.Task.ID || m.Credential.Scopes.Strings()[0] != "repo.read:acme/**" || m.Credential.Audience != apiAud {
		t.Fatalf("minted %+v", m.Credential)
	}
	e.wantEvents(t, ev{Type: broker.EventCredentialIssued, Actor: agent, Task: s.Task.ID})
	e.clock.Advance(15 * time.Second)
	pollRefused(t, e, agent, s.AuthReqID, broker.ErrInvalidGrant, s.Task.ID) // spent
	if n := len(credentials(t, e, s.Task.ID)); n != 1 {
		t.Fatalf("%d credentials, want 1", n)
	}
}

// A poll answers by the task's state: denied, expired, unknown.
func TestBackchannelOutcomes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, e *flowEnv, s broker.BackchannelStarted)
		id    func(s broker.BackchannelStarted) string
		want  *broker.Error
		named bool // the refusal names the task
	}{
		{name: "the user denied", want: broker.ErrAccessDenied, named: true,
			setup: func(t *testing.T, e *flowEnv, s broker.BackchannelStarted) {
				if _, err := e.svc.Deny(context.Background(), alice, s.Task.ID, broker.DenyRequest{}); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "the request expired", want: broker.ErrExpiredToken, named: true,
			setup: func(t *testing.T, e *flowEnv, s broker.BackchannelStarted) { e.clock.Advance(time.Hour) }},
		{name: "an unknown id", want: broker.ErrInvalidGrant,
			id: func(broker.BackchannelStarted) string { return "not-an-auth-req-id" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			s := startBackchannel(t, e)
			if tt.setup != nil {
				tt.setup(t, e, s)
			}
			e.skip(t)
			id, task := s.AuthReqID, ""
			if tt.id != nil {
				id = tt.id(s)
			}
			if tt.named {
				task = s.Task.ID
			}
			pollRefused(t, e, agent, id, tt.want, task)
		})
	}
}
