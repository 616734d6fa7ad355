package broker

import (
	"context"
	"strings"
	"time"
)

// CreateTaskRequest is an agent's request for a task.
type CreateTaskRequest struct {
	OnBehalfOf string
	Goal       string
	Scopes     []string
	Audiences  []string
	TTLSeconds int64
	Tool       string
	Dataset    string
	// MaxCredentials and MaxResources lower the configured budget (0: as
	// configured).
	MaxCredentials int
	MaxResources   int
	// RequireDPoP makes every token of the task DPoP-bound.
	RequireDPoP bool
}

// CreateTask records a pending task for the calling agent.
func (s *Service) CreateTask(ctx context.Context, p Principal, req CreateTaskRequest) (_ Task, err error) {
	defer func() { err = s.refused(ctx, p, "", OpCreate, err) }()
	return s.createTask(ctx, p, req, nil)
}

// createTask is CreateTask; also, when set, writes what else belongs to
// the new task (a backchannel request) in the transaction that inserts it.
func (s *Service) createTask(ctx context.Context, p Principal, req CreateTaskRequest, also func(Tx, Task) error) (Task, error) {
	if p.Kind != KindAgent {
		return Task{}, Errorf(ErrWrongPrincipalKind, "only agents create tasks")
	}
	user, err := s.resolveUser(req.OnBehalfOf)
	if err != nil {
		return Task{}, err
	}
	if err := checkText("goal", req.Goal, maxGoalBytes, true); err != nil {
		return Task{}, err
	}
	if err := checkText("tool", req.Tool, maxLabelBytes, false); err != nil {
		return Task{}, err
	}
	if err := checkText("dataset", req.Dataset, maxLabelBytes, false); err != nil {
		return Task{}, err
	}
	scopes, err := ParseScopes(req.Scopes)
	if err != nil {
		return Task{}, err
	}
	if err := s.catalog.CheckGrantable(scopes); err != nil {
		return Task{}, err
	}
	auds, err := s.audiences(req.Audiences)
	if err != nil {
		return Task{}, err
	}
	scopes = s.catalog.Canonical(scopes, auds...)
	ttl, capped, err := s.taskTTL(req.TTLSeconds)
	if err != nil {
		return Task{}, err
	}
	budget, err := s.budgetFor(req.MaxCredentials, req.MaxResources)
	if err != nil {
		return Task{}, err
	}
	now, err := s.readNow(ctx)
	if err != nil {
		return Task{}, err
	}
	agent := p.Ref()
	id, err := s.newID("tsk_")
	if err != nil {
		return Task{}, err
	}
	// A step-up outcome lets the task be asked for: the user approves the
	// task anyway, and a step-up policy speaks again at each mint.
	d := s.decideAll(PolicyRequest{Operation: OpCreate, TaskID: id, Agent: agent, User: user,
		Tool: req.Tool, Dataset: req.Dataset, Time: now, DPoP: req.RequireDPoP}, scopes, auds)
	if d.Effect == EffectDeny {
		return Task{}, policyDenied(d)
	}
	t := Task{
		ID: id, Version: 1, Status: StatusPending,
		Agent: p.Ref(), User: user,
		Goal: req.Goal, Scopes: scopes, Audiences: auds,
		Risk: s.catalog.Risk(scopes), Tool: req.Tool, Dataset: req.Dataset,
		TTLCapped: capped, CreatedAt: now, ExpiresAt: now.Add(ttl), Budget: budget,
		RequireDPoP: req.RequireDPoP,
	}
	err = s.store.InTx(ctx, func(tx Tx) error {
		// The suspension and the pending cap are read under the agent's
		// lock, in the transaction that inserts: read outside it, two
		// concurrent creates could both see room under the cap, and a
		// create could miss a suspension committed while it decided.
		suspended, waiting, err := tx.LockAgent(ctx, agent, now, s.pending)
		if err != nil {
			return err
		}
		if suspended {
			return Errorf(ErrAgentSuspended, "the agent is suspended")
		}
		if waiting >= s.pending {
			return Errorf(ErrRateLimited, "the agent already has %d tasks awaiting a decision", s.pending)
		}
		if err := tx.InsertTask(ctx, &t); err != nil {
			return err
		}
		if also != nil {
			if err := also(tx, t); err != nil {
				return err
			}
		}
		if err := s.notify(ctx, tx, s.taskNotice(EventTaskCreated, t, now, ActorOf(p))); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventTaskCreated, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{
				"on_behalf_of": user.String(), "goal": t.Goal, "scopes": scopes.Strings(),
				"audiences": auds, "expires_at": t.ExpiresAt, "ttl_capped": capped,
				"risk": t.Risk, "tool": t.Tool, "dataset": t.Dataset,
				"max_credentials": budget.MaxCredentials, "max_resources": budget.MaxResources,
				"step_up_policies": d.stepUpPolicies(), "require_dpop": t.RequireDPoP,
			}),
		})
	})
	if err != nil {
		return Task{}, err
	}
	return t, nil
}

func (s *Service) resolveUser(obo string) (Ref, error) {
	if obo == "" {
		return Ref{}, Errorf(ErrInvalidRequest, "on_behalf_of is required")
	}
	if err := checkText("on_behalf_of", obo, 1024, true); err != nil || strings.ContainsAny(obo, "\n\t ") {
		return Ref{}, Errorf(ErrInvalidRequest, "on_behalf_of is malformed")
	}
	if iss, sub, ok := strings.Cut(obo, "#"); ok {
		for _, u := range s.users {
			if u == iss && sub != "" {
				return Ref{Issuer: iss, Subject: sub}, nil
			}
		}
		return Ref{}, Errorf(ErrInvalidRequest, "on_behalf_of names an issuer that is not a configured user issuer")
	}
	switch len(s.users) {
	case 0:
		return Ref{}, Errorf(ErrInvalidRequest, "no user issuer is configured")
	case 1:
		return Ref{Issuer: s.users[0], Subject: obo}, nil
	}
	return Ref{}, Errorf(ErrInvalidRequest, "several user issuers are configured: write on_behalf_of as <issuer URL>#<sub>")
}

// audiences validates a requested audience list against the catalog.
func (s *Service) audiences(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, Errorf(ErrInvalidRequest, "audiences is required")
	}
	if len(in) > maxAudiences {
		return nil, Errorf(ErrInvalidRequest, "more than %d audiences", maxAudiences)
	}
	seen := map[string]bool{}
	var out []string
	for _, a := range in {
		if _, ok := s.catalog.Audience(a); !ok {
			return nil, Errorf(ErrInvalidRequest, "unknown audience %q", a)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

func (s *Service) taskTTL(sec int64) (time.Duration, bool, error) {
	switch {
	case sec < 0:
		return 0, false, Errorf(ErrInvalidRequest, "ttl_seconds must be positive")
	case sec == 0:
		return min(defaultTaskTTL, s.taskMax), false, nil
	case sec > int64(s.taskMax/time.Second):
		return s.taskMax, true, nil
	}
	return time.Duration(sec) * time.Second, false, nil
}
