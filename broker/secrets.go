package broker

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Credential kinds of Vault: the per-task token (the intent, recorded
// before any secret is read under it) and each lease read with it.
const (
	KindVaultToken = "vault-token"
	KindVaultLease = "vault"
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
// decides policy.
type SecretIssuer interface {
	// CreateTaskToken creates a non-orphan, non-renewable service token
	// that may read exactly the given roles' paths and lives ttl.
	CreateTaskToken(ctx context.Context, taskID string, roles []SecretRole, ttl time.Duration) (TaskToken, error)
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
// The role's scope must be approved, like a token's. The first secret of a
// task creates its Vault token; the intent (task, accessor) commits before
// any secret is read under it, so a crash never leaves an unknown lease:
// closing or expiring the task revokes the token, and every lease with it.
func (s *Service) IssueSecret(ctx context.Context, p Principal, id, role string) (Secret, error) {
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
	// The gate (budget, policies, step-up) runs in both phases: first to
	// refuse before Vault is called at all, then to decide again, and use
	// a step-up approval, in the transaction that records the lease.
	g := gateRequest{Op: OpSecret, Scopes: Scopes{want}, Audience: "vault"}
	// Phase 1: decide under the task's lock, and record the token first.
	var (
		tok     TaskToken
		refusal error
	)
	err = s.store.InTx(ctx, func(tx Tx) error {
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
		st, ok := tx.(SecretTx)
		if !ok {
			return errors.New("broker: the store cannot keep Vault tokens")
		}
		tok, err = st.TaskToken(ctx, t.ID)
		if err == nil && tok.ExpiresAt.After(now) {
			return nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		// The token may read every role this task has approved, so that one
		// token (one accessor) covers all of the task's leases.
		var roles []SecretRole
		for _, rr := range s.roles {
			if sc, err := rr.Scope(); err == nil && t.ApprovedScopes.Covers(sc) && s.catalog.CheckGrantable(Scopes{sc}) == nil {
				roles = append(roles, rr)
			}
		}
		ttl := t.ExpiresAt.Sub(now).Truncate(time.Second)
		if ttl < time.Second {
			return Errorf(ErrTaskNotActive, "the task expires in less than a second")
		}
		if tok, err = s.secrets.CreateTaskToken(ctx, t.ID, roles, ttl); err != nil {
			return err
		}
		if err := st.InsertTaskToken(ctx, t.ID, tok); err != nil {
			return err
		}
		c := Credential{JTI: tok.Accessor, TaskID: t.ID, Kind: KindVaultToken, Agent: t.Agent, User: t.User,
			Scopes: Scopes{want}, Audience: "vault", IssuedAt: now, ExpiresAt: tok.ExpiresAt}
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventCredentialIssued, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"kind": KindVaultToken, "accessor_sha256": HashID(tok.Accessor), "expires_at": tok.ExpiresAt,
				"roles": roleNames(roles)})})
	})
	if err != nil {
		return Secret{}, err
	}
	if refusal != nil {
		return Secret{}, refusal
	}
	// Phase 2: read the secret under the recorded token, and record the
	// lease before returning it.
	var out Secret
	err = s.store.InTx(ctx, func(tx Tx) error {
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
		sec, err := s.secrets.ReadSecret(ctx, t.ID, tok, r.Path)
		if err != nil {
			return err
		}
		if now.Add(sec.LeaseDuration).After(t.ExpiresAt) {
			if rerr := s.secrets.RevokeLease(ctx, sec.LeaseID); rerr != nil {
				return rerr
			}
			return Errorf(ErrTaskNotActive, "the lease (%s) would outlive the task; it was revoked", sec.LeaseDuration)
		}
		c := Credential{JTI: sec.LeaseID, TaskID: t.ID, Kind: KindVaultLease, Agent: t.Agent, User: t.User,
			Scopes: Scopes{want}, Audience: "vault", IssuedAt: now, ExpiresAt: now.Add(sec.LeaseDuration), StepUpID: stepUp}
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		out = sec
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventCredentialIssued, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"kind": KindVaultLease, "lease_id_sha256": HashID(sec.LeaseID), "role": r.Name,
				"lease_duration": int64(sec.LeaseDuration / time.Second), "expires_at": c.ExpiresAt, "step_up_id": stepUp})})
	})
	if err == nil && refusal != nil {
		return Secret{}, refusal
	}
	return out, err
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
