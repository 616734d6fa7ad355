package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
)

// prefill stores n past credentials (over n/100 closed tasks, all revoked)
// and n audit events chained onto the log's head, as months of use would
// leave them, so that a run measures Errand on a large database. Rows are
// streamed with COPY; the audit hashes are real, so audit verify holds.
func prefill(ctx context.Context, dbURL string, n int) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	tasks := max(n/100, 1)
	start := time.Now().UTC().Add(-90 * 24 * time.Hour).Truncate(time.Second)
	taskID := func(i int) string { return fmt.Sprintf("tsk_%026d", i) }
	agent := func(i int) string { return fmt.Sprintf("old-agent-%d", i%1000) }
	i := 0
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"tasks"},
		[]string{"id", "version", "status", "agent_iss", "agent_sub", "user_iss", "user_sub", "goal", "scopes",
			"approved_scopes", "audiences", "approved_audiences", "risk", "created_at", "approved_at", "expires_at", "closed_at"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i >= tasks {
				return nil, nil
			}
			at := start.Add(time.Duration(i) * time.Minute)
			row := []any{taskID(i), 3, "closed", "https://old.example/agent", agent(i), "https://old.example/user", "alice", "past work",
				[]string{"repo.read:acme/**"}, []string{"repo.read:acme/**"}, []string{audience}, []string{audience}, "low",
				at, at, at.Add(time.Hour), at.Add(30 * time.Minute)}
			i++
			return row, nil
		})); err != nil {
		return fmt.Errorf("tasks: %w", err)
	}
	i = 0
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"credentials"},
		[]string{"jti", "task_id", "kind", "agent_iss", "agent_sub", "user_iss", "user_sub", "scopes", "audience",
			"issued_at", "expires_at", "revoked_at"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i >= n {
				return nil, nil
			}
			t := i % tasks
			at := start.Add(time.Duration(t)*time.Minute + time.Duration(i/tasks)*time.Millisecond)
			row := []any{fmt.Sprintf("old%029d", i), taskID(t), "jwt", "https://old.example/agent", agent(t),
				"https://old.example/user", "alice", []string{"repo.read:acme/api"}, audience, at, at.Add(5 * time.Minute), at.Add(30 * time.Minute)}
			i++
			return row, nil
		})); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	var (
		seq  int64
		prev string
	)
	if err := conn.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &prev); err != nil {
		return err
	}
	// The events are dated in the past, in the order they are appended, as
	// the chain's head lock orders real ones: 90 days up to a minute ago.
	step := (90*24*time.Hour - time.Minute) / time.Duration(n)
	i = 0
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"audit_events"},
		[]string{"seq", "time", "type", "actor_kind", "actor_iss", "actor_sub", "task_id", "detail", "hash", "hash_scheme"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i >= n {
				return nil, nil
			}
			t := i % tasks
			seq++
			e := broker.AuditEvent{Seq: seq, Time: start.Add(time.Duration(i) * step),
				Type: broker.EventCredentialIssued, Actor: broker.Actor{Kind: "agent", Issuer: "https://old.example/agent", Subject: agent(t)},
				TaskID: taskID(t), Detail: []byte(`{"kind":"jwt","scopes":["repo.read:acme/api"]}`),
				HashScheme: broker.HashSchemeCurrent}
			e.Hash = broker.ChainHash(prev, e)
			prev = e.Hash
			i++
			return []any{e.Seq, e.Time, e.Type, e.Actor.Kind, e.Actor.Issuer, e.Actor.Subject, e.TaskID, string(e.Detail), e.Hash,
				e.HashScheme}, nil
		})); err != nil {
		return fmt.Errorf("audit events: %w", err)
	}
	if _, err := conn.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, seq, prev); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `ANALYZE`)
	return err
}
