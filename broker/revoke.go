package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// endTask moves an approved task to a terminal status and, in the same
// transaction, revokes every credential of it, appends the events, adds
// the credentials to the revocation feed and queues the revocations a
// backend must carry out (invariant 8). It is the one way a live task ends.
func (s *Service) endTask(ctx context.Context, tx Tx, t *Task, status Status, now time.Time, actor Actor, reason string) (int, []Revocation, error) {
	t.Status, t.ClosedAt = status, now
	t.Version++
	creds, err := tx.RevokeCredentials(ctx, t.ID, now)
	if err != nil {
		return 0, nil, err
	}
	var outbox []OutboxItem
	for _, c := range creds {
		if s.queuesBackend(c) {
			outbox = append(outbox, OutboxItem{TaskID: t.ID, Kind: c.Kind, Ref: c.ID, CreatedAt: now, NextAttemptAt: now})
		}
	}
	t.Revoking = t.Revoking || len(outbox) > 0
	if err := tx.UpdateTask(ctx, *t); err != nil {
		return 0, nil, err
	}
	typ := map[Status]string{StatusClosed: EventTaskClosed, StatusExpired: EventTaskExpired, StatusRevoked: EventTaskRevoked}[status]
	events := make([]AuditEvent, 0, len(creds)+1)
	events = append(events, AuditEvent{
		Time: now, Type: typ, Actor: actor, TaskID: t.ID,
		Detail: detail(map[string]any{"revoked": len(creds), "version": t.Version, "reason": reason, "backend_revocations": len(outbox)}),
	})
	for _, c := range creds {
		events = append(events, AuditEvent{
			Time: now, Type: EventCredentialRevoked, Actor: actor, TaskID: t.ID,
			Detail: detail(map[string]any{"kind": c.Kind, "jti_sha256": HashID(c.ID), "reason": reason}),
		})
	}
	if err := tx.AppendAudit(ctx, events...); err != nil {
		return 0, nil, err
	}
	// The feed is for resource servers, which see access tokens only; a
	// Vault accessor or lease id never leaves for them.
	var revs []Revocation
	for i, c := range creds {
		if c.Kind == KindJWT {
			revs = append(revs, Revocation{Seq: events[i+1].Seq, JTI: c.ID, TaskID: t.ID, RevokedAt: now, Reason: reason})
		}
	}
	if err := tx.InsertRevocations(ctx, revs); err != nil {
		return 0, nil, err
	}
	if err := tx.Enqueue(ctx, outbox); err != nil {
		return 0, nil, err
	}
	if status == StatusClosed {
		n := s.taskNotice(EventTaskClosed, *t, now, actor)
		n.Revoked, n.Reason = len(creds), reason
		if err := s.notify(ctx, tx, n); err != nil {
			return 0, nil, err
		}
	}
	return len(creds), revs, nil
}

// denyPending ends a pending task that may no longer be approved.
func (s *Service) denyPending(ctx context.Context, tx Tx, t *Task, now time.Time, actor Actor, reason string) error {
	t.Status, t.DenyReason, t.ClosedAt = StatusDenied, reason, now
	t.Version++
	if err := tx.UpdateTask(ctx, *t); err != nil {
		return err
	}
	n := s.taskNotice(EventTaskDenied, *t, now, actor)
	n.Reason = reason
	if err := s.notify(ctx, tx, n); err != nil {
		return err
	}
	return tx.AppendAudit(ctx, AuditEvent{
		Time: now, Type: EventTaskDenied, Actor: actor, TaskID: t.ID,
		Detail: detail(map[string]any{"reason": reason, "version": t.Version}),
	})
}

