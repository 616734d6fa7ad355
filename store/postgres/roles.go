package postgres

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CreateRoles creates (or updates the grants of) the serving role and the
// auditor role, both without LOGIN. The serving role may INSERT audit
// events and read them, never UPDATE, DELETE or TRUNCATE them; it owns no
// table, so it cannot disable the append-only triggers either.
func (s *Store) CreateRoles(ctx context.Context, app, auditor string) error {
	for _, r := range []string{app, auditor} {
		if !roleName.MatchString(r) {
			return fmt.Errorf("role name %q: use lower-case letters, digits and _", r)
		}
	}
	a, au := pgx.Identifier{app}.Sanitize(), pgx.Identifier{auditor}.Sanitize()
	var db string
	if err := s.pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return translate(err)
	}
	d := pgx.Identifier{db}.Sanitize()
	stmts := []string{
		`DO $$ BEGIN CREATE ROLE ` + a + ` NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		`DO $$ BEGIN CREATE ROLE ` + au + ` NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		`GRANT CONNECT ON DATABASE ` + d + ` TO ` + a + `, ` + au,
		`GRANT USAGE ON SCHEMA public TO ` + a + `, ` + au,
		`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ` + a + `, ` + au,
		`GRANT SELECT, INSERT, UPDATE ON tasks, credentials, outbox, signing_keys, vault_tokens, vault_intents TO ` + a,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON suspended_agents TO ` + a,
		`GRANT SELECT, INSERT ON audit_events, revocations TO ` + a,
		`GRANT SELECT, UPDATE ON audit_head TO ` + a,
		`GRANT SELECT ON goose_db_version TO ` + a,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ` + a,
		`GRANT SELECT ON audit_events, audit_head, credentials, tasks, revocations TO ` + au,
	}
	return translate(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}))
}
