package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

var migrations = fstest.MapFS{
	"migrations/sqlite/00001_x.sql": {Data: []byte(`-- +goose Up
CREATE TABLE items (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    sent_at    TEXT
);

-- +goose Down
DROP TABLE items;
`)},
	"migrations/sqlite/00002_y.sql": {Data: []byte(`-- +goose Up
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counters (name, n) VALUES ('writes', 0);

-- +goose Down
DROP TABLE counters;
`)},
	// Migrations of another dialect are never applied to SQLite.
	"migrations/postgres/00001_x.sql": {Data: []byte("-- +goose Up\nTHIS IS NOT SQL;\n-- +goose Down\n")},
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw         string
		wantDialect sqldb.Dialect
		wantTarget  string
		wantErr     bool
	}{
		{raw: "postgres://u:p@db:5432/orders?sslmode=disable", wantDialect: sqldb.Postgres, wantTarget: "postgres://u:p@db:5432/orders?sslmode=disable"},
		{raw: "postgresql://db/orders", wantDialect: sqldb.Postgres, wantTarget: "postgresql://db/orders"},
		{raw: "sqlite:data/orders.db", wantDialect: sqldb.SQLite, wantTarget: "data/orders.db"},
		{raw: "sqlite:/var/lib/blueprint/orders.db", wantDialect: sqldb.SQLite, wantTarget: "/var/lib/blueprint/orders.db"},
		{raw: "sqlite://data/orders.db", wantDialect: sqldb.SQLite, wantTarget: "data/orders.db"},
		{raw: "sqlite:///var/lib/orders.db", wantDialect: sqldb.SQLite, wantTarget: "/var/lib/orders.db"},
		{raw: "data/orders.db", wantDialect: sqldb.SQLite, wantTarget: "data/orders.db"},
		{raw: "/tmp/orders.db", wantDialect: sqldb.SQLite, wantTarget: "/tmp/orders.db"},
		{raw: "orders.db", wantDialect: sqldb.SQLite, wantTarget: "orders.db"},
		{raw: "", wantErr: true},
		{raw: "sqlite:", wantErr: true},
		{raw: "sqlite://", wantErr: true},
		{raw: "mysql://db/orders", wantErr: true},
		{raw: "http://db/orders", wantErr: true},
		{raw: "postgres://db:port-is-not-a-number/orders", wantErr: true},
		{raw: "postgres://a b/orders", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Parallel()
			dialect, target, err := sqldb.ParseURL(tt.raw)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParseURL(%q) = %q, %q, nil, want an error", tt.raw, dialect, target)
				}
				return
			}
			if err != nil || dialect != tt.wantDialect || target != tt.wantTarget {
				t.Errorf("ParseURL(%q) = %q, %q, %v, want %q, %q, nil", tt.raw, dialect, target, err, tt.wantDialect, tt.wantTarget)
			}
		})
	}
}

