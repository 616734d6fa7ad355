package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/errandhq/errand/broker"
)

// Intents of per-task Vault tokens (broker.SecretTx), migration 00011.

func (t *txn) InsertVaultIntent(ctx context.Context, in broker.VaultIntent) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO vault_intents (id, task_id, state, created_at) VALUES ($1,$2,$3,$4)`,
		in.ID, in.TaskID, in.State, micros(in.CreatedAt))
	return translate(err)
}

const vaultIntentColumns = `id, task_id, state, accessor, created_at, resolved_at`

func scanVaultIntent(r scanner) (broker.VaultIntent, error) {
	var (
		in       broker.VaultIntent
		created  int64
		resolved sql.NullInt64
	)
	err := r.Scan(&in.ID, &in.TaskID, &in.State, &in.Accessor, &created, &resolved)
	in.CreatedAt = fromMicros(created)
	if resolved.Valid {
		in.ResolvedAt = fromMicros(resolved.Int64)
	}
	return in, translate(err)
}

func (t *txn) VaultIntent(ctx context.Context, id string) (broker.VaultIntent, error) {
	return scanVaultIntent(t.tx.QueryRowContext(ctx, `SELECT `+vaultIntentColumns+` FROM vault_intents WHERE id = $1`, id))
}

func (t *txn) ResolveVaultIntent(ctx context.Context, id, state, accessor string, at time.Time) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `UPDATE vault_intents SET state = $2, accessor = $3, resolved_at = $4
		WHERE id = $1 AND state = 'pending'`, id, state, accessor, micros(at))
	if err != nil {
		return false, translate(err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// StaleVaultIntents needs no row locks: the IMMEDIATE transaction holds
// the only write lock.
func (t *txn) StaleVaultIntents(ctx context.Context, before time.Time, limit int) ([]broker.VaultIntent, error) {
	return query(ctx, t.tx, `SELECT `+vaultIntentColumns+` FROM vault_intents
		WHERE state = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2`, []any{micros(before), limit}, scanVaultIntent)
}

func (t *txn) VaultTokenRecorded(ctx context.Context, accessor string) (bool, error) {
	var n int
	err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM credentials WHERE jti = $1 AND kind = $2`,
		accessor, broker.KindVaultToken).Scan(&n)
	return n > 0, translate(err)
}
