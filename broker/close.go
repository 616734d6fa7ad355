package broker

import (
	"context"
)

// Close closes an approved task for its agent or its user and revokes every
// credential of it in the same transaction (invariant 8).
func (s *Service) Close(ctx context.Context, p Principal, id string) (_ Task, _ int, err error) {
	defer func() { err = s.refused(ctx, p, id, OpClose, err) }()
	if p.Kind != KindAgent && p.Kind != KindUser {
		return Task{}, 0, Errorf(ErrWrongPrincipalKind, "only the task's agent or user may close it")
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, 0, err
	}
	var (
		out     Task
		revoked int
		revs    []Revocation
	)
	err = s.store.InTx(ctx, func(tx Tx) error {
		t, err := tx.LockTask(ctx, id)
		if err != nil {
			return err
		}
		if !p.Is(KindAgent, t.Agent) && !p.Is(KindUser, t.User) {
			return Errorf(ErrNotTaskParty, "caller is neither the task's agent nor its user")
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if st := t.EffectiveStatus(now); st != StatusApproved {
			return Errorf(ErrTaskNotActive, "the task is %s", st)
		}
		n, r, err := s.endTask(ctx, tx, &t, StatusClosed, now, ActorOf(p), "task_closed")
		if err != nil {
			return err
		}
		out, revoked, revs = t, n, r
		return nil
	})
	if err != nil {
		return Task{}, 0, err
	}
	return out, revoked, s.revoked(ctx, revs)
}
