package sqldb_test

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// notes is a schema both dialects accept.
const notes = `-- +goose Up
CREATE TABLE notes (id TEXT PRIMARY KEY, owner TEXT NOT NULL);
CREATE INDEX notes_by_owner ON notes (owner, id);

-- +goose Down
DROP TABLE notes;
`

var notesMigrations = fstest.MapFS{
	"migrations/sqlite/00001_notes.sql":   {Data: []byte(notes)},
	"migrations/postgres/00001_notes.sql": {Data: []byte(notes)},
}

// TestStatementHookAndCustomPlan: the hook sees each statement with the
// values bound to it, those of a transaction's included, and a query run
// with QueryCustomPlan answers as QueryContext does.
func TestStatementHookAndCustomPlan(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		t.Parallel()
		ctx := t.Context()
		var mu sync.Mutex
		seen := map[string][]any{}
		db := b.Open(t, notesMigrations, sqldb.WithStatementHook(func(query string, args []any) {
			mu.Lock()
			defer mu.Unlock()
			seen[query] = args
		}))
		insert := `INSERT INTO notes (id, owner) VALUES ($1, $2)`
		err := db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			for _, id := range []string{"n1", "n2"} {
				if _, err := tx.ExecContext(ctx, insert, id, "owner-1"); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("InTx() = %v", err)
		}
		list := `SELECT id FROM notes WHERE owner = $1 ORDER BY id`
		var got [2][]string
		for i, query := range []func(context.Context, string, ...any) (*sql.Rows, error){db.QueryContext, db.QueryCustomPlan} {
			rows, err := query(ctx, list, "owner-1")
			if err != nil {
				t.Fatalf("query %d: %v", i, err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				got[i] = append(got[i], id)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
		}
		if want := []string{"n1", "n2"}; !slices.Equal(got[0], want) || !slices.Equal(got[1], want) {
			t.Errorf("QueryContext = %v, QueryCustomPlan = %v; want %v from both", got[0], got[1], want)
		}

		mu.Lock()
		defer mu.Unlock()
		// On PostgreSQL pgx's options come before the values.
		if args := seen[insert]; len(args) < 2 || args[len(args)-2] != "n2" || args[len(args)-1] != "owner-1" {
			t.Errorf("hook saw %s with %v, want the values n2, owner-1 last", insert, args)
		}
		if args := seen[list]; len(args) < 1 || args[len(args)-1] != "owner-1" {
			t.Errorf("hook saw %s with %v, want the value owner-1 last", list, args)
		}
	})
}
