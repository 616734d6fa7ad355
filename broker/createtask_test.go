package broker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// denyAll is a policy that forbids every request, naming itself.
type denyAll struct{}

func (denyAll) Decide(broker.PolicyRequest) broker.PolicyDecision {
	return broker.PolicyDecision{Effect: broker.EffectDeny, Policies: []string{"no-agents"}, Reasons: []string{"closed for the holidays"}}
}

// A task is recorded pending for its agent, on behalf of the named user,
// with the clock's time, and its task.created event says what was asked.
func TestCreateTask(t *testing.T) {
	for _, tt := range []struct {
		name        string
		req         func() broker.CreateTaskRequest
		wantExpires time.Time
		wantCapped  bool
		wantRisk    broker.Risk
		wantScopes  []string
	}{
		{"as asked", readReq, t0.Add(time.Hour), false, broker.RiskLow, []string{"repo.read:acme/**"}},
		{"a ttl over the ceiling is capped", func() broker.CreateTaskRequest {
			r := readReq()
			r.TTLSeconds = 100 * 3600
			return r
		}, t0.Add(broker.DefaultTaskTTLMax), true, broker.RiskLow, []string{"repo.read:acme/**"}},
		{"no ttl is one hour", func() broker.CreateTaskRequest {
			r := readReq()
			r.TTLSeconds = 0
			return r
		}, t0.Add(time.Hour), false, broker.RiskLow, []string{"repo.read:acme/**"}},
		{"the risk is the highest action's", func() broker.CreateTaskRequest {
			r := readReq()
			r.Scopes = []string{"repo.read:acme/**", "pr.write:acme/web"}
			return r
		}, t0.Add(time.Hour), false, broker.RiskMedium, []string{"pr.write:acme/web", "repo.read:acme/**"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task, err := e.svc.CreateTask(context.Background(), agent, tt.req())
			if err != nil {
				t.Fatal(err)
			}
			if !broker.ValidTaskID(task.ID) || task.Status != broker.StatusPending || task.Version != 1 {
				t.Fatalf("task = %s %s v%d", task.ID, task.Status, task.Version)
			}
			if task.Agent != agent.Ref() || task.User != (broker.Ref{Issuer: usersURL, Subject: "alice"}) {
				t.Errorf("agent %v, user %v", task.Agent, task.User)
			}
			if !task.CreatedAt.Equal(t0) || !task.ExpiresAt.Equal(tt.wantExpires) || task.TTLCapped != tt.wantCapped {
				t.Errorf("created %v, expires %v (capped %v); want %v, %v (%v)", task.CreatedAt, task.ExpiresAt, task.TTLCapped, t0, tt.wantExpires, tt.wantCapped)
			}
			if task.Risk != tt.wantRisk {
				t.Errorf("risk %s, want %s", task.Risk, tt.wantRisk)
			}
			if stored := e.taskOf(t, task.ID); stored.Status != broker.StatusPending || !stored.ExpiresAt.Equal(tt.wantExpires) {
				t.Errorf("stored task %s expiring %v", stored.Status, stored.ExpiresAt)
			}
			got := e.wantEvents(t, ev{Type: broker.EventTaskCreated, Actor: agent, Task: task.ID})
			d := detailOf(t, got[0])
			if d["on_behalf_of"] != usersURL+"#alice" || d["goal"] != "triage issues" || d["ttl_capped"] != tt.wantCapped ||
				d["risk"] != string(tt.wantRisk) || d["expires_at"] != tt.wantExpires.Format(time.RFC3339) {
				t.Errorf("task.created detail = %v", d)
			}
			if sc := strs(d["scopes"]); !slices.Equal(sc, tt.wantScopes) || !slices.Equal(task.Scopes.Strings(), tt.wantScopes) {
				t.Errorf("task.created scopes = %v, want %v", d["scopes"], tt.wantScopes)
			}
		})
	}
}

