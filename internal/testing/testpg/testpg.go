// Package testpg gives each test package a fresh PostgreSQL database on the
// server named by ERRAND_TEST_DATABASE_URL, migrated and dropped after.
//
// Without the variable, tests that need the database skip with a clear
// message — except under CI=true, where they fail.
package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/internal/testing/testskip"
	"github.com/errandhq/errand/store/postgres"
)

// EnvURL names the server URL variable.
const EnvURL = "ERRAND_TEST_DATABASE_URL"

var (
	mu       sync.Mutex
	dbURL    string
	dbName   string
	adminDB  string
	setupErr error
)

// Run is for TestMain: it runs the package's tests, drops the database
// they created, if any, and says how many skipped for want of PostgreSQL
// or Vault (testskip), even without -v.
func Run(m *testing.M) int {
	code := m.Run()
	defer testskip.Report()
	mu.Lock()
	defer mu.Unlock()
	if dbName != "" {
		if err := drop(adminDB, dbName); err != nil {
			fmt.Fprintln(os.Stderr, "testpg: drop:", err)
		}
	}
	for _, name := range extra {
		if err := drop(adminDB, name); err != nil {
			fmt.Fprintln(os.Stderr, "testpg: drop:", err)
		}
	}
	return code
}

var extra []string

// NewPackageDatabase creates an extra empty database that lives until the
// package's tests end (for benchmarks, whose function runs several times).
func NewPackageDatabase(t testing.TB) string {
	t.Helper()
	base := URL(t)
	u, name, err := createEmpty(base)
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	mu.Lock()
	extra = append(extra, name)
	mu.Unlock()
	return u
}

// URL returns the URL of this package's fresh, migrated database, creating
// it on first use.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set and CI=true: PostgreSQL is required", EnvURL)
		}
		testskip.Skip(t, "PostgreSQL", fmt.Sprintf("%s is not set (e.g. %s=postgres://postgres@127.0.0.1:5432/postgres)", EnvURL, EnvURL))
	}
	mu.Lock()
	defer mu.Unlock()
	if dbURL == "" && setupErr == nil {
		dbURL, setupErr = create(base)
	}
	if setupErr != nil {
		t.Fatalf("testpg: %v", setupErr)
	}
	return dbURL
}

// Store opens a store on this package's database; it is closed at cleanup.
func Store(t testing.TB) *postgres.Store {
	t.Helper()
	u := URL(t)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
	if err != nil {
		t.Fatalf("testpg: open: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// NewDatabase creates an extra empty database (not migrated) and returns
// its URL; it is dropped at cleanup.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := URL(t)
	u, name, err := createEmpty(base)
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(base, name); err != nil {
			t.Logf("testpg: drop %s: %v", name, err)
		}
	})
	return u
}

func create(base string) (string, error) {
	u, name, err := createEmpty(base)
	if err != nil {
		return "", err
	}
	adminDB, dbName = base, name
	st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
	if err != nil {
		return "", err
	}
	defer st.Close()
	if _, err := st.Migrate(context.Background()); err != nil {
		return "", err
	}
	return u, nil
}

func createEmpty(base string) (string, string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	name := "errand_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", "", fmt.Errorf("connect %s: %w", postgres.MaskURL(base), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", "", err
	}
	u.Path = "/" + name
	return u.String(), name, nil
}

func drop(base, name string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	return err
}
