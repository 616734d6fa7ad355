package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// story is one task's whole life: asked, approved, two tokens, a refused
// mint, closed. It returns the task and the events' types in order.
func story(t *testing.T, e *flowEnv) (broker.Task, []string) {
	t.Helper()
	ctx := context.Background()
	task := e.approved(t, readReq())
	e.mint(t, task.ID, "repo.read:acme/api")
	e.clock.Advance(time.Second)
	e.mint(t, task.ID, "repo.read:acme/web")
	if _, err := e.svc.Mint(ctx, agent, task.ID, broker.MintRequest{Scopes: []string{"pr.write:acme/web"}, Audience: apiAud}); err == nil {
		t.Fatal("a mint beyond the approval succeeded")
	}
	if _, _, err := e.svc.Close(ctx, agent, task.ID); err != nil {
		t.Fatal(err)
	}
	return task, []string{broker.EventTaskCreated, broker.EventTaskApproved, broker.EventCredentialIssued,
		broker.EventCredentialIssued, broker.EventRequestRefused, broker.EventTaskClosed,
		broker.EventCredentialRevoked, broker.EventCredentialRevoked}
}

// An auditor reads a task's story in commit order, its credentials, and a
// hash chain that verifies.
func TestTaskHistory(t *testing.T) {
	ctx := context.Background()
	e := newFlowEnv(t)
	noise := e.approved(t, readReq()) // another task's events stay out
	e.mint(t, noise.ID, "repo.read:acme/api")
	task, want := story(t, e)
	h, err := e.svc.TaskHistory(ctx, auditor, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.Task.ID != task.ID || h.Task.Status != broker.StatusClosed || h.Truncated {
		t.Fatalf("history of %s: %s, truncated %v", h.Task.ID, h.Task.Status, h.Truncated)
	}
	if got := types(h.Events); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i, ev := range h.Events {
		if ev.TaskID != task.ID || (i > 0 && ev.Seq <= h.Events[i-1].Seq) {
			t.Errorf("event %d: task %q seq %d", i, ev.TaskID, ev.Seq)
		}
	}
	if c := detailOf(t, h.Events[4])["code"]; c != "scope_exceeds_approval" {
		t.Errorf("the refused mint's code is %v", c)
	}
	if len(h.Credentials) != 2 || h.Credentials[0].RevokedAt.IsZero() || h.Credentials[1].RevokedAt.IsZero() {
		t.Fatalf("credentials %+v", h.Credentials)
	}
	// The whole log is one chain from genesis to the head.
	all, err := e.st.AuditEvents(ctx, broker.HistoryFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	v := broker.NewChainVerifier()
	for _, ev := range all {
		if err := v.Add(ev); err != nil {
			t.Fatal(err)
		}
	}
	seq, hash, err := e.st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Finish(seq, hash); err != nil {
		t.Fatal(err)
	}
}

// The audit and credential reads filter and page for auditors only.
func TestAuditReads(t *testing.T) {
	ctx := context.Background()
	e := newFlowEnv(t)
	task, _ := story(t, e)
	for _, tt := range []struct {
		name      string
		f         broker.HistoryFilter
		wantTypes []string
		wantMore  bool
	}{
		{"by type", broker.HistoryFilter{Type: broker.EventCredentialIssued, Limit: 10},
			[]string{broker.EventCredentialIssued, broker.EventCredentialIssued}, false},
		{"by refusal code", broker.HistoryFilter{Code: "scope_exceeds_approval", Limit: 10},
			[]string{broker.EventRequestRefused}, false},
		{"by actor", broker.HistoryFilter{Actor: usersURL + "#alice", Limit: 10},
			[]string{broker.EventTaskApproved}, false},
		{"a first page", broker.HistoryFilter{TaskID: task.ID, Limit: 3},
			[]string{broker.EventTaskCreated, broker.EventTaskApproved, broker.EventCredentialIssued}, true},
		{"since the clock moved", broker.HistoryFilter{TaskID: task.ID, Since: t0.Add(time.Second), Limit: 3},
			[]string{broker.EventCredentialIssued, broker.EventRequestRefused, broker.EventTaskClosed}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			evs, more, err := e.svc.AuditEvents(ctx, auditor, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := types(evs); !slices.Equal(got, tt.wantTypes) || more != tt.wantMore {
				t.Fatalf("events %v (more %v), want %v (more %v)", got, more, tt.wantTypes, tt.wantMore)
			}
		})
	}
	cs, more, err := e.svc.Credentials(ctx, auditor, broker.HistoryFilter{TaskID: task.ID, Type: "jwt", Limit: 1})
	if err != nil || len(cs) != 1 || !more || cs[0].TaskID != task.ID {
		t.Fatalf("credentials page: %d, more %v, %v", len(cs), more, err)
	}
	e.skip(t)
	for _, tt := range []struct {
		name   string
		caller broker.Principal
		f      broker.HistoryFilter
		want   *broker.Error
	}{
		{"a user who is no auditor", alice, broker.HistoryFilter{Limit: 10}, broker.ErrWrongPrincipalKind},
		{"an agent", agent, broker.HistoryFilter{Limit: 10}, broker.ErrWrongPrincipalKind},
		{"no limit", auditor, broker.HistoryFilter{}, broker.ErrInvalidRequest},
		{"an unknown event type", auditor, broker.HistoryFilter{Type: "task.exploded", Limit: 10}, broker.ErrInvalidRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := e.svc.AuditEvents(ctx, tt.caller, tt.f)
			e.refused(t, err, tt.want, tt.caller, "", broker.OpReadAudit)
		})
	}
	_, err = e.svc.TaskHistory(ctx, alice, task.ID)
	e.refused(t, err, broker.ErrWrongPrincipalKind, alice, task.ID, broker.OpReadHistory)
	_, _, err = e.svc.Credentials(ctx, auditor, broker.HistoryFilter{Type: "ssh", Limit: 1})
	e.refused(t, err, broker.ErrInvalidRequest, auditor, "", broker.OpReadIssuance)
}
