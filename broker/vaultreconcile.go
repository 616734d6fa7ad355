package broker

import (
	"context"
	"errors"
	"time"
)

// VaultReconciliation is what one ReconcileVault found.
type VaultReconciliation struct {
	// Orphans are task tokens Errand created but never recorded (a crash
	// between the Vault call and the commit): each is now recorded,
	// revoked, queued in the outbox for revocation in Vault, and raised as
	// backend.orphan_found.
	Orphans []VaultTaskToken
	// Unowned name a task this database does not know (restored from an
	// older backup, say). They cannot be queued (the outbox belongs to
	// tasks): the caller revokes them in Vault and reports each with
	// RecordUnownedRevoked.
	Unowned []VaultTaskToken
	// Abandoned counts stale pending intents of which no token lives in
	// Vault (the call failed, or the token is gone already).
	Abandoned int
}

// maxStaleIntents bounds the intents one reconciliation abandons; the
// next one carries on.
const maxStaleIntents = 1000

// ReconcileVault holds Errand's records against the task tokens live in
// Vault (a complete listing, Vault's own answer). A token whose accessor
// is recorded is known. One whose intent is still pending and younger
// than grace is being recorded by its request right now. Any other is an
// orphan: recorded and queued for revocation (or, when its task is not in
// this database, returned as unowned). Then every pending intent older
// than grace whose token is not in the listing is abandoned.
//
// grace must exceed the time a request can take between committing its
// intent and Vault creating the token (the Vault client's timeout), plus
// the time the listing took: an intent older than that which had created a
// token would have found it in the listing.
func (s *Service) ReconcileVault(ctx context.Context, live []VaultTaskToken, grace time.Duration) (VaultReconciliation, error) {
	var out VaultReconciliation
	named := make(map[string]bool, len(live))
	for _, tok := range live {
		if tok.IntentID != "" {
			named[tok.IntentID] = true
		}
		// Most tokens are known: one read, no transaction.
		if _, err := s.store.Credential(ctx, tok.Accessor); err == nil {
			continue
		} else if !errors.Is(err, ErrNotFound) {
			return out, err
		}
		orphan, unowned, err := s.reconcileToken(ctx, tok, grace)
		if err != nil {
			return out, err
		}
		if orphan {
			out.Orphans = append(out.Orphans, tok)
		}
		if unowned {
			out.Unowned = append(out.Unowned, tok)
		}
	}
	err := s.store.InTx(ctx, func(tx Tx) error {
		out.Abandoned = 0
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		stale, err := tx.StaleVaultIntents(ctx, now.Add(-grace), maxStaleIntents)
		if err != nil {
			return err
		}
		for _, in := range stale {
			if named[in.ID] {
				continue
			}
			ok, err := tx.ResolveVaultIntent(ctx, in.ID, IntentAbandoned, "", now)
			if err != nil {
				return err
			}
			if ok {
				out.Abandoned++
			}
		}
		return nil
	})
	return out, err
}

// reconcileToken decides one task token that no credential records, under
// its task's lock (which recording it for its request takes too).
func (s *Service) reconcileToken(ctx context.Context, tok VaultTaskToken, grace time.Duration) (orphan, unowned bool, err error) {
	err = s.store.InTx(ctx, func(tx Tx) error {
		orphan, unowned = false, false
		t, err := tx.LockTask(ctx, tok.TaskID)
		if errors.Is(err, ErrNotFound) {
			unowned = true
			return nil
		}
		if err != nil {
			return err
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if known, err := tx.VaultTokenRecorded(ctx, tok.Accessor); err != nil || known {
			return err
		}
		intentState := "missing"
		if tok.IntentID != "" {
			in, err := tx.VaultIntent(ctx, tok.IntentID)
			switch {
			case err == nil && in.TaskID != t.ID:
				intentState = "of another task"
			case err == nil && in.State == IntentPending && in.CreatedAt.After(now.Add(-grace)):
				return nil // its request is recording it now
			case err == nil && in.State == IntentPending:
				intentState = in.State
				if _, err := tx.ResolveVaultIntent(ctx, in.ID, IntentOrphaned, tok.Accessor, now); err != nil {
					return err
				}
			case err == nil:
				intentState = in.State
			case !errors.Is(err, ErrNotFound):
				return err
			}
		}
		_, scopes := s.taskRoles(t)
		c := Credential{ID: tok.Accessor, TaskID: t.ID, Kind: KindVaultToken, Agent: t.Agent, User: t.User,
			Scopes: scopes, Audience: "vault", IssuedAt: now, ExpiresAt: t.ExpiresAt}
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		if err := s.revokeUnused(ctx, tx, &t, tok.Accessor, now); err != nil {
			return err
		}
		orphan = true
		return tx.AppendAudit(ctx,
			AuditEvent{Time: now, Type: EventBackendOrphan, Actor: SystemActor, TaskID: t.ID,
				Detail: detail(map[string]any{"kind": KindVaultToken, "accessor_sha256": HashID(tok.Accessor),
					"intent_id": clip(tok.IntentID), "intent_state": intentState, "created_at": tok.CreatedAt,
					"action": "recorded and queued for revocation"})},
			AuditEvent{Time: now, Type: EventCredentialRevoked, Actor: SystemActor, TaskID: t.ID,
				Detail: detail(map[string]any{"kind": KindVaultToken, "jti_sha256": HashID(tok.Accessor), "reason": "orphan"})})
	})
	return orphan, unowned, err
}

// RecordUnownedRevoked records that a task token naming a task this
// database does not know was revoked in Vault.
func (s *Service) RecordUnownedRevoked(ctx context.Context, tok VaultTaskToken) error {
	return s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventBackendOrphan, Actor: SystemActor,
			Detail: detail(map[string]any{"kind": KindVaultToken, "accessor_sha256": HashID(tok.Accessor),
				"unknown_task_id": clip(tok.TaskID), "intent_id": clip(tok.IntentID), "created_at": tok.CreatedAt,
				"action": "revoked: its task is not in this database"})})
	})
}

// clip bounds what a token's metadata (written by whoever could create
// that token) puts in the audit log.
func clip(v string) string {
	const max = 64
	if len(v) > max {
		return v[:max]
	}
	return v
}
