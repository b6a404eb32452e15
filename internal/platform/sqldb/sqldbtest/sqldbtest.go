// Package sqldbtest opens real databases for tests: a fresh SQLite file in
// the test's temp dir. Store tests run against it; no test mocks the database.
package sqldbtest

import (
	"context"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// OpenSQLite opens a migrated SQLite database that lives as long as the test.
func OpenSQLite(t testing.TB, migrations fs.FS) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "test.db"), migrations)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
