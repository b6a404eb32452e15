package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// TestStatementCache: cached statements give the answers uncached ones
// would, read side by side from many goroutines, inside transactions after
// one was rolled back, and past the cache's size.
func TestStatementCache(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqldbtest.OpenSQLite(t, migrations)
	now := sqldb.NewTime(time.Now())
	insert := `INSERT INTO items (name, created_at) VALUES ($1, $2)`

	err := db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insert, "kept", now); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("InTx = %v, want the rollback", err)
	}
	for i := range 3 {
		if err := db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, insert, fmt.Sprint("item-", i), now)
			return err
		}); err != nil {
			t.Fatalf("InTx %d after a rollback = %v", i, err)
		}
	}

	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			name := fmt.Sprint("item-", i%3)
			var got string
			if err := db.QueryRowContext(ctx, `SELECT name FROM items WHERE name = $1`, name).Scan(&got); err != nil || got != name {
				t.Errorf("read %s = %q, %v", name, got, err)
			}
		})
	}
	wg.Wait()

	// More distinct statements than the cache holds: the rest run uncached.
	for i := range 300 {
		var n int
		if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*) + %d FROM items`, i)).Scan(&n); err != nil || n != 3+i {
			t.Fatalf("query %d = %d, %v; want %d", i, n, err, 3+i)
		}
	}
	if err := db.QueryRowContext(ctx, `SELECT nothing FROM nowhere`).Scan(new(int)); err == nil {
		t.Error("a statement that does not prepare: no error")
	}
}

// BenchmarkQueryRowByID is one primary-key read through the read pool.
func BenchmarkQueryRowByID(b *testing.B) {
	db := sqldbtest.OpenSQLite(b, migrations)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO items (name, created_at) VALUES ('one', $1)`, sqldb.NewTime(time.Now())); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var name string
		if err := db.QueryRowContext(ctx, `SELECT name FROM items WHERE id = $1`, 1).Scan(&name); err != nil {
			b.Fatal(err)
		}
	}
}