func TestOpenSQLite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	// Open makes missing directories, as a fresh data volume needs.
	path := filepath.Join(dir, "nested", "deeper", "orders.db")
	for _, url := range []string{"sqlite:" + path, "sqlite://" + path, path} {
		t.Run(url, func(t *testing.T) {
			db, err := sqldb.Open(ctx, url, migrations)
			if err != nil {
				t.Fatalf("Open(%q) = %v, want nil", url, err)
			}
			defer db.Close()
			if db.Dialect != sqldb.SQLite {
				t.Errorf("Open(%q).Dialect = %q, want %q", url, db.Dialect, sqldb.SQLite)
			}
			if err := db.Ping(ctx); err != nil {
				t.Errorf("Ping() = %v, want nil", err)
			}
			var n int
			if err := db.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'writes'`).Scan(&n); err != nil {
				t.Errorf("query a migrated table: %v", err)
			}
		})
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("stat %s: %v, want the database file created", path, err)
	}
}

// TestSQLiteFilesArePrivate: a database holds every user's data, so its
// directory, its file and the -wal and -shm files beside it are the
// owner's alone.
func TestSQLiteFilesArePrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	db, err := sqldb.Open(t.Context(), "sqlite:"+filepath.Join(dir, "orders.db"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A write goes through the WAL, so both of its files exist now.
	if _, err := db.ExecContext(t.Context(), `UPDATE counters SET n = n + 1`); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"": 0o700, "orders.db": 0o600, "orders.db-wal": 0o600, "orders.db-shm": 0o600,
	}
	for name, mode := range want {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("stat %s: %v", name, err)
		} else if got := info.Mode().Perm(); got != mode {
			t.Errorf("%s mode = %o, want %o", filepath.Join("data", name), got, mode)
		}
	}
}

// TestPostgresErrorsHideThePassword: a database that cannot be reached is
// reported with its user, host and database, never its password.
func TestPostgresErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const password = "pg-password-42"
	for _, url := range []string{
		"postgres://app:" + password + "@127.0.0.1:1/users?connect_timeout=1",
		"postgres://app:" + password + "@127.0.0.1:1/users?pool_max_conns=many",
		"postgres://app:" + password + "@127.0.0.1:1/users?sslmode=sometimes",
	} {
		db, err := sqldb.Open(t.Context(), url, migrations)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%q) = nil error, want an error", url)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("Open error = %q, repeats the password", err)
		}
	}
}

func TestOpenFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		url        string
		migrations fstest.MapFS
	}{
		{name: "empty url", url: "", migrations: migrations},
		{name: "unknown scheme", url: "mysql://db/x", migrations: migrations},
		{name: "directory is a file", url: "sqlite:" + filepath.Join(notADir, "x.db"), migrations: migrations},
		{
			name: "broken migration",
			url:  "sqlite:" + filepath.Join(dir, "broken.db"),
			migrations: fstest.MapFS{
				"migrations/sqlite/00001_x.sql": {Data: []byte("-- +goose Up\nCREATE TABLE (;\n-- +goose Down\n")},
			},
		},
		{name: "no migrations for the dialect", url: "sqlite:" + filepath.Join(dir, "none.db"), migrations: fstest.MapFS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, err := sqldb.Open(t.Context(), tt.url, tt.migrations)
			if err == nil {
				db.Close()
				t.Errorf("Open(%q) = nil error, want an error", tt.url)
			}
		})
	}
}

var errRollback = errors.New("changed my mind")

func TestInTx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqldbtest.OpenSQLite(t, migrations)
	now := sqldb.NewTime(time.Now())

	insert := func(name string) func(ctx context.Context, tx *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO items (name, created_at) VALUES ($1, $2)`, name, now)
			return err
		}
	}
	tests := []struct {
		name    string
		fn      func(ctx context.Context, tx *sql.Tx) error
		wantErr bool
		wantIs  error // when set, the error must wrap it
	}{
		{name: "commit on nil", fn: insert("committed")},
		{
			name: "roll back on error",
			fn: func(ctx context.Context, tx *sql.Tx) error {
				if err := insert("rolled-back")(ctx, tx); err != nil {
					return err
				}
				return fmt.Errorf("later step: %w", errRollback)
			},
			wantErr: true, wantIs: errRollback,
		},
		{
			name: "roll back every statement",
			fn: func(ctx context.Context, tx *sql.Tx) error {
				for _, name := range []string{"a", "b", "c"} {
					if err := insert("rb-"+name)(ctx, tx); err != nil {
						return err
					}
				}
				return errRollback
			},
			wantErr: true, wantIs: errRollback,
		},
		{
			name: "statement error is returned and rolls back",
			fn: func(ctx context.Context, tx *sql.Tx) error {
				if err := insert("dup")(ctx, tx); err != nil {
					return err
				}
				return insert("dup")(ctx, tx) // UNIQUE violation
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := db.InTx(ctx, tt.fn)
			if (err != nil) != tt.wantErr {
				t.Fatalf("InTx(%s) = %v, want error %v", tt.name, err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("InTx(%s) = %v, want an error wrapping %v", tt.name, err, tt.wantIs)
			}
		})
	}
	got := names(t, db)
	want := []string{"committed"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored names = %v, want %v: only the committed transaction may leave rows", got, want)
	}
	// A rolled-back transaction must free the single write connection.
	if err := db.InTx(ctx, insert("after")); err != nil {
		t.Errorf("InTx after rollbacks = %v, want nil", err)
	}
}

func TestInTxCanceledContext(t *testing.T) {
	t.Parallel()
	db := sqldbtest.OpenSQLite(t, migrations)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	err := db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error { called = true; return nil })
	if err == nil || called {
		t.Errorf("InTx(canceled ctx) = %v (fn called %v), want an error and fn not called", err, called)
	}
	if err := db.InTx(t.Context(), func(ctx context.Context, tx *sql.Tx) error { return nil }); err != nil {
		t.Errorf("InTx after a canceled one = %v, want nil", err)
	}
}