// A refused task request creates nothing, appends nothing itself, and its
// refusal is recorded with its code.
func TestCreateTaskRefusals(t *testing.T) {
	for _, tt := range []struct {
		name   string
		caller broker.Principal
		opts   []func(*broker.Config)
		setup  func(t *testing.T, e *flowEnv)
		req    func() broker.CreateTaskRequest
		want   *broker.Error
	}{
		{name: "a user asks", caller: alice, req: readReq, want: broker.ErrWrongPrincipalKind},
		{name: "a resource server asks", caller: rs, req: readReq, want: broker.ErrWrongPrincipalKind},
		{name: "no on_behalf_of", caller: agent, want: broker.ErrInvalidRequest, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.OnBehalfOf = ""
			return r
		}},
		{name: "a user of an unconfigured issuer", caller: agent, want: broker.ErrInvalidRequest, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.OnBehalfOf = "https://evil.test#alice"
			return r
		}},
		{name: "no goal", caller: agent, want: broker.ErrInvalidRequest, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.Goal = ""
			return r
		}},
		{name: "an unknown audience", caller: agent, want: broker.ErrInvalidRequest, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.Audiences = []string{"https://elsewhere.test"}
			return r
		}},
		{name: "an unknown action", caller: agent, want: broker.ErrInvalidScope, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.Scopes = []string{"repo.delete:acme/api"}
			return r
		}},
		{name: "a blocked action", caller: agent, want: broker.ErrBlockedAction, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.Scopes = []string{"repo.token.create:acme/api"}
			return r
		}},
		{name: "a negative ttl", caller: agent, want: broker.ErrInvalidRequest, req: func() broker.CreateTaskRequest {
			r := readReq()
			r.TTLSeconds = -1
			return r
		}},
		{name: "a suspended agent", caller: agent, req: readReq, want: broker.ErrAgentSuspended,
			setup: func(t *testing.T, e *flowEnv) {
				if _, _, err := e.svc.SuspendAgent(context.Background(), admin, agentsURL+"#bot", "leaked"); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "the pending cap is reached", caller: agent, req: readReq, want: broker.ErrRateLimited,
			opts:  []func(*broker.Config){func(c *broker.Config) { c.MaxPendingPerAgent = 2 }},
			setup: func(t *testing.T, e *flowEnv) { e.create(t, agent, readReq()); e.create(t, agent, readReq()) }},
		{name: "a policy forbids", caller: agent, req: readReq, want: broker.ErrPolicyDenied,
			opts: []func(*broker.Config){func(c *broker.Config) { c.Policy = denyAll{} }}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t, tt.opts...)
			if tt.setup != nil {
				tt.setup(t, e)
			}
			e.skip(t)
			before, _, err := e.svc.ListTasks(context.Background(), agent, "", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.svc.CreateTask(context.Background(), tt.caller, tt.req())
			e.refused(t, err, tt.want, tt.caller, "", "create")
			after, _, err := e.svc.ListTasks(context.Background(), agent, "", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before) {
				t.Fatalf("%d tasks after a refusal, %d before", len(after), len(before))
			}
		})
	}
}

// A policy's deny names the policy and its reason, for the problem and
// the refusal's event.
func TestCreateTaskPolicyDenialNamesThePolicy(t *testing.T) {
	e := newFlowEnv(t, func(c *broker.Config) { c.Policy = denyAll{} })
	_, err := e.svc.CreateTask(context.Background(), agent, readReq())
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.ErrPolicyDenied.Code {
		t.Fatalf("err = %v", err)
	}
	if len(be.Policies) != 1 || be.Policies[0] != "no-agents" {
		t.Errorf("policies = %v", be.Policies)
	}
	if be.Detail != "forbidden by policy no-agents: closed for the holidays" {
		t.Errorf("detail = %q", be.Detail)
	}
	got := e.wantEvents(t, ev{Type: broker.EventRequestRefused, Actor: agent, Code: "policy_denied"})
	if p, _ := detailOf(t, got[0])["policies"].([]any); len(p) != 1 || p[0] != "no-agents" {
		t.Errorf("the refusal's event names policies %v", detailOf(t, got[0])["policies"])
	}
}
