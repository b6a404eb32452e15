package orders

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// TestSeed: seeded orders are what Create leaves behind. They are listed
// and read like placed ones; a key kept replays its order, as the saved
// answer of a real request does; an event kept is in the outbox already
// sent, leaving the relay nothing to do; what was purged or pruned is not
// there.
func TestSeed(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		t.Parallel()
		ts := newTestService(t, b)
		at := sqldb.NewTime(start.Add(-time.Hour)).Time
		placed := func(created time.Time) Order {
			return Order{ID: uuid.Must(uuid.NewV7()).String(), UserID: "user-1", SKU: "A-1", Qty: 2, Status: statusCreated, CreatedAt: created}
		}
		old := Placed{Order: placed(at.Add(-48 * time.Hour)), EventID: uuid.NewString()}
		recent := Placed{Order: placed(at), EventID: uuid.NewString(), Key: "key-1", SentAt: at.Add(5 * time.Millisecond)}
		if err := ts.Seed(t.Context(), []Placed{old, recent}); err != nil {
			t.Fatalf("Seed() = %v, want nil", err)
		}

		page, err := ts.List(t.Context(), "user-1", pagination.Request{Limit: 10})
		if err != nil || len(page.Items) != 2 || !sameOrder(page.Items[0], recent.Order) || !sameOrder(page.Items[1], old.Order) {
			t.Errorf("List() = %+v, %v; want the recent order, then the old one", page.Items, err)
		}
		if got, err := ts.Get(t.Context(), "user-1", old.Order.ID); err != nil || !sameOrder(got, old.Order) {
			t.Errorf("Get(old) = %+v, %v; want %+v", got, err, old.Order)
		}
		replay := ts.mustCreate(t, "user-1", "key-1", NewOrder{SKU: "A-1", Qty: 2})
		if !replay.Replayed || !sameOrder(replay.Order, recent.Order) {
			t.Errorf("Create() with the seeded key = %+v, want a replay of %+v", replay, recent.Order)
		}
		if rows, keys := ts.outboxRows(t), ts.keyRows(t); rows != 1 || keys != 1 {
			t.Errorf("outbox rows = %d, keys = %d; want 1 each: the recent order's", rows, keys)
		}
		if n := ts.count(t, `SELECT count(*) FROM outbox WHERE id = $1 AND sent_at IS NOT NULL`, recent.EventID); n != 1 {
			t.Errorf("the recent order's event sent: %d rows, want 1", n)
		}
	})
}
