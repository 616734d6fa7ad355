package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// tableGrant is what the serving role and the auditor role may do with
// one table; "" is nothing.
type tableGrant struct {
	table, app, auditor string
}

// grants names every table of the schema with the least each role needs.
// A migration that adds a table adds it here: CreateRoles refuses a schema
// holding a table it does not name, serve --no-migrate refuses a role
// lacking what is listed, and a test compares this list with the tables
// the migrations create.
var grants = []tableGrant{
	{"tasks", "SELECT, INSERT, UPDATE", "SELECT"},
	{"credentials", "SELECT, INSERT, UPDATE", "SELECT"},
	// The audit trail is appended to, never changed.
	{"audit_events", "SELECT, INSERT", "SELECT"},
	{"audit_head", "SELECT, UPDATE", "SELECT"},
	{"revocations", "SELECT, INSERT", "SELECT"},
	// Step-up approvals: who approved which credential, part of the history.
	{"step_ups", "SELECT, INSERT, UPDATE", "SELECT"},
	// Sealed private keys and Vault tokens, the outbox, the kill switch's
	// current state and the replicas' positions are not history: never
	// the auditor's.
	{"signing_keys", "SELECT, INSERT, UPDATE", ""},
	{"vault_tokens", "SELECT, INSERT, UPDATE", ""},
	{"outbox", "SELECT, INSERT, UPDATE", ""},
	{"suspended_agents", "SELECT, INSERT, UPDATE, DELETE", ""},
	{"replica_acks", "SELECT, INSERT, UPDATE, DELETE", ""},
	// Intents of per-task Vault tokens (00011): written before a token is
	// created, resolved once; the reconciler's, not history.
	{"vault_intents", "SELECT, INSERT, UPDATE", ""},
	// The replay cache of client-assertion and DPoP proof identifiers
	// (00012): digests kept until their JWT expires, then deleted.
	{"seen_jtis", "SELECT, INSERT, UPDATE, DELETE", ""},
	// CIBA backchannel requests (00014): polling state, digests of the
	// auth_req_id; not history (the task's events are).
	{"backchannel_requests", "SELECT, INSERT, UPDATE", ""},
	// Notifications on their way to webhooks (00016): an outbox, not
	// history (a delivery given up is audited as notification.failed);
	// finished ones are pruned after a week.
	{"webhook_deliveries", "SELECT, INSERT, UPDATE, DELETE", ""},
	// Sign-in (00017): people's browser sessions and the sign-in flows in
	// progress, digests of their ids; deleted at sign-out and expiry.
	{"signin_sessions", "SELECT, INSERT, UPDATE, DELETE", ""},
	{"signin_flows", "SELECT, INSERT, DELETE", ""},
	// serve --no-migrate reads the schema's version.
	{"goose_db_version", "SELECT", ""},
}

// CreateRoles creates (or updates the grants of) the serving role and the
// auditor role, both without LOGIN. The serving role may INSERT audit
// events and read them, never UPDATE, DELETE or TRUNCATE them; it owns no
// table, so it cannot disable the append-only triggers either. Every
// table of the schema must be one grants names: a table this binary does
// not know (a schema migrated by a newer Errand) is refused rather than
// left unreachable to both roles.
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
	if err := s.checkTablesKnown(ctx); err != nil {
		return err
	}
	d := pgx.Identifier{db}.Sanitize()
	stmts := []string{
		`DO $$ BEGIN CREATE ROLE ` + a + ` NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		`DO $$ BEGIN CREATE ROLE ` + au + ` NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		`GRANT CONNECT ON DATABASE ` + d + ` TO ` + a + `, ` + au,
		`GRANT USAGE ON SCHEMA public TO ` + a + `, ` + au,
		`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ` + a + `, ` + au,
	}
	for _, g := range grants {
		t := pgx.Identifier{g.table}.Sanitize()
		stmts = append(stmts, `GRANT `+g.app+` ON `+t+` TO `+a)
		if g.auditor != "" {
			stmts = append(stmts, `GRANT `+g.auditor+` ON `+t+` TO `+au)
		}
	}
	stmts = append(stmts, `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO `+a)
	return translate(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}))
}

// tablesSQL lists the tables of the public schema.
const tablesSQL = `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1`

// checkTablesKnown refuses a schema whose tables are not exactly those
// grants names.
func (s *Store) checkTablesKnown(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, tablesSQL)
	if err != nil {
		return translate(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return translate(err)
	}
	var unknown, missing []string
	for _, t := range tables {
		if !slices.ContainsFunc(grants, func(g tableGrant) bool { return g.table == t }) {
			unknown = append(unknown, t)
		}
	}
	for _, g := range grants {
		if !slices.Contains(tables, g.table) {
			missing = append(missing, g.table)
		}
	}
	switch {
	case len(unknown) > 0:
		return fmt.Errorf("db roles: table(s) %s are not known to this errand, which grants no right on them; run the errand that migrated the schema",
			strings.Join(unknown, ", "))
	case len(missing) > 0:
		return fmt.Errorf("db roles: table(s) %s are missing: run errand migrate first", strings.Join(missing, ", "))
	}
	return nil
}

// CheckPrivileges returns an error naming every privilege of the serving
// role (grants) that the connected role lacks, on a table or on a
// sequence: serve --no-migrate runs it, so that a role granted by an
// older errand db roles stops start-up with one clear line rather than
// failing requests one by one.
func (s *Store) CheckPrivileges(ctx context.Context) error {
	var tables, privs []string
	for _, g := range grants {
		for _, p := range strings.Split(g.app, ", ") {
			tables, privs = append(tables, g.table), append(privs, p)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT x.t || ': ' || x.p FROM unnest($1::text[], $2::text[]) AS x(t, p)
		WHERE NOT has_table_privilege(x.t, x.p)
		UNION ALL
		SELECT c.relname || ': USAGE' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind = 'S'
		  AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(c.oid, 'USAGE') END`, tables, privs)
	if err != nil {
		return translate(err)
	}
	lacking, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return translate(err)
	}
	if len(lacking) > 0 {
		var who string
		_ = s.pool.QueryRow(ctx, `SELECT current_user`).Scan(&who)
		return errors.New("database role " + who + " lacks " + strings.Join(lacking, ", ") +
			": run errand db roles (as the schema's owner) and grant its serving role to " + who)
	}
	return nil
}
