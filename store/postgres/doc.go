// Package postgres implements broker.Store and broker.KeyStore on
// PostgreSQL with pgx and a connection pool.
//
// Every query is parameterised over the extended protocol; the simple
// protocol is refused at open. Driver errors are translated once, here:
// a missing row is broker.ErrNotFound, a connection failure is
// broker.ErrUnavailable, anything else stays an internal error.
package postgres
