package outbox_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// TestPrunerDeletesSentRowsPastRetention fills the outbox with rows sent
// long ago (more than two delete batches of them), rows sent within the
// window and rows never sent, and checks that one round deletes exactly the
// first kind, and that the metrics say so.
func TestPrunerDeletesSentRowsPastRetention(t *testing.T) {
	eachBackend(t, testPrunerDeletesSentRowsPastRetention)
}

func testPrunerDeletesSentRowsPastRetention(t *testing.T, db *sqldb.DB) {
	const old, recent, unsent = 2300, 150, 120
	msgs := newMessages(t, old+recent+unsent, requestSpan(t))
	insert(t, db, msgs...)
	const retention = 50 * time.Millisecond
	time.Sleep(2 * retention) // every row is now written before the window
	now := time.Now()
	markSentAt(t, db, msgs[:old], now.Add(-time.Hour))
	// Sent "after" the cutoff of the round below, however slowly it starts.
	markSentAt(t, db, msgs[old:old+recent], now.Add(time.Hour))

	reader := sdkmetric.NewManualReader()
	p, err := outbox.NewPruner(outbox.PrunerConfig{DB: db, Retention: retention, Logger: discard,
		Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findMetric(t, reader, "blueprint.outbox.rows"); ok {
		t.Error("blueprint.outbox.rows reported before any round counted the table")
	}
	n, err := p.Prune(t.Context())
	if err != nil {
		t.Fatalf("Prune() error = %v", err)
	}
	if n != old {
		t.Errorf("Prune() deleted %d rows, want the %d sent before the window", n, old)
	}
	if got := sentIDs(t, db); len(got) != recent || got[0] != msgs[old].ID {
		t.Errorf("sent rows left = %d (first %v), want the %d sent within the window", len(got), got[:min(1, len(got))], recent)
	}
	if got := pending(t, db); got != unsent {
		t.Errorf("pending rows = %d, want all %d unsent rows kept", got, unsent)
	}
	if got := gauge[int64](t, reader, "blueprint.outbox.rows"); got != recent+unsent {
		t.Errorf("blueprint.outbox.rows = %d, want %d", got, recent+unsent)
	}
	m, _ := findMetric(t, reader, "blueprint.outbox.pruned")
	if sum, ok := m.Data.(metricdata.Sum[int64]); !ok || len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != old {
		t.Errorf("blueprint.outbox.pruned = %+v, want %d", m.Data, old)
	}

	// Nothing left to delete: a second round deletes nothing.
	if n, err := p.Prune(t.Context()); err != nil || n != 0 {
		t.Errorf("second Prune() = %d, %v; want 0, nil", n, err)
	}
}

// TestPrunedOutboxStopsGrowing is the outbox under a steady load: every
// round inserts a batch of events, sends them and prunes them. The table's
// size on disk must stop growing after the first rounds, as pruned rows'
// space is reused — on PostgreSQL whether or not autovacuum runs.
func TestPrunedOutboxStopsGrowing(t *testing.T) {
	eachBackend(t, testPrunedOutboxStopsGrowing)
}

func testPrunedOutboxStopsGrowing(t *testing.T, db *sqldb.DB) {
	const rounds, perRound = 12, 1500
	p, err := outbox.NewPruner(outbox.PrunerConfig{DB: db, Retention: time.Millisecond, Logger: discard,
		Meter: sdkmetric.NewMeterProvider()})
	if err != nil {
		t.Fatal(err)
	}
	sc := requestSpan(t)
	var sizes []int64
	for range rounds {
		insert(t, db, newMessages(t, perRound, sc)...)
		time.Sleep(2 * time.Millisecond) // written before the window
		if _, err := db.ExecContext(t.Context(), `UPDATE outbox SET sent_at = $1, sent_by = 'test' WHERE sent_at IS NULL`,
			sqldb.NewTime(time.Now().Add(-time.Hour))); err != nil {
			t.Fatal(err)
		}
		if n, err := p.Prune(t.Context()); err != nil || n != perRound {
			t.Fatalf("Prune() = %d, %v; want %d, nil", n, err, perRound)
		}
		sizes = append(sizes, tableBytes(t, db))
	}
	// The first rounds size the table for one batch; the rest reuse it. Not
	// kept, the space would grow by a batch a round (4× by the last round).
	// A transaction still running elsewhere on the server when a batch was
	// deleted keeps that batch from being vacuumed until the next round,
	// hence the slack.
	if last, settled := sizes[rounds-1], sizes[2]; last > 2*settled {
		t.Errorf("outbox size by round = %v bytes: still growing after %d rounds of %d rows each inserted, sent and pruned",
			sizes, rounds, perRound)
	}
}

// tableBytes is what the outbox and its indexes take on disk.
func tableBytes(t *testing.T, db *sqldb.DB) int64 {
	t.Helper()
	query := `SELECT pg_total_relation_size('outbox')`
	if db.Dialect == sqldb.SQLite {
		// The whole file: SQLite frees pages within it, never gives them back.
		query = `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`
	}
	var n int64
	if err := db.QueryRowContext(t.Context(), query).Scan(&n); err != nil {
		t.Fatalf("size of the outbox: %v", err)
	}
	return n
}

func TestNewPrunerRefusesNoRetention(t *testing.T) {
	if _, err := outbox.NewPruner(outbox.PrunerConfig{Retention: 0}); err == nil {
		t.Error("NewPruner with a retention of 0: no error")
	}
}

// markSentAt marks msgs sent at the given time, as the relay would have.
func markSentAt(t *testing.T, db *sqldb.DB, msgs []outbox.Message, at time.Time) {
	t.Helper()
	for _, m := range msgs {
		if _, err := db.ExecContext(context.WithoutCancel(t.Context()),
			`UPDATE outbox SET sent_at = $1, sent_by = 'test' WHERE id = $2`, sqldb.NewTime(at), m.ID); err != nil {
			t.Fatalf("mark %s sent: %v", m.ID, err)
		}
	}
}
