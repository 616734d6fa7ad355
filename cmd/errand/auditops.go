package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/store/postgres"
	"github.com/errandhq/errand/store/sqlite"
)

// addAuditOps adds the operator's audit commands, which read the database
// directly: verify and export.
func addAuditOps(audit *cobra.Command) {
	var vsrc auditSource
	var (
		file        string
		anchorFlags []string
	)
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Walk the audit hash chain; exit 1 naming the first broken seq",
		Long: `errand audit verify reads the audit trail from the database and walks its hash chain.
It needs read access to the audit tables only: --database-url (or ERRAND_DATABASE_URL)
with a login role granted the auditor role (errand db roles) is enough, without the rest
of the serve configuration and never with system_secret; --config reads database_url
from errand.yaml instead. --file verifies a whole export (audit export --format jsonl)
offline, with no database; --anchor seq:hash, against either, fails unless the chain holds
that event with that hash (docs/audit-chain.md).`,
		Example: `  errand audit verify --database-url "postgres://auditor@db/errand?sslmode=verify-full"
  errand audit verify --config errand.yaml
  errand audit verify --file audit.jsonl --anchor 1200:5f0c…e9`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			anchors, err := parseAnchors(anchorFlags)
			if err != nil {
				return err
			}
			if file != "" {
				return verifyFileCmd(cmd, file, anchors)
			}
			st, err := vsrc.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			n, seq, hash, err := verifyChain(cmd.Context(), st.Store, anchors...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit chain intact: %d events, head seq %d, hash %s\n", n, seq, hash)
			printAnchors(cmd, anchors)
			return nil
		},
	}
	vsrc.register(verify)
	verify.Flags().StringVar(&file, "file", "", "verify this export (errand audit export --format jsonl) offline, without a database")
	verify.Flags().StringArrayVar(&anchorFlags, "anchor", nil,
		"seq:hash of an event kept from an earlier verify; the chain must hold it (repeatable)")

	var (
		esrc         auditSource
		format       string
		since, until string
	)
	export := &cobra.Command{
		Use:   "export",
		Short: "Stream audit events as JSON lines or CSV, for a SIEM",
		Long: `errand audit export streams the audit trail from the database. Like audit verify it
needs read access only: --database-url (or ERRAND_DATABASE_URL) alone, never
system_secret; or --config to read database_url from errand.yaml.`,
		Example: `  errand audit export --database-url "$AUDITOR_DB_URL" --since 2026-11-01T00:00:00Z > audit.jsonl
  errand audit export --config errand.yaml --format csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "jsonl" && format != "csv" {
				return usageErrorf("--format must be jsonl or csv")
			}
			f := broker.HistoryFilter{Limit: 5000}
			var err error
			if f.Since, err = optRFC3339("--since", since); err != nil {
				return err
			}
			if f.Until, err = optRFC3339("--until", until); err != nil {
				return err
			}
			st, err := esrc.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			return exportEvents(cmd.Context(), st.Store, f, format, cmd.OutOrStdout())
		},
	}
	esrc.register(export)
	export.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	_ = export.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"jsonl", "csv"}, cobra.ShellCompDirectiveNoFileComp))
	export.Flags().StringVar(&since, "since", "", "only events at or after this RFC 3339 time")
	export.Flags().StringVar(&until, "until", "", "only events before this RFC 3339 time")
	audit.AddCommand(verify, export)
}

func optRFC3339(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time", flag, v)
	}
	return t, nil
}

// auditSource is where audit verify and export read: --database-url
// alone (an auditor's read-only login; nothing else of the serve
// configuration, never system_secret), or database_url from --config.
type auditSource struct {
	cfgPath, dbURL string
}

func (a *auditSource) register(c *cobra.Command) {
	c.Flags().StringVar(&a.cfgPath, "config", "errand.yaml", "path to errand.yaml (only its database_url is used)")
	c.Flags().StringVar(&a.dbURL, "database-url", os.Getenv("ERRAND_DATABASE_URL"),
		"read the audit trail here, without a config file (env ERRAND_DATABASE_URL); read access is enough")
}

func (a *auditSource) open(cmd *cobra.Command) (*app.Backend, error) {
	if a.dbURL == "" {
		return openFromConfig(cmd.Context(), a.cfgPath)
	}
	if cmd.Flags().Changed("config") {
		return nil, usageErrorf("--config and --database-url: give one")
	}
	return app.Open(cmd.Context(), a.dbURL)
}

func openFromConfig(ctx context.Context, path string) (*app.Backend, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return app.Open(ctx, cfg.DatabaseURL)
}

// verifyChain checks every event up to the chain head read at the start,
// and that no event stands beyond the head read at the end: an event
// appended by Errand always moves the head in the same transaction, so a
// row beyond it was written around Errand. Events appended while it runs
// are left for the next run, so a busy database never fails it.
func verifyChain(ctx context.Context, st broker.Reader, anchors ...broker.Anchor) (int64, int64, string, error) {
	headSeq, headHash, err := st.AuditHead(ctx)
	if err != nil {
		return 0, 0, "", err
	}
	v := broker.NewChainVerifier(anchors...)
	var after int64
	for after < headSeq {
		evs, err := st.AuditEvents(ctx, broker.HistoryFilter{AfterSeq: after, Limit: 5000})
		if err != nil {
			return 0, 0, "", err
		}
		for _, e := range evs[:min(len(evs), 5000)] {
			if e.Seq > headSeq {
				break
			}
			if err := v.Add(e); err != nil {
				return v.Count(), 0, "", err
			}
			after = e.Seq
		}
		if len(evs) <= 5000 {
			break
		}
	}
	if err := v.Finish(headSeq, headHash); err != nil {
		return v.Count(), 0, "", err
	}
	// The newest event present, then the head: any event committed before
	// the first read moved the head before the second.
	last := after
	for {
		evs, err := st.AuditEvents(ctx, broker.HistoryFilter{AfterSeq: last, Limit: 5000})
		if err != nil {
			return 0, 0, "", err
		}
		if len(evs) == 0 {
			break
		}
		last = evs[min(len(evs), 5000)-1].Seq
		if len(evs) <= 5000 {
			break
		}
	}
	nowSeq, _, err := st.AuditHead(ctx)
	if err != nil {
		return 0, 0, "", err
	}
	if last > nowSeq {
		return v.Count(), 0, "", &broker.ChainError{Seq: nowSeq + 1, Reason: "event beyond the chain head"}
	}
	return v.Count(), headSeq, headHash, nil
}

func exportEvents(ctx context.Context, st broker.Reader, f broker.HistoryFilter, format string, out io.Writer) error {
	cw := csv.NewWriter(out)
	enc := json.NewEncoder(out)
	if format == "csv" {
		if err := cw.Write([]string{"seq", "time", "type", "actor_kind", "actor_iss", "actor_sub", "task_id", "detail", "hash"}); err != nil {
			return err
		}
	}
	for {
		evs, err := st.AuditEvents(ctx, f)
		if err != nil {
			return err
		}
		for _, e := range evs[:min(len(evs), f.Limit)] {
			var err error
			if format == "csv" {
				err = cw.Write([]string{strconv.FormatInt(e.Seq, 10), e.Time.Format(time.RFC3339Nano), e.Type,
					e.Actor.Kind, e.Actor.Issuer, e.Actor.Subject, e.TaskID, string(e.Detail), e.Hash})
			} else {
				err = enc.Encode(map[string]any{"seq": e.Seq, "time": e.Time.Format(time.RFC3339Nano), "type": e.Type,
					"actor": e.Actor, "task_id": e.TaskID, "detail": json.RawMessage(e.Detail), "hash": e.Hash,
					"hash_scheme": e.HashScheme})
			}
			if err != nil {
				return err
			}
			f.AfterSeq = e.Seq
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		if len(evs) <= f.Limit {
			return nil
		}
	}
}

func newDBCmd() *cobra.Command {
	db := &cobra.Command{Use: "db", Short: "Database administration"}
	var cfgPath, app, auditor string
	roles := &cobra.Command{
		Use:   "roles",
		Short: "Create least-privilege roles: the serving role may append audit events but never change them",
		Long: `errand db roles creates two roles without LOGIN (grant them to your login roles):

  the serving role (--app-role)  reads and writes tasks, credentials and the outbox, and may
                                 INSERT audit events but never UPDATE, DELETE or TRUNCATE them;
                                 it owns nothing, so it cannot disable the append-only triggers;
  the auditor role (--auditor-role) reads the audit trail, the issuance history and the
                                 step-up approvals, nothing else (never the signing keys).

Every table of the schema is covered; a table this errand does not know (a schema migrated
by a newer one) is refused. Run it, like errand migrate, as the role that owns the schema,
after every errand migrate; then run errand serve --no-migrate as a login role granted the
serving role (serve checks at start that it holds every privilege it needs). PostgreSQL
only: SQLite has no roles.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if _, ok := sqlite.PathFromURL(cfg.DatabaseURL); ok {
				return errors.New("errand db roles needs PostgreSQL: database_url is SQLite, which has no roles; " +
					"keep the database file readable and writable by errand's user only")
			}
			st, err := postgres.Open(cmd.Context(), postgres.Config{URL: cfg.DatabaseURL})
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.CreateRoles(cmd.Context(), app, auditor); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "roles ready: %s (serving), %s (auditor)\n", app, auditor)
			return nil
		},
	}
	roles.Flags().StringVar(&cfgPath, "config", "errand.yaml", "path to errand.yaml")
	roles.Flags().StringVar(&app, "app-role", "errand_app", "name of the serving role")
	roles.Flags().StringVar(&auditor, "auditor-role", "errand_auditor", "name of the auditor role")
	db.AddCommand(roles)
	return db
}