// TestConcurrentWriters: SQLite allows one writer; the single write
// connection queues writers in Go so none of them sees "database is locked".
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqldbtest.OpenSQLite(t, migrations)
	const writers = 64

	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		wg.Go(func() {
			// A read-modify-write that loses updates unless transactions
			// really are serialized.
			errs <- db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				var n int
				if err := tx.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'writes'`).Scan(&n); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO items (name, created_at) VALUES ($1, $2)`,
					fmt.Sprintf("w%02d", i), sqldb.NewTime(time.Now())); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `UPDATE counters SET n = $1 WHERE name = 'writes'`, n+1)
				return err
			})
		})
		wg.Go(func() { // readers run beside the writers (WAL)
			var n int
			errs <- db.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent InTx or read = %v, want nil", err)
		}
	}
	var items, counter int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&items); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'writes'`).Scan(&counter); err != nil {
		t.Fatal(err)
	}
	if items != writers || counter != writers {
		t.Errorf("after %d writers: %d items, counter %d, want %d and %d", writers, items, counter, writers, writers)
	}
}

// TestReadsNeverWrite: the read pool is query-only, so a write sent there by
// mistake fails loudly instead of racing the write connection.
func TestReadsNeverWrite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqldbtest.OpenSQLite(t, migrations)
	rows, err := db.QueryContext(ctx, `INSERT INTO items (name, created_at) VALUES ('sneaky', 'x') RETURNING id`)
	if err == nil {
		for rows.Next() {
		}
		err = rows.Err()
		rows.Close()
	}
	if err == nil {
		t.Errorf("write through QueryContext = nil, want a read-only error")
	}
	if got := names(t, db); len(got) != 0 {
		t.Errorf("stored names = %v, want none", got)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := "sqlite:" + filepath.Join(t.TempDir(), "orders.db")
	created := sqldb.NewTime(time.Date(2024, 7, 8, 9, 10, 11, 123_456_789, time.UTC))
	sent := sqldb.NullTime{Time: sqldb.NewTime(created.Add(time.Second)), Valid: true}

	db, err := sqldb.Open(ctx, url, migrations)
	if err != nil {
		t.Fatalf("Open(%q) = %v", url, err)
	}
	err = db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO items (name, created_at, sent_at) VALUES ($1, $2, $3)`, "kept", created, sent); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO items (name, created_at, sent_at) VALUES ($1, $2, $3)`, "unsent", created, sqldb.NullTime{})
		return err
	})
	if err != nil {
		t.Fatalf("InTx(insert) = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	// Reopening applies the migrations again: goose must see they are done.
	db, err = sqldb.Open(ctx, url, migrations)
	if err != nil {
		t.Fatalf("reopen Open(%q) = %v", url, err)
	}
	t.Cleanup(func() { db.Close() })
	tests := []struct {
		name     string
		wantSent sqldb.NullTime
	}{
		{name: "kept", wantSent: sent},
		{name: "unsent", wantSent: sqldb.NullTime{}},
	}
	for _, tt := range tests {
		var gotCreated sqldb.Time
		var gotSent sqldb.NullTime
		err := db.QueryRowContext(ctx, `SELECT created_at, sent_at FROM items WHERE name = $1`, tt.name).Scan(&gotCreated, &gotSent)
		if err != nil {
			t.Fatalf("read %q after reopen: %v", tt.name, err)
		}
		if !gotCreated.Equal(created.Time) {
			t.Errorf("%s created_at = %v, want %v", tt.name, gotCreated.Time, created.Time)
		}
		if gotSent.Valid != tt.wantSent.Valid || !gotSent.Time.Equal(tt.wantSent.Time.Time) {
			t.Errorf("%s sent_at = %+v, want %+v", tt.name, gotSent, tt.wantSent)
		}
	}
}

// TestTimeOrdersInSQLite: ORDER BY on the stored text is chronological.
func TestTimeOrdersInSQLite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqldbtest.OpenSQLite(t, migrations)
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	in := map[string]time.Time{
		"d": base.Add(10 * time.Second),
		"a": base.Add(-time.Hour),
		"c": base.Add(2 * time.Microsecond),
		"b": base.Add(time.Microsecond),
		"e": base.Add(24 * time.Hour).In(time.FixedZone("", -10*3600)),
	}
	for name, at := range in {
		if _, err := db.ExecContext(ctx, `INSERT INTO items (name, created_at) VALUES ($1, $2)`, name, sqldb.NewTime(at)); err != nil {
			t.Fatalf("insert %s: %v", name, err)
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT name FROM items ORDER BY created_at`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		got += name
	}
	if got != "abcde" {
		t.Errorf("ORDER BY created_at = %q, want %q", got, "abcde")
	}
}

func names(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM items ORDER BY name`)
	if err != nil {
		t.Fatalf("list names: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatalf("scan name: %v", err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list names: %v", err)
	}
	return out
}

// TestOpenAnyPath: the data directory is the operator's choice, and a
// character that means something in a SQLite URI must not send the database
// to another file or drop its pragmas (WAL, synchronous FULL, …).
func TestOpenAnyPath(t *testing.T) {
	t.Parallel()
	for _, dirName := range []string{"plain", "with space", "with#hash", "with?question", "with%20escape", "100%", "a&b=c"} {
		t.Run(dirName, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), dirName, "orders.db")
			db, err := sqldb.Open(ctx, "sqlite:"+path, migrations)
			if err != nil {
				t.Fatalf("Open(sqlite:%s) = %v, want nil", path, err)
			}
			defer db.Close()
			var mode string
			if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
				t.Fatalf("PRAGMA journal_mode: %v", err)
			}
			if mode != "wal" {
				t.Errorf("Open(sqlite:%s) journal_mode = %q, want \"wal\"", path, mode)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("Open(sqlite:%s) left no file there: %v", path, err)
			}
		})
	}
}
