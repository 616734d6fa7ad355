package broker

import (
	"context"
	"errors"
	"strings"
	"time"
)

// CredentialKind is what a Credential is, and so which backend (if any)
// revokes it. It is not a principal's Kind.
type CredentialKind string

// Credential kinds: an access token (JWT), and those of Vault: the
// per-task token (recorded before any secret is read under it) and each
// lease read with it.
const (
	KindJWT        CredentialKind = "jwt"
	KindVaultToken CredentialKind = "vault-token"
	KindVaultLease CredentialKind = "vault"
)

// SecretRole maps a catalog action to a Vault dynamic-secret path.
type SecretRole struct {
	Name   string
	Action string
	Path   string
}

// Scope is the scope a task must have approved to read this role: the
// role's action over the role's path.
func (r SecretRole) Scope() (Scope, error) { return ParseScope(r.Action + ":" + r.Path) }

// TaskToken is a per-task Vault token as Errand keeps it: sealed, with its
// accessor (which revokes it and every lease under it).
type TaskToken struct {
	Accessor  string
	Sealed    []byte
	ExpiresAt time.Time
}

// Secret is a dynamic secret read under a task's token.
type Secret struct {
	LeaseID       string
	LeaseDuration time.Duration
	Data          map[string]any
}

// SecretIssuer applies the broker's decisions against Vault. It never
// decides policy. The broker never calls it while it holds a task's lock.
type SecretIssuer interface {
	// CreateTaskToken creates a non-orphan, non-renewable service token
	// that may read exactly the given roles' paths and lives ttl, marked
	// with the task and the intent recorded for it (VaultTaskToken).
	CreateTaskToken(ctx context.Context, taskID, intentID string, roles []SecretRole, ttl time.Duration) (TaskToken, error)
	// ReadSecret reads path with the sealed task token.
	ReadSecret(ctx context.Context, taskID string, t TaskToken, path string) (Secret, error)
	// RevokeLease revokes one lease at once (a lease that would outlive
	// its task is never handed out).
	RevokeLease(ctx context.Context, leaseID string) error
}

// States of a VaultIntent.
const (
	// IntentPending: recorded before Vault was asked for the token; the
	// outcome is not known yet.
	IntentPending = "pending"
	// IntentRecorded: the token was created and recorded.
	IntentRecorded = "recorded"
	// IntentAbandoned: the reconciler found no token of the intent in
	// Vault (the call failed, or the token is gone already).
	IntentAbandoned = "abandoned"
	// IntentOrphaned: the reconciler found the intent's token unrecorded,
	// recorded it and queued its revocation.
	IntentOrphaned = "orphaned"
)

// VaultIntent is committed before Errand asks Vault for a task token
// (intent before side effect), so that a token created just before a
// crash is never unknown: the reconciler finds the pending intent, looks
// for its token in Vault and revokes it.
type VaultIntent struct {
	ID         string
	TaskID     string
	State      string
	Accessor   string // once recorded or orphaned
	CreatedAt  time.Time
	ResolvedAt time.Time
}

// VaultTaskToken is a task token as Vault lists it: its accessor and the
// task and intent named in its metadata (never the token itself).
type VaultTaskToken struct {
	Accessor  string
	TaskID    string
	IntentID  string
	CreatedAt time.Time // by Vault's clock
}

// SecretTx is what issuing secrets needs of a transaction.
type SecretTx interface {
	// TaskToken returns the task's Vault token; ErrNotFound if none.
	TaskToken(ctx context.Context, taskID string) (TaskToken, error)
	InsertTaskToken(ctx context.Context, taskID string, t TaskToken) error
	InsertVaultIntent(ctx context.Context, in VaultIntent) error
	// VaultIntent reads one intent; ErrNotFound.
	VaultIntent(ctx context.Context, id string) (VaultIntent, error)
	// ResolveVaultIntent moves a pending intent to state, with accessor,
	// at `at`; false (and no change) when it is not pending any more.
	ResolveVaultIntent(ctx context.Context, id, state, accessor string, at time.Time) (bool, error)
	// StaleVaultIntents returns up to limit pending intents created
	// before `before`, oldest first.
	StaleVaultIntents(ctx context.Context, before time.Time, limit int) ([]VaultIntent, error)
	// VaultTokenRecorded reports whether a vault-token credential with
	// this accessor exists, revoked or not.
	VaultTokenRecorded(ctx context.Context, accessor string) (bool, error)
}

