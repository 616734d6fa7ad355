package broker

import (
	"context"
	"strings"
	"time"
)

// ApproveRequest narrows a task at approval. Nil Scopes or Audiences mean
// "as requested"; TTLSeconds 0 means "as requested".
type ApproveRequest struct {
	Scopes     []string
	Audiences  []string
	TTLSeconds int64
	// Version and Digest, when set, bind the approval to the task as the
	// approver saw it.
	Version int
	Digest  string
}

// Approve approves a pending task. Only the task's user may, and only with
// scopes inside both the request and the user's grants (invariants 1–3, 5).
func (s *Service) Approve(ctx context.Context, p Principal, id string, req ApproveRequest) (_ Task, err error) {
	defer func() { err = s.refused(ctx, p, id, OpApprove, err) }()
	if p.Kind != KindUser {
		return Task{}, Errorf(ErrApprovalForbidden, "only the task's user may approve it; caller is of kind %s", p.Kind)
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, err
	}
	var out Task
	err = s.store.InTx(ctx, func(tx Tx) error {
		t, now, err := s.lockToDecide(ctx, tx, p, id, req.Version, req.Digest)
		if err != nil {
			return err
		}
		// Checked under the task's lock: a suspension that commits after
		// this read waits for the lock, then revokes what this approves.
		if err := s.notSuspended(ctx, tx, t.Agent); err != nil {
			return err
		}
		approved := t.Scopes
		if req.Scopes != nil {
			if approved, err = ParseScopes(req.Scopes); err != nil {
				return err
			}
			approved = s.catalog.Canonical(approved, t.Audiences...)
		}
		if err := s.catalog.CheckGrantable(approved); err != nil {
			return err
		}
		if miss := t.Scopes.Uncovered(approved); len(miss) > 0 {
			return Errorf(ErrScopeExceedsRequest, "not requested: %s", strings.Join(miss.Strings(), " "))
		}
		auds := t.Audiences
		if req.Audiences != nil {
			if auds, err = s.audiences(req.Audiences); err != nil {
				return err
			}
			for _, a := range auds {
				if !contains(t.Audiences, a) {
					return Errorf(ErrScopeExceedsRequest, "audience %q was not requested", a)
				}
			}
		}
		if miss := s.catalog.GrantsFor(p).Uncovered(approved); len(miss) > 0 {
			return Errorf(ErrScopeExceedsGrant, "beyond the approver's grants: %s", strings.Join(miss.Strings(), " "))
		}
		for _, sc := range approved {
			for _, a := range auds {
				if !s.catalog.Granted(p, sc, a) {
					return Errorf(ErrScopeExceedsGrant, "no grant of the approver covers %s for audience %q", sc, a)
				}
			}
		}
		if req.TTLSeconds < 0 {
			return Errorf(ErrInvalidRequest, "ttl_seconds must be positive")
		}
		d := s.decideAll(PolicyRequest{Operation: OpApprove, TaskID: t.ID, Agent: t.Agent, User: t.User,
			Groups: p.Groups, Tool: t.Tool, Dataset: t.Dataset, Time: now, DPoP: t.RequireDPoP}, approved, auds)
		if d.Effect == EffectDeny {
			return policyDenied(d)
		}
		if req.TTLSeconds > 0 {
			if exp := now.Add(time.Duration(min(req.TTLSeconds, int64(s.taskMax/time.Second))) * time.Second); exp.Before(t.ExpiresAt) {
				t.ExpiresAt = exp
			}
		}
		t.Status, t.ApprovedScopes, t.ApprovedAudiences, t.ApprovedAt = StatusApproved, approved, auds, now
		t.UserGroups = append([]string{}, p.Groups...)
		t.Version++
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		out = t
		if err := s.notify(ctx, tx, s.taskNotice(EventTaskApproved, t, now, ActorOf(p))); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventTaskApproved, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{
				"approved_scopes": approved.Strings(), "approved_audiences": auds,
				"expires_at": t.ExpiresAt, "version": t.Version,
			}),
		})
	})
	return out, err
}

// decidable checks that p may approve or deny t now, as the version or
// lockToDecide locks task id and the time of a decision on it by its
// user p, and checks that p may decide it now (decidable).
func (s *Service) lockToDecide(ctx context.Context, tx Tx, p Principal, id string, version int, digest string) (Task, time.Time, error) {
	t, err := tx.LockTask(ctx, id)
	if err != nil {
		return Task{}, time.Time{}, err
	}
	now, err := s.txNow(ctx, tx)
	if err != nil {
		return Task{}, time.Time{}, err
	}
	return t, now, s.decidable(p, t, now, version, digest)
}

// digest the decider saw, if named.
func (s *Service) decidable(p Principal, t Task, now time.Time, version int, digest string) error {
	if !p.Is(KindUser, t.User) {
		return Errorf(ErrApprovalForbidden, "only the task's user may approve or deny it")
	}
	switch st := t.EffectiveStatus(now); st {
	case StatusPending:
		if version != 0 && version != t.Version {
			return Errorf(ErrTaskChanged, "the task is at version %d, not %d", t.Version, version)
		}
		if digest != "" && digest != t.Digest() {
			return Errorf(ErrTaskChanged, "the task's digest is no longer %s", digest)
		}
		return nil
	case StatusApproved:
		return Errorf(ErrTaskImmutable, "the task is already approved; a wider need is a new task")
	default:
		return Errorf(ErrTaskNotActive, "the task is %s", st)
	}
}

// DenyRequest is a denial, optionally bound like an approval.
type DenyRequest struct {
	Reason  string
	Version int
	Digest  string
}

// Deny denies a pending task. Only the task's user may.
func (s *Service) Deny(ctx context.Context, p Principal, id string, req DenyRequest) (_ Task, err error) {
	defer func() { err = s.refused(ctx, p, id, OpDeny, err) }()
	reason := req.Reason
	if p.Kind != KindUser {
		return Task{}, Errorf(ErrApprovalForbidden, "only the task's user may deny it; caller is of kind %s", p.Kind)
	}
	if err := checkText("reason", reason, maxReasonBytes, false); err != nil {
		return Task{}, err
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, err
	}
	var out Task
	err = s.store.InTx(ctx, func(tx Tx) error {
		t, now, err := s.lockToDecide(ctx, tx, p, id, req.Version, req.Digest)
		if err != nil {
			return err
		}
		t.Status, t.DenyReason, t.ClosedAt = StatusDenied, reason, now
		t.Version++
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		out = t
		n := s.taskNotice(EventTaskDenied, t, now, ActorOf(p))
		n.Reason = reason
		if err := s.notify(ctx, tx, n); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventTaskDenied, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"reason": reason, "version": t.Version}),
		})
	})
	return out, err
}
