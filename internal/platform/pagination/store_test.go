package pagination_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// schema is the same in both dialects: instants are sqldb.Time text.
const schema = `-- +goose Up
CREATE TABLE orders (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE orders;
`

var migrations = fstest.MapFS{
	"migrations/sqlite/00001_orders.sql":   {Data: []byte(schema)},
	"migrations/postgres/00001_orders.sql": {Data: []byte(schema)},
}

type order struct {
	ID        string
	CreatedAt time.Time
}

// TestKeysetPaging walks a real table page by page the way a list
// endpoint does and checks every row comes exactly once, newest first, even
// when many rows share a timestamp and rows arrive between pages.
func TestKeysetPaging(t *testing.T) {
	t.Parallel()
	sqldbtest.Run(t, migrations, func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()

		base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
		insert := func(id, user string, at time.Time) {
			t.Helper()
			if _, err := db.ExecContext(ctx, `INSERT INTO orders (id, user_id, created_at) VALUES ($1, $2, $3)`,
				id, user, sqldb.NewTime(at)); err != nil {
				t.Fatalf("insert %s: %v", id, err)
			}
		}
		var want []string
		for i := range 47 {
			// Groups of five share one microsecond: id alone orders them.
			at := base.Add(time.Duration(i/5) * time.Microsecond)
			id := fmt.Sprintf("o%03d", i)
			insert(id, "u1", at)
			insert("other-"+id, "u2", at)
			want = append(want, id)
		}
		slices.Reverse(want)

		for _, limit := range []int{1, 5, 7, 47, 100} {
			t.Run("limit "+strconv.Itoa(limit), func(t *testing.T) {
				var got []string
				q := url.Values{"limit": {strconv.Itoa(limit)}}
				for pages := 0; ; pages++ {
					if maxPages := len(want)/limit + 1; pages > maxPages {
						t.Fatalf("still paging after %d pages, want at most %d", pages, maxPages)
					}
					page := listOrders(ctx, t, db, q)
					if len(page.Items) > limit {
						t.Fatalf("page has %d items, want at most %d", len(page.Items), limit)
					}
					for _, o := range page.Items {
						got = append(got, o.ID)
					}
					if page.NextCursor == nil {
						break
					}
					q.Set("cursor", *page.NextCursor)
				}
				if !slices.Equal(got, want) {
					t.Errorf("paged ids = %v, want %v", got, want)
				}
			})
		}

		t.Run("rows inserted between pages", func(t *testing.T) {
			q := url.Values{"limit": {"10"}}
			first := listOrders(ctx, t, db, q)
			insert("o999", "u1", base.Add(time.Hour)) // newer than everything
			q.Set("cursor", *first.NextCursor)
			second := listOrders(ctx, t, db, q)
			if got, want := second.Items[0].ID, want[10]; got != want {
				t.Errorf("second page starts with %s, want %s: a new row must not shift the pages", got, want)
			}
		})
	})
}

func listOrders(ctx context.Context, t *testing.T, db *sqldb.DB, q url.Values) pagination.Page[order] {
	t.Helper()
	req, err := pagination.Parse(q)
	if err != nil {
		t.Fatalf("Parse(%v) = %v", q, err)
	}
	query, args := req.SQL(`SELECT id, created_at FROM orders WHERE user_id = $1`, []any{"u1"})
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		t.Fatalf("query %q: %v", query, err)
	}
	defer rows.Close()
	var out []order
	for rows.Next() {
		var o order
		var at sqldb.Time
		if err := rows.Scan(&o.ID, &at); err != nil {
			t.Fatalf("scan: %v", err)
		}
		o.CreatedAt = at.Time
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	return pagination.NewPage(out, req.Limit, func(o order) pagination.Cursor {
		return pagination.Cursor{CreatedAt: o.CreatedAt, ID: o.ID}
	})
}