// ExpireDue records the expiry of up to limit tasks whose time is up:
// approved tasks become expired with their credentials revoked, pending
// ones denied. Replicas share the work without doing it twice (the store
// skips rows another transaction holds). It returns how many it ended.
func (s *Service) ExpireDue(ctx context.Context, limit int) (int, error) {
	n := 0
	err := s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		due, err := tx.LockDue(ctx, now, limit)
		if err != nil {
			return err
		}
		for i := range due {
			t := &due[i]
			switch t.Status {
			case StatusPending:
				err = s.denyPending(ctx, tx, t, now, SystemActor, "approval window elapsed")
			case StatusApproved:
				_, _, err = s.endTask(ctx, tx, t, StatusExpired, now, SystemActor, "task_expired")
			}
			if err != nil {
				return err
			}
		}
		n = len(due)
		return nil
	})
	return n, err
}

// RevokeToken is RFC 7009 for the holder: the token's agent or user
// revokes that one credential. Unknown, invalid and foreign tokens change
// nothing and are not errors (RFC 7009 §2.2), so the answer reveals nothing.
func (s *Service) RevokeToken(ctx context.Context, p Principal, raw string) (err error) {
	defer func() { err = s.refused(ctx, p, "", OpRevoke, err) }()
	if p.Kind != KindAgent && p.Kind != KindUser {
		return Errorf(ErrWrongPrincipalKind, "only a token's agent or user may revoke it")
	}
	jti, err := s.revocableJTI(ctx, raw)
	if CodeOf(err) == ErrInvalidToken.Code {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := s.store.Credential(ctx, jti)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !p.Is(KindAgent, c.Agent) && !p.Is(KindUser, c.User) {
		return nil
	}
	var revs []Revocation
	err = s.store.InTx(ctx, func(tx Tx) error {
		revs = nil
		t, err := tx.LockTask(ctx, c.TaskID)
		if err != nil {
			return err
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		c, err := tx.RevokeCredential(ctx, c.ID, now)
		if errors.Is(err, ErrNotFound) {
			return nil // already revoked
		}
		if err != nil {
			return err
		}
		reason := "revoked_by_" + string(p.Kind)
		evs := []AuditEvent{{Time: now, Type: EventCredentialRevoked, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"kind": c.Kind, "jti_sha256": HashID(c.ID), "reason": reason})}}
		if s.queuesBackend(c) {
			if !t.Revoking {
				t.Revoking = true
				t.Version++
				if err := tx.UpdateTask(ctx, t); err != nil {
					return err
				}
			}
			if err := tx.Enqueue(ctx, []OutboxItem{{TaskID: t.ID, Kind: c.Kind, Ref: c.ID, CreatedAt: now, NextAttemptAt: now}}); err != nil {
				return err
			}
		}
		if err := tx.AppendAudit(ctx, evs...); err != nil {
			return err
		}
		if c.Kind != KindJWT {
			return nil // the feed is for resource servers, which see access tokens only
		}
		revs = []Revocation{{Seq: evs[0].Seq, JTI: c.ID, TaskID: t.ID, RevokedAt: now, Reason: reason}}
		return tx.InsertRevocations(ctx, revs)
	})
	if err != nil {
		return err
	}
	return s.revoked(ctx, revs)
}

// revocableJTI is the jti of raw, an access token or an ID-JAG that
// Errand signed.
func (s *Service) revocableJTI(ctx context.Context, raw string) (string, error) {
	at, err := s.tokens.Verify(ctx, raw)
	if err == nil {
		return at.JTI, nil
	}
	if g, ok := s.tokens.(IDJAGSigner); ok && len(s.idjag) > 0 && CodeOf(err) == ErrInvalidToken.Code {
		return g.IDJAGOf(ctx, raw)
	}
	return "", err
}

// revoked returns once every replica answering from memory has applied
// the revocations (see StatusCache); without a cache, the database
// answers every introspection and the commit was enough.
func (s *Service) revoked(ctx context.Context, revs []Revocation) error {
	if s.cache == nil || len(revs) == 0 {
		return nil
	}
	var seq int64
	jtis := make([]string, 0, len(revs))
	for _, r := range revs {
		seq = max(seq, r.Seq)
		jtis = append(jtis, r.JTI)
	}
	return s.cache.Revoked(context.WithoutCancel(ctx), seq, jtis)
}

