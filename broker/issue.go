package broker

import (
	"context"
	"time"
)

// lockForIssue locks task id for an issuance by agent p: the task is p's,
// p is not suspended, and now is the decision's time (all read under the
// task's lock, together).
func (s *Service) lockForIssue(ctx context.Context, tx Tx, p Principal, id string) (Task, time.Time, error) {
	t, suspended, now, err := tx.LockTaskChecked(ctx, id)
	switch {
	case err != nil:
		return Task{}, time.Time{}, err
	case !p.Is(KindAgent, t.Agent):
		return Task{}, time.Time{}, Errorf(ErrNotTaskParty, "the task belongs to another agent")
	case suspended:
		return Task{}, time.Time{}, Errorf(ErrAgentSuspended, "the agent is suspended")
	}
	return t, now.UTC().Truncate(time.Microsecond), nil
}

// notSuspended refuses an agent under the kill switch, reading inside tx
// (a read on another connection could wait forever for the one tx holds).
func (s *Service) notSuspended(ctx context.Context, tx Tx, agent Ref) error {
	suspended, err := tx.IsSuspended(ctx, agent)
	if err != nil {
		return err
	}
	if suspended {
		return Errorf(ErrAgentSuspended, "the agent is suspended")
	}
	return nil
}
