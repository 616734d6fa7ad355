package broker

import (
	"context"
)

// GetTask returns a task to its agent, its user or an auditor.
func (s *Service) GetTask(ctx context.Context, p Principal, id string) (_ Task, err error) {
	defer func() { err = s.refused(ctx, p, id, OpReadTask, err) }()
	if p.Kind == KindResource {
		return Task{}, Errorf(ErrWrongPrincipalKind, "resource servers do not read tasks")
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, err
	}
	t, err := s.store.Task(ctx, id)
	if err != nil {
		return Task{}, err
	}
	if !p.Is(KindAgent, t.Agent) && !p.Is(KindUser, t.User) && !(p.Kind == KindUser && p.Auditor) {
		return Task{}, Errorf(ErrNotTaskParty, "caller is neither the task's agent nor its user")
	}
	return t, nil
}

// ListTasks returns the caller's tasks (as agent or as user) with the given
// effective status, oldest first, and whether more remain.
func (s *Service) ListTasks(ctx context.Context, p Principal, status Status, afterSeq int64, limit int) (_ []Task, _ bool, err error) {
	defer func() { err = s.refused(ctx, p, "", OpListTasks, err) }()
	if status != "" && !status.Valid() {
		return nil, false, Errorf(ErrInvalidRequest, "unknown status %q", status)
	}
	now, err := s.readNow(ctx)
	if err != nil {
		return nil, false, err
	}
	f := TaskFilter{Status: status, Now: now, AfterSeq: afterSeq, Limit: limit}
	if f.User, f.Agent, err = listOwner(p, "tasks"); err != nil {
		return nil, false, err
	}
	ts, err := s.store.ListTasks(ctx, f)
	if err != nil {
		return nil, false, err
	}
	ts, more := page(ts, limit)
	return ts, more, nil
}

// listOwner is whose list p asks for: a user's (as on_behalf_of) or an
// agent's; other kinds list nothing.
func listOwner(p Principal, what string) (user, agent *Ref, err error) {
	ref := p.Ref()
	switch p.Kind {
	case KindUser:
		return &ref, nil, nil
	case KindAgent:
		return nil, &ref, nil
	}
	return nil, nil, Errorf(ErrWrongPrincipalKind, "only agents and users list %s", what)
}

// page cuts a store's answer of at most limit+1 rows to limit, and says
// whether more remain.
func page[T any](rows []T, limit int) ([]T, bool) {
	if len(rows) > limit {
		return rows[:limit], true
	}
	return rows, false
}
