package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
)

// Intents of per-task Vault tokens (broker.SecretTx), migration 00011.

func (t *txn) InsertVaultIntent(ctx context.Context, in broker.VaultIntent) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO vault_intents (id, task_id, state, created_at) VALUES ($1,$2,$3,$4)`,
		in.ID, in.TaskID, in.State, in.CreatedAt)
	return translate(err)
}

const vaultIntentColumns = `id, task_id, state, accessor, created_at, resolved_at`

func scanVaultIntent(r pgx.Row) (broker.VaultIntent, error) {
	var (
		in       broker.VaultIntent
		resolved *time.Time
	)
	err := r.Scan(&in.ID, &in.TaskID, &in.State, &in.Accessor, &in.CreatedAt, &resolved)
	in.CreatedAt = in.CreatedAt.UTC()
	if resolved != nil {
		in.ResolvedAt = resolved.UTC()
	}
	return in, translate(err)
}

func (t *txn) VaultIntent(ctx context.Context, id string) (broker.VaultIntent, error) {
	return scanVaultIntent(t.tx.QueryRow(ctx, `SELECT `+vaultIntentColumns+` FROM vault_intents WHERE id = $1`, id))
}

func (t *txn) ResolveVaultIntent(ctx context.Context, id, state, accessor string, at time.Time) (bool, error) {
	tag, err := t.tx.Exec(ctx, `UPDATE vault_intents SET state = $2, accessor = $3, resolved_at = $4
		WHERE id = $1 AND state = 'pending'`, id, state, accessor, at)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// StaleVaultIntents locks the intents it returns, skipping those another
// replica's reconciler holds.
func (t *txn) StaleVaultIntents(ctx context.Context, before time.Time, limit int) ([]broker.VaultIntent, error) {
	rows, err := t.tx.Query(ctx, `SELECT `+vaultIntentColumns+` FROM vault_intents
		WHERE state = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED`, before, limit)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanVaultIntent)
}

func (t *txn) VaultTokenRecorded(ctx context.Context, accessor string) (bool, error) {
	var ok bool
	err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM credentials WHERE jti = $1 AND kind = $2)`,
		accessor, broker.KindVaultToken).Scan(&ok)
	return ok, translate(err)
}
