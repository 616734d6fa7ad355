package app

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/signin"
	"github.com/errandhq/errand/store/postgres"
	"github.com/errandhq/errand/store/sqlite"
)

// Backend is the database Errand runs on, opened once, with each of its
// driver's abilities named as a field: what one driver lacks is nil, and
// the wiring reads the fields instead of probing the store's type.
type Backend struct {
	// Store is the broker's store. Keys, Outbox and Deliveries are the
	// same database as the signing keys, the revocation outbox and the
	// webhook deliveries see it.
	Store      broker.Store
	Keys       broker.KeyStore
	Outbox     broker.Outbox
	Deliveries broker.Deliveries
	// Pending counts what waits for a user's decision, across replicas.
	Pending func(ctx context.Context, now time.Time) (tasks, stepUps int64, err error)
	// SignIn keeps people's browser sessions and sign-in flows.
	SignIn signin.Store
	// Listen calls notify on every committed revocation (PostgreSQL's
	// LISTEN/NOTIFY); nil on SQLite, where the revocation hub polls.
	Listen func(ctx context.Context, notify func()) error
	// Acks are the replicas' positions in the revocation feed, which the
	// status cache keeps exact across replicas; nil on SQLite.
	Acks revocation.AckStore
	// Migrate applies the pending migrations and says how many.
	Migrate func(ctx context.Context) (int, error)
	// CheckSchema refuses a schema that is not this binary's, or a
	// serving role with privileges it must not have; nil on SQLite,
	// which is always migrated at start.
	CheckSchema func(ctx context.Context) error
	// Close releases the database.
	Close func()
}

// Open opens SQLite for sqlite:// URLs and PostgreSQL for the others.
func Open(ctx context.Context, url string) (*Backend, error) {
	if path, ok := sqlite.PathFromURL(url); ok {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, err
		}
		return SQLite(st), nil
	}
	st, err := postgres.Open(ctx, postgres.Config{URL: url})
	if err != nil {
		return nil, err
	}
	return Postgres(st), nil
}

// Postgres is the backend of a PostgreSQL store; Close closes st.
func Postgres(st *postgres.Store) *Backend {
	db := stdlib.OpenDBFromPool(st.Pool())
	return &Backend{
		Store: st, Keys: st, Outbox: st, Deliveries: st, Pending: st.Pending,
		SignIn: &signin.SQLStore{DB: db},
		Listen: st.Listen, Acks: st,
		Migrate: st.Migrate,
		CheckSchema: func(ctx context.Context) error {
			if err := st.CheckSchema(ctx); err != nil {
				return err
			}
			return st.CheckPrivileges(ctx)
		},
		Close: func() {
			_ = db.Close()
			st.Close()
		},
	}
}

// SQLite is the backend of a SQLite store; Close closes st.
func SQLite(st *sqlite.Store) *Backend {
	return &Backend{
		Store: st, Keys: st, Outbox: st, Deliveries: st, Pending: st.Pending,
		SignIn:  &signin.SQLStore{DB: st.DB()},
		Migrate: st.Migrate,
		Close:   func() { _ = st.Close() },
	}
}