// IssueSecret reads a Vault dynamic secret for an approved task's agent.
// The role's scope must be approved, like a token's.
//
// No Vault call is made while the task's row is locked (one slow Vault
// answer must never hold a task, or a group commit waiting on it): each
// step decides in a short transaction, commits, calls Vault, and records
// the outcome in a new transaction that locks and checks the task again.
// The first secret of a task creates its Vault token: an intent is
// committed first, the token is created with the intent in its metadata,
// then recorded with its accessor; a crash in between leaves a pending
// intent that the reconciler (ReconcileVault) resolves. Every secret is
// read under the recorded token, so closing or expiring the task revokes
// it, and every lease with it.
func (s *Service) IssueSecret(ctx context.Context, p Principal, id, role string) (_ Secret, err error) {
	defer func() { err = s.refused(ctx, p, id, OpSecret, err) }()
	if p.Kind != KindAgent {
		return Secret{}, Errorf(ErrWrongPrincipalKind, "only agents read secrets")
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Secret{}, err
	}
	if s.secrets == nil {
		return Secret{}, Errorf(ErrNotFound, "Vault is not configured")
	}
	r, ok := s.roles[role]
	if !ok {
		return Secret{}, Errorf(ErrInvalidRequest, "unknown secret role %q", role)
	}
	want, err := r.Scope()
	if err != nil {
		return Secret{}, err
	}
	// The gate (budget, policies, step-up) runs twice: first to refuse
	// before Vault is called at all, then to decide again, and use a
	// step-up approval, in the transaction that records the lease.
	g := gateRequest{Op: OpSecret, Scopes: Scopes{want}, Audience: "vault"}

	// 1. Decide; find the task's token, or commit the intent to create one.
	var (
		tok     TaskToken
		intent  VaultIntent
		roles   []SecretRole
		ttl     time.Duration
		refusal error
	)
	err = s.store.InTx(ctx, func(tx Tx) error {
		intent, refusal = VaultIntent{}, nil
		t, now, err := s.lockActive(ctx, tx, p, id)
		if err != nil {
			return err
		}
		if err := s.catalog.CheckGrantable(Scopes{want}); err != nil {
			return err
		}
		if !t.ApprovedScopes.Covers(want) {
			return Errorf(ErrScopeExceedsApproval, "not approved: %s", want)
		}
		g.Tool, g.Dataset = t.Tool, t.Dataset
		if _, refusal, err = s.gate(ctx, tx, p, t, now, g); err != nil || refusal != nil {
			return err
		}
		tok, err = tx.TaskToken(ctx, t.ID)
		if err == nil && tok.ExpiresAt.After(now) {
			return nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if ttl = t.ExpiresAt.Sub(now).Truncate(time.Second); ttl < time.Second {
			return Errorf(ErrTaskNotActive, "the task expires in less than a second")
		}
		roles, _ = s.taskRoles(t)
		if intent.ID, err = s.newID("vti_"); err != nil {
			return err
		}
		intent.TaskID, intent.State, intent.CreatedAt = t.ID, IntentPending, now
		return tx.InsertVaultIntent(ctx, intent)
	})
	if err != nil {
		return Secret{}, err
	}
	if refusal != nil {
		return Secret{}, refusal
	}
	if intent.ID != "" {
		// 2. Create the token, outside any transaction. On failure the
		// intent stays pending: a timeout may hide a token Vault did
		// create, which the reconciler finds and revokes.
		created, err := s.secrets.CreateTaskToken(ctx, id, intent.ID, roles, ttl)
		if err != nil {
			return Secret{}, err
		}
		// 3. Record it, or, if the task ended (or got a token) meanwhile,
		// record it revoked and queue its revocation.
		if tok, err = s.recordTaskToken(ctx, p, id, intent, created, roles); err != nil {
			return Secret{}, err
		}
	}
	// 4. Read the secret, outside any transaction.
	sec, err := s.secrets.ReadSecret(ctx, id, tok, r.Path)
	if err != nil {
		if e := s.stillActive(ctx, id); CodeOf(e) == ErrTaskNotActive.Code {
			return Secret{}, e // the task ended meanwhile, and its token with it
		}
		return Secret{}, err
	}
	// 5. Record the lease before returning it; a lease that is refused
	// now is revoked at once (it lives under the task's recorded token in
	// any case, which dies with the task).
	var keep bool
	refusal = nil
	err = s.store.InTx(ctx, func(tx Tx) error {
		keep, refusal = false, nil
		t, now, err := s.lockActive(ctx, tx, p, id)
		if err != nil {
			return err
		}
		g.Consume = true
		stepUp, refused, err := s.gate(ctx, tx, p, t, now, g)
		if err != nil || refused != nil {
			refusal = refused
			return err
		}
		if now.Add(sec.LeaseDuration).After(t.ExpiresAt) {
			return nil // revoked below
		}
		c := Credential{ID: sec.LeaseID, TaskID: t.ID, Kind: KindVaultLease, Agent: t.Agent, User: t.User,
			Scopes: Scopes{want}, Audience: "vault", IssuedAt: now, ExpiresAt: now.Add(sec.LeaseDuration), StepUpID: stepUp}
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		keep = true
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventCredentialIssued, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"kind": KindVaultLease, "lease_id_sha256": HashID(sec.LeaseID), "role": r.Name,
				"lease_duration": int64(sec.LeaseDuration / time.Second), "expires_at": c.ExpiresAt, "step_up_id": stepUp})})
	})
	if keep && err == nil {
		return sec, nil
	}
	rerr := s.secrets.RevokeLease(context.WithoutCancel(ctx), sec.LeaseID)
	switch {
	case err != nil:
		return Secret{}, err
	case refusal != nil:
		return Secret{}, refusal
	case rerr != nil:
		return Secret{}, rerr
	}
	return Secret{}, Errorf(ErrTaskNotActive, "the lease (%s) would outlive the task; it was revoked", sec.LeaseDuration)
}

