package notifications

import (
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// TestSeed: seeded notifications are listed like recorded ones, and an
// event recorded already stops the seed, as it stops the worker from
// notifying twice.
func TestSeed(t *testing.T) {
	t.Parallel()
	sqldbtest.Run(t, Migrations, func(t *testing.T, db *sqldb.DB) {
		svc := NewService(db)
		at := sqldb.NewTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)).Time
		var seeded []Recorded
		for i, id := range []string{"n1", "n2"} {
			created := at.Add(time.Duration(i) * time.Second)
			seeded = append(seeded, Recorded{EventID: "evt-" + id, Notification: Notification{
				ID: id, OrderID: "order-" + id, UserID: "user-1", Channel: "log", Status: statusSent, CreatedAt: created, SentAt: &created,
			}})
		}
		if err := svc.Seed(t.Context(), seeded); err != nil {
			t.Fatalf("Seed() = %v, want nil", err)
		}
		page, err := svc.List(t.Context(), "user-1", pagination.Request{Limit: 10})
		if err != nil || len(page.Items) != 2 || page.Items[0].ID != "n2" || page.Items[1].ID != "n1" {
			t.Fatalf("List() = %+v, %v; want n2 then n1", page.Items, err)
		}
		err = svc.Seed(t.Context(), seeded[:1])
		if err == nil || !strings.Contains(err.Error(), "already recorded") {
			t.Errorf("Seed(an event recorded already) = %v, want it refused", err)
		}
	})
}
