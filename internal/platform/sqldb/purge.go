package sqldb

import (
	"context"
	"fmt"
)

// PurgeBatch is the most rows one statement of Purge deletes: few enough
// that no delete holds SQLite's single writer, or PostgreSQL's row locks,
// for long, so the requests writing meanwhile wait for one small batch at
// most.
const PurgeBatch = 1000

// Purge empties table of rows past keeping, a batch at a time, off the
// requests' path: query is a DELETE of at most PurgeBatch of them, whose
// last parameter is that limit (Purge passes it after args). It runs until
// a statement deletes fewer, and returns how many rows went.
//
// Deleting frees no space by itself on PostgreSQL: a deleted or updated row
// stays in the table until VACUUM marks its space reusable. Autovacuum does
// that when it is on and keeps up; a server with it off, or behind, would
// let a table that is written and emptied all day grow for ever. So Purge
// vacuums the table after deleting rows, which keeps its size at what it
// holds whatever the server's settings. SKIP_LOCKED skips the table when
// another replica or autovacuum is already at it; a database user that does
// not own the table gets a warning from PostgreSQL instead, and the work is
// autovacuum's again. SQLite reuses a deleted row's pages for the next
// inserts.
func (db *DB) Purge(ctx context.Context, table, query string, args ...any) (int64, error) {
	args = append(args[:len(args):len(args)], PurgeBatch)
	var total int64
	for {
		res, err := db.ExecContext(ctx, query, args...)
		if err != nil {
			return total, fmt.Errorf("purge %s: %w", table, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("purge %s: %w", table, err)
		}
		total += n
		if n < PurgeBatch {
			break
		}
	}
	if total > 0 && db.Dialect == Postgres {
		if _, err := db.ExecContext(ctx, `VACUUM (SKIP_LOCKED) `+table); err != nil {
			return total, fmt.Errorf("vacuum %s: %w", table, err)
		}
	}
	return total, nil
}
