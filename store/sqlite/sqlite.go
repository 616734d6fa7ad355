// Package sqlite implements broker.Store and broker.KeyStore on SQLite
// through the pure-Go modernc.org/sqlite driver (no cgo): Errand's embedded
// default for `errand dev`, and a supported single-node store for `serve`
// (database_url: sqlite:///path/errand.db).
//
// The database runs in WAL mode with synchronous=FULL, so a committed
// credential survives a crash. Every write transaction begins IMMEDIATE,
// taking SQLite's single write lock up front: writers are serialised, which
// is what LockTask promises (no mint can commit after a close). Readers are
// not blocked. Times are stored as integer microseconds, lists as JSON.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the database/sql driver "sqlite"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/migrations"
	"github.com/errandhq/errand/store/internal/sqlq"
)

// Store is a broker.Store on SQLite.
type Store struct {
	db *sql.DB
	// Clock is the database's clock for every decision; nil means time.Now.
	Clock func() time.Time
}

var (
	_ broker.Store    = (*Store)(nil)
	_ broker.KeyStore = (*Store)(nil)
)

// Memory is the path of a throwaway in-memory database.
const Memory = ":memory:"

// PathFromURL turns sqlite:///abs/path.db, sqlite://rel.db or
// sqlite://:memory: into a path; ok is false for other schemes.
func PathFromURL(u string) (string, bool) {
	rest, ok := strings.CutPrefix(u, "sqlite://")
	return rest, ok && rest != ""
}

// Open opens (creating if needed) the database at path, or an in-memory
// one for Memory.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite: invalid database path %q", path)
	}
	opts := "_txlock=immediate&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	dsn := "file:" + path + "?" + opts + "&_pragma=journal_mode(WAL)"
	if path == Memory {
		dsn = "file::memory:?" + opts
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if path == Memory {
		// Each connection to :memory: is its own database: keep exactly one.
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(8)
	}
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Now is the store's clock (broker.Clock), in UTC to the microsecond.
func (s *Store) Now(context.Context) (time.Time, error) {
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	return now().UTC().Truncate(time.Microsecond), nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DB exposes the handle to tests of this module.
func (s *Store) DB() *sql.DB { return s.db }

func (s *Store) migrator() (*goose.Provider, error) {
	fsys, err := fs.Sub(migrations.SQLite, "sqlite")
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectSQLite3, s.db, fsys, goose.WithDisableGlobalRegistry(true))
}

// Migrate applies pending migrations; it refuses a schema newer than this
// binary.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	p, err := s.migrator()
	if err != nil {
		return 0, err
	}
	cur, err := p.GetDBVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("schema: %w", err)
	}
	srcs := p.ListSources()
	if newest := srcs[len(srcs)-1].Version; cur > newest {
		return 0, fmt.Errorf("schema: the database is at version %d, newer than this binary's %d; upgrade Errand", cur, newest)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	return len(res), nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return translate(s.db.PingContext(ctx)) }

// InTx runs fn in an IMMEDIATE transaction.
func (s *Store) InTx(ctx context.Context, fn func(broker.Tx) error) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return translate(err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(&txn{tx: tx}); err != nil {
		return translate(err)
	}
	return translate(tx.Commit())
}

func translate(err error) error {
	if err == nil || broker.CodeOf(err) != "" {
		return err
	}
	if errors.Is(err, sql.ErrNoRows) {
		return broker.ErrNotFound
	}
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sql.ErrConnDone) ||
		strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked") ||
		strings.Contains(msg, "SQLITE_FULL") || strings.Contains(msg, "SQLITE_IOERR") ||
		strings.Contains(msg, "database is closed") {
		return fmt.Errorf("%w: database: %v", broker.ErrUnavailable, err)
	}
	return err
}

// queryer is what reads need from *sql.DB and *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func micros(t time.Time) int64 { return t.UTC().UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return micros(t)
}

func fromNull(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

func conv(t time.Time) any { return micros(t) }

func jsonList(s []string) string {
	if s == nil {
		s = []string{}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func fromJSONList(s string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("sqlite: stored list: %w", err)
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

func scopesFromJSON(s string) (broker.Scopes, error) {
	ss, err := fromJSONList(s)
	if err != nil {
		return nil, err
	}
	return sqlq.ParseScopes(ss)
}

// Unrevoke tries to clear a credential's revocation, bypassing the broker:
// only the conformance suite uses it, to prove the database refuses.
func (s *Store) Unrevoke(ctx context.Context, jti string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE credentials SET revoked_at = NULL WHERE jti = $1`, jti)
	return translate(err)
}