// recordTaskToken records a task token just created for intent. If the
// task is no longer active, or another request recorded a token for it
// meanwhile, the new token is recorded revoked and its revocation queued
// (the outbox revokes it in Vault) and, for an ended task, the refusal is
// returned after the commit.
func (s *Service) recordTaskToken(ctx context.Context, p Principal, id string, intent VaultIntent, created TaskToken, roles []SecretRole) (TaskToken, error) {
	var (
		use     TaskToken
		refusal error
	)
	err := s.store.InTx(ctx, func(tx Tx) error {
		use, refusal = created, nil
		t, err := tx.LockTask(ctx, id)
		if err != nil {
			return err
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		ok, err := tx.ResolveVaultIntent(ctx, intent.ID, IntentRecorded, created.Accessor, now)
		if err != nil {
			return err
		}
		if !ok {
			// Only the reconciler resolves someone else's intent, after its
			// grace: it has recorded this token and queued its revocation.
			return Errorf(ErrUnavailable, "the Vault token took too long to record; it is being revoked")
		}
		_, scopes := s.taskRoles(t)
		c := Credential{ID: created.Accessor, TaskID: t.ID, Kind: KindVaultToken, Agent: t.Agent, User: t.User,
			Scopes: scopes, Audience: "vault", IssuedAt: now, ExpiresAt: created.ExpiresAt}
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		events := []AuditEvent{{Time: now, Type: EventCredentialIssued, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"kind": KindVaultToken, "accessor_sha256": HashID(created.Accessor),
				"expires_at": created.ExpiresAt, "roles": roleNames(roles), "intent_id": intent.ID})}}
		reason := ""
		if status := t.EffectiveStatus(now); status != StatusApproved {
			reason, refusal = "task_ended", Errorf(ErrTaskNotActive, "the task is %s", status)
		} else if err := s.notSuspended(ctx, tx, t.Agent); err != nil {
			reason, refusal = "task_ended", err
		} else if cur, err := tx.TaskToken(ctx, t.ID); err == nil && cur.ExpiresAt.After(now) {
			reason, use = "superseded", cur // a concurrent first secret won
		} else if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if reason == "" {
			if err := tx.InsertTaskToken(ctx, t.ID, created); err != nil {
				return err
			}
			return tx.AppendAudit(ctx, events...)
		}
		if err := s.revokeUnused(ctx, tx, &t, created.Accessor, now); err != nil {
			return err
		}
		events = append(events, AuditEvent{Time: now, Type: EventCredentialRevoked, Actor: SystemActor, TaskID: t.ID,
			Detail: detail(map[string]any{"kind": KindVaultToken, "jti_sha256": HashID(created.Accessor), "reason": reason})})
		return tx.AppendAudit(ctx, events...)
	})
	if err != nil {
		return TaskToken{}, err
	}
	if refusal != nil {
		return TaskToken{}, refusal
	}
	return use, nil
}

