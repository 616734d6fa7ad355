package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/migrations"
)

// Store is a broker.Store on a pgx pool.
type Store struct {
	pool   *pgxpool.Pool
	groups grouper // InsertCredentialIfVersion's group commit
}

var (
	_ broker.Store    = (*Store)(nil)
	_ broker.KeyStore = (*Store)(nil)
)

// Config configures Open.
type Config struct {
	URL string
	// MaxConns bounds the pool; 0 keeps pgx's default.
	MaxConns int32
	// ConnectTimeout bounds each connection attempt; default 5 s.
	ConnectTimeout time.Duration
}

// Open connects a pool. It refuses the simple query protocol (every known
// pgx SQL injection needs it) and a server with synchronous_commit off
// (an acknowledged credential could be lost in a crash).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("database_url: %s", MaskURL(err.Error()))
	}
	if pc.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeSimpleProtocol {
		return nil, errors.New("database_url: default_query_exec_mode=simple_protocol is refused")
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	if pc.ConnConfig.ConnectTimeout <= 0 {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	// Every connection is checked, not only the first: a setting changed
	// for the role or the database later reaches the connections made
	// after it, and one of them could otherwise commit asynchronously.
	pc.AfterConnect = checkDurable
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w", translate(err))
	}
	conn.Release()
	return &Store{pool: pool}, nil
}

// errNotDurable: the session would acknowledge commits that are not yet
// flushed (F03), so a credential returned after its commit could be lost.
var errNotDurable = errors.New("synchronous_commit is off or local; Errand requires it on so that a returned credential is never lost")

// checkDurable refuses a connection whose commits are asynchronous.
func checkDurable(ctx context.Context, c *pgx.Conn) error {
	var sc string
	if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
		return err
	}
	if sc == "off" || sc == "local" {
		return fmt.Errorf("%w (it is %q)", errNotDurable, sc)
	}
	return nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool to tests and tools of this module.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func newMigrator(s *Store) (*goose.Provider, *sql.DB, error) {
	db := stdlib.OpenDBFromPool(s.pool)
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	fsys, err := fs.Sub(migrations.Postgres, "postgres")
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return p, db, nil
}

// Migrate applies every pending migration, serialised across replicas by
// an advisory lock. It refuses a schema newer than this binary.
func (s *Store) Migrate(ctx context.Context) (applied int, err error) {
	p, db, err := newMigrator(s)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := checkNotNewer(ctx, p); err != nil {
		return 0, err
	}
	res, err := p.Up(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	return len(res), nil
}

// CheckSchema returns an error unless the schema is exactly this binary's.
func (s *Store) CheckSchema(ctx context.Context) error {
	p, db, err := newMigrator(s)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := checkNotNewer(ctx, p); err != nil {
		return err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if pending {
		return errors.New("schema: migrations are pending; run `errand migrate`")
	}
	return nil
}

func checkNotNewer(ctx context.Context, p *goose.Provider) error {
	cur, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	srcs := p.ListSources()
	newest := srcs[len(srcs)-1].Version
	if cur > newest {
		return fmt.Errorf("schema: the database is at version %d, newer than this binary's %d; upgrade Errand", cur, newest)
	}
	return nil
}

// Now is the database's clock: every replica decides expiry on it.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t)
	return t, translate(err)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return translate(s.pool.Ping(ctx))
}

// InTx runs fn in a read-committed transaction; row locks do the
// serialising where a read decides a write.
func (s *Store) InTx(ctx context.Context, fn func(broker.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return fn(&txn{tx: tx})
	})
	return translate(err)
}

// translate maps driver errors onto the broker's vocabulary. Refusals from
// fn pass through untouched.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if broker.CodeOf(err) != "" {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return broker.ErrNotFound
	}
	if unavailable(err) {
		return fmt.Errorf("%w: database: %v", broker.ErrUnavailable, MaskURL(err.Error()))
	}
	return err
}

func unavailable(err error) bool {
	var (
		connErr *pgconn.ConnectError
		netErr  net.Error
		pgErr   *pgconn.PgError
	)
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	case errors.As(err, &pgErr):
		// 08: connection exception; 53: insufficient resources;
		// 57P0x: shutdown or cannot connect now.
		// 57014: statement timeout; 40001/40P01: serialisation failure or
		// deadlock, which a retry resolves.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "53") ||
			strings.HasPrefix(pgErr.Code, "57P") || pgErr.Code == "57014" ||
			pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	return strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "closed pool")
}

// MaskURL hides every database password in s: in postgres URLs (the
// user info, up to the authority's last '@', and a password query
// parameter) and in keyword DSNs (password=…).
func MaskURL(s string) string {
	out := s
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		from := 0
		for {
			i := strings.Index(out[from:], scheme)
			if i < 0 {
				break
			}
			i += from + len(scheme)
			end := len(out)
			if j := strings.IndexAny(out[i:], "/?# \t\n\"'"); j >= 0 {
				end = i + j
			}
			auth := out[i:end]
			if at := strings.LastIndex(auth, "@"); at > 0 {
				if colon := strings.Index(auth[:at], ":"); colon >= 0 {
					auth = auth[:colon] + ":xxxxx" + auth[at:]
					out = out[:i] + auth + out[end:]
					end = i + len(auth)
				}
			}
			from = end
		}
	}
	return passwordKV.ReplaceAllString(out, "${1}xxxxx")
}

// passwordKV is a password in a keyword DSN or a URL query.
var passwordKV = regexp.MustCompile(`((?:^|[\s?&])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)`)
