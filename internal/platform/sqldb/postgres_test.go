package sqldb_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

var pgMigrations = fstest.MapFS{
	"migrations/postgres/00001_a.sql": {Data: []byte(`-- +goose Up
CREATE TABLE a (id TEXT PRIMARY KEY);
-- +goose Down
DROP TABLE a;
`)},
	"migrations/postgres/00002_b.sql": {Data: []byte(`-- +goose Up
CREATE TABLE b (id TEXT PRIMARY KEY);
INSERT INTO b VALUES ('only once');
-- +goose Down
DROP TABLE b;
`)},
}

// TestPostgresReplicasMigrateTogether: replicas of a service start at the
// same moment against one database. The advisory lock lets one apply the
// migrations; the others wait, find nothing to do, and start.
func TestPostgresReplicasMigrateTogether(t *testing.T) {
	t.Parallel()
	url := sqldbtest.CreatePostgresDatabase(t)
	const replicas = 6
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	for range replicas {
		wg.Go(func() {
			db, err := sqldb.Open(context.Background(), url, pgMigrations)
			if err == nil {
				err = db.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open by a replica = %v, want nil", err)
		}
	}
	db, err := sqldb.Open(context.Background(), url, pgMigrations)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM b`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("rows inserted by the migration = %d (%v), want 1: applied once", rows, err)
	}
}

// TestPostgresStatementTimeout: a statement that runs away is cut off by the
// server; the limit comes from the URL when set there.
func TestPostgresStatementTimeout(t *testing.T) {
	t.Parallel()
	url := sqldbtest.CreatePostgresDatabase(t)
	db, err := sqldb.Open(context.Background(), url+"&statement_timeout=100ms", pgMigrations)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.ExecContext(context.Background(), `SELECT pg_sleep(5)`)
	if err == nil || !strings.Contains(err.Error(), "statement timeout") {
		t.Errorf("pg_sleep(5) with a 100ms statement timeout = %v, want the server to cancel it", err)
	}
	var timeout string
	if err := db.QueryRowContext(context.Background(), `SHOW idle_in_transaction_session_timeout`).Scan(&timeout); err != nil || timeout != "30s" {
		t.Errorf("idle_in_transaction_session_timeout = %q (%v), want the default 30s", timeout, err)
	}
}

func TestPostgresPoolSizeFromURL(t *testing.T) {
	t.Parallel()
	url := sqldbtest.CreatePostgresDatabase(t)
	for _, bad := range []string{"0", "-1", "many"} {
		u := strings.Replace(url, "pool_max_conns=4", "pool_max_conns="+bad, 1)
		if _, err := sqldb.Open(context.Background(), u, pgMigrations); err == nil || !strings.Contains(err.Error(), "pool_max_conns") {
			t.Errorf("Open with pool_max_conns=%s = %v, want an error naming pool_max_conns", bad, err)
		}
	}
}
