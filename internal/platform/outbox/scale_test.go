package outbox_test

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// TestSeedClaimMarkSent: a seeded row is published already, so a claim
// leaves it alone and takes the pending ones, which mark-sent then marks.
func TestSeedClaimMarkSent(t *testing.T) {
	eachBackend(t, testSeedClaimMarkSent)
}

func testSeedClaimMarkSent(t *testing.T, db *sqldb.DB) {
	msgs := newMessages(t, 3, requestSpan(t))
	seeded, waiting := msgs[0], msgs[1:]
	err := db.InTx(t.Context(), func(ctx context.Context, tx *sql.Tx) error {
		return outbox.Seed(ctx, tx, seeded, time.Now(), "seeder")
	})
	if err != nil {
		t.Fatalf("Seed() error = %v", err)
	}
	insert(t, db, waiting...)
	if got := sentIDs(t, db); !slices.Equal(got, []string{seeded.ID}) {
		t.Fatalf("sent rows = %v, want the seeded one only", got)
	}

	claimed, err := outbox.Claim(t.Context(), db, "relay-1", 10)
	if err != nil {
		t.Fatalf("Claim() error = %v", err)
	}
	var ids []string
	for _, m := range claimed {
		ids = append(ids, m.ID)
	}
	if want := []string{waiting[0].ID, waiting[1].ID}; !slices.Equal(ids, want) {
		t.Fatalf("Claim() = %v, want the pending rows %v", ids, want)
	}
	if err := outbox.MarkSent(t.Context(), db, "relay-1", ids); err != nil {
		t.Fatalf("MarkSent() error = %v", err)
	}
	if n := pending(t, db); n != 0 {
		t.Errorf("pending rows = %d, want 0", n)
	}
}