// revokeUnused revokes the just-recorded vault-token credential accessor
// of task t and queues its revocation in Vault. An ended task reads
// revoking until Vault confirms; an active one is left as it is (its
// status must not change), and a failure alarms like any other.
func (s *Service) revokeUnused(ctx context.Context, tx Tx, t *Task, accessor string, now time.Time) error {
	if _, err := tx.RevokeCredential(ctx, accessor, now); err != nil {
		return err
	}
	if t.Status != StatusApproved && !t.Revoking {
		t.Revoking = true
		t.Version++
		if err := tx.UpdateTask(ctx, *t); err != nil {
			return err
		}
	}
	return tx.Enqueue(ctx, []OutboxItem{{TaskID: t.ID, Kind: KindVaultToken, Ref: accessor, CreatedAt: now, NextAttemptAt: now}})
}

// stillActive reads whether the task is still approved; the refusal if not.
func (s *Service) stillActive(ctx context.Context, id string) error {
	t, err := s.store.Task(ctx, id)
	if err != nil {
		return err
	}
	now, err := s.readNow(ctx)
	if err != nil {
		return err
	}
	if st := t.EffectiveStatus(now); st != StatusApproved {
		return Errorf(ErrTaskNotActive, "the task is %s", st)
	}
	return nil
}

// taskRoles are the roles a task's token may read: every role whose scope
// the task has approved, so that one token (one accessor) covers all of
// the task's leases.
func (s *Service) taskRoles(t Task) ([]SecretRole, Scopes) {
	var (
		roles  []SecretRole
		scopes Scopes
	)
	for _, rr := range s.roles {
		if sc, err := rr.Scope(); err == nil && t.ApprovedScopes.Covers(sc) && s.catalog.CheckGrantable(Scopes{sc}) == nil {
			roles, scopes = append(roles, rr), append(scopes, sc)
		}
	}
	return roles, scopes
}

// lockActive locks the task and checks that p is its agent and that it is
// approved and unexpired now.
func (s *Service) lockActive(ctx context.Context, tx Tx, p Principal, id string) (Task, time.Time, error) {
	t, now, err := s.lockForIssue(ctx, tx, p, id)
	if err != nil {
		return Task{}, time.Time{}, err
	}
	if st := t.EffectiveStatus(now); st != StatusApproved {
		return Task{}, time.Time{}, Errorf(ErrTaskNotActive, "the task is %s", st)
	}
	return t, now, nil
}

func roleNames(rs []SecretRole) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return strings.Join(names, ",")
}