// ParseAgent reads "<issuer>#<sub>", or a bare SPIFFE ID.
func ParseAgent(s string) (Ref, error) {
	if r, ok := SPIFFERef(s); ok && len(s) <= 1024 && !strings.ContainsAny(s, "\x00\n\r\t ") {
		return r, nil
	}
	iss, sub, ok := strings.Cut(s, "#")
	if !ok || iss == "" || sub == "" || len(s) > 1024 || strings.ContainsAny(s, "\x00\n\r\t ") {
		return Ref{}, Errorf(ErrInvalidRequest, "agent must be written <issuer URL>#<sub>")
	}
	return Ref{Issuer: iss, Subject: sub}, nil
}

// configuredAgent reads "<issuer>#<sub>" naming an agent of a configured
// agent issuer. The issuer must be exactly the URL its tokens carry as
// iss (the verifier matches iss exactly): a trailing slash, an unknown
// issuer or a user issuer names no agent, and a kill switch that answered
// success for it would leave the real agent running.
func (s *Service) configuredAgent(agent string) (Ref, error) {
	a, err := ParseAgent(agent)
	if err != nil {
		return Ref{}, err
	}
	if !contains(s.names.Agents, a.Issuer) {
		return Ref{}, Errorf(ErrInvalidRequest, "agent must name an issuer configured with kind agent, exactly as its tokens' iss")
	}
	return a, nil
}

// SuspendAgent is the kill switch: an admin revokes every task and
// credential of one agent and refuses its new tasks until lifted.
func (s *Service) SuspendAgent(ctx context.Context, p Principal, agent, reason string) (tasks, creds int, err error) {
	defer func() { err = s.refused(ctx, p, "", OpSuspend, err) }()
	if p.Kind != KindUser || !p.Admin {
		return 0, 0, Errorf(ErrWrongPrincipalKind, "only admins may suspend an agent")
	}
	a, err := s.configuredAgent(agent)
	if err != nil {
		return 0, 0, err
	}
	if err := checkText("reason", reason, maxReasonBytes, true); err != nil {
		return 0, 0, err
	}
	var revs []Revocation
	err = s.store.InTx(ctx, func(tx Tx) error {
		tasks, creds, revs = 0, 0, nil
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		// The agent's lock orders the suspension with its creates: a
		// create that commits first is locked below and denied, one that
		// waits reads the suspension.
		if _, _, err := tx.LockAgent(ctx, a, now, 0); err != nil {
			return err
		}
		if err := tx.SetSuspended(ctx, a, reason, ActorOf(p).Issuer+"#"+p.Subject, now); err != nil {
			return err
		}
		open, err := tx.LockOpenTasks(ctx, a)
		if err != nil {
			return err
		}
		for i := range open {
			t := &open[i]
			switch t.EffectiveStatus(now) {
			case StatusPending:
				err = s.denyPending(ctx, tx, t, now, ActorOf(p), "agent suspended")
			case StatusApproved, StatusExpired:
				status, actor, why := StatusRevoked, ActorOf(p), "agent_suspended"
				if t.EffectiveStatus(now) == StatusExpired {
					status, actor, why = StatusExpired, SystemActor, "task_expired"
				}
				n, r, e := s.endTask(ctx, tx, t, status, now, actor, why)
				creds, revs, err = creds+n, append(revs, r...), e
			case StatusDenied:
				err = s.denyPending(ctx, tx, t, now, SystemActor, "approval window elapsed")
			}
			if err != nil {
				return err
			}
		}
		tasks = len(open)
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventAgentSuspended, Actor: ActorOf(p),
			Detail: detail(map[string]any{"agent": a.String(), "reason": reason, "tasks": tasks, "revoked": creds})})
	})
	if err != nil {
		return 0, 0, err
	}
	return tasks, creds, s.revoked(ctx, revs)
}

