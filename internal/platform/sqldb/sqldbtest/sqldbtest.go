// Package sqldbtest opens real databases for tests: a fresh SQLite file in
// the test's temp dir always, and a fresh PostgreSQL database when
// BLUEPRINT_TEST_POSTGRES_URL names a server the tests may create databases
// on. Store tests run the same contract against both; no test mocks the
// database.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver for the admin connection

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// EnvPostgresURL names the PostgreSQL server of the tests, e.g.
// postgres://postgres@127.0.0.1:5432/test. Each test gets its own database
// on it, dropped when the test ends.
const EnvPostgresURL = "BLUEPRINT_TEST_POSTGRES_URL"

// OpenSQLite opens a migrated SQLite database that lives as long as the test.
func OpenSQLite(t testing.TB, migrations fs.FS, opts ...sqldb.Option) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "test.db"), migrations, opts...)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// OpenPostgres opens a migrated PostgreSQL database of its own for the test,
// or skips the test, saying why, when BLUEPRINT_TEST_POSTGRES_URL is unset.
func OpenPostgres(t testing.TB, migrations fs.FS, opts ...sqldb.Option) *sqldb.DB {
	t.Helper()
	dbURL := CreatePostgresDatabase(t)
	db, err := sqldb.Open(context.Background(), dbURL, migrations, opts...)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// CreatePostgresDatabase creates an empty database for the test and returns
// its URL; it is dropped when the test ends. It skips the test when
// BLUEPRINT_TEST_POSTGRES_URL is unset.
func CreatePostgresDatabase(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvPostgresURL)
	if admin == "" {
		t.Skipf("PostgreSQL backend skipped: %s is not set", EnvPostgresURL)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgresURL, err)
	}
	adminDB, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgresURL, err)
	}
	defer adminDB.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "bp_test_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adminDB.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", admin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	// Tests run side by side on one server: keep each pool small so they
	// stay within its max_connections together.
	q := u.Query()
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	return u.String()
}

// Backend is one database the store contract runs against.
type Backend struct {
	Name string
	Open func(t testing.TB, migrations fs.FS, opts ...sqldb.Option) *sqldb.DB
}

// The backends: SQLite always; PostgreSQL skips its test when no server is
// configured.
var (
	SQLite   = Backend{Name: "sqlite", Open: OpenSQLite}
	Postgres = Backend{Name: "postgres", Open: OpenPostgres}
	Backends = []Backend{SQLite, Postgres}
)

// Each runs fn once per backend, as subtests named after it.
func Each(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends {
		t.Run(b.Name, func(t *testing.T) { fn(t, b) })
	}
}

// Run runs fn once per backend, as subtests named after it, each with a
// fresh migrated database.
func Run(t *testing.T, migrations fs.FS, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	Each(t, func(t *testing.T, b Backend) { fn(t, b.Open(t, migrations)) })
}
