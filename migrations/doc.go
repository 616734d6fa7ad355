// Package migrations embeds Errand's versioned, forward-only SQL schema,
// one directory per dialect, applied with goose.
package migrations

import "embed"

// Postgres holds the PostgreSQL migrations, under postgres/.
//
//go:embed postgres/*.sql
var Postgres embed.FS

// SQLite holds the SQLite migrations, under sqlite/.
//
//go:embed sqlite/*.sql
var SQLite embed.FS