// UnsuspendAgent lifts a suspension.
func (s *Service) UnsuspendAgent(ctx context.Context, p Principal, agent string) (err error) {
	defer func() { err = s.refused(ctx, p, "", OpUnsuspend, err) }()
	if p.Kind != KindUser || !p.Admin {
		return Errorf(ErrWrongPrincipalKind, "only admins may lift a suspension")
	}
	a, err := s.configuredAgent(agent)
	if err != nil {
		return err
	}
	return s.store.InTx(ctx, func(tx Tx) error {
		ok, err := tx.ClearSuspended(ctx, a)
		if err != nil {
			return err
		}
		if !ok {
			return Errorf(ErrNotFound, "the agent is not suspended")
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventAgentUnsuspended, Actor: ActorOf(p),
			Detail: detail(map[string]any{"agent": a.String()})})
	})
}

// FeedPage is a page of the revocation feed as one resource server sees
// it: the entries of the audiences it may introspect, the position read up
// to (entries of other audiences are passed over, not shown), and whether
// the page was full, so more may follow at once.
type FeedPage struct {
	Revocations []Revocation
	Next        int64
	Full        bool
}

// Revocations returns the feed to a resource server: only the revocations
// of audiences it may introspect (see Audience.Introspectors), so that
// the feed tells no resource server about another's tokens.
func (s *Service) Revocations(ctx context.Context, p Principal, afterSeq int64, limit int) (_ FeedPage, err error) {
	defer func() { err = s.refused(ctx, p, "", OpReadFeed, err) }()
	if p.Kind != KindResource {
		return FeedPage{}, Errorf(ErrWrongPrincipalKind, "only resource servers read the revocation feed")
	}
	if limit < 1 {
		return FeedPage{}, Errorf(ErrInvalidRequest, "limit must be positive")
	}
	revs, err := s.store.Revocations(ctx, afterSeq, limit)
	if err != nil {
		return FeedPage{}, err
	}
	return s.VisibleFeed(p, afterSeq, revs, len(revs) == limit), nil
}

// VisibleFeed is what p may see of revs, raw feed entries read after
// afterSeq (full when the read filled its limit): the revocations of
// audiences p may introspect, and Next past every entry of revs, the hidden
// ones too. Revocations and the revocation streams, which read the feed
// from the replica's one reader in memory, both show the feed through it
// and nothing else.
func (s *Service) VisibleFeed(p Principal, afterSeq int64, revs []Revocation, full bool) FeedPage {
	page := FeedPage{Next: afterSeq, Full: full}
	for _, r := range revs {
		page.Next = r.Seq
		if au, ok := s.catalog.Audience(r.Audience); ok && introspector(au, p) {
			page.Revocations = append(page.Revocations, r)
		}
	}
	return page
}

// RecordBackendFailure raises backend.revoke_failed for an outbox item that
// has not been confirmed within the alarm time; it is raised once.
func (s *Service) RecordBackendFailure(ctx context.Context, item OutboxItem, cause error) error {
	return s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		// The task is locked before the outbox row, in the order that
		// CompleteOutbox takes them, so that the two never deadlock.
		var t Task
		notifying := s.Notifies(EventBackendRevokeFail)
		if notifying {
			if t, err = tx.LockTask(ctx, item.TaskID); err != nil {
				return err
			}
		}
		if err := tx.MarkAlarmed(ctx, item.ID, now); err != nil {
			return err
		}
		if notifying {
			n := s.taskNotice(EventBackendRevokeFail, t, now, SystemActor)
			n.BackendKind, n.BackendAttempts, n.BackendSince = string(item.Kind), item.Attempts, item.CreatedAt
			if err := s.notify(ctx, tx, n); err != nil {
				return err
			}
		}
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventBackendRevokeFail, Actor: SystemActor, TaskID: item.TaskID,
			Detail: detail(map[string]any{"kind": item.Kind, "ref_sha256": HashID(item.Ref), "attempts": item.Attempts,
				"since": item.CreatedAt, "error": fmt.Sprint(cause)})})
	})
}
