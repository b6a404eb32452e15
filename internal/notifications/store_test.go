package notifications

import (
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

func TestRecordIsIdempotentPerEvent(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		db := b.Open(t, Migrations)
		ctx := t.Context()
		at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		first := Notification{ID: "n-1", OrderID: "ord-1", UserID: "user-1", Channel: "log", Status: statusSent, CreatedAt: at, SentAt: &at}
		// A replica that raced the first: another notification id, same event.
		second := first
		second.ID = "n-2"

		steps := []struct {
			name string
			n    Notification
			want bool
		}{
			{"first record", first, true},
			{"same event again", second, false},
			{"exact repeat", first, false},
		}
		for _, s := range steps {
			got, err := record(ctx, db, "evt-1", s.n)
			if err != nil {
				t.Fatalf("%s: record(evt-1, %s) error: %v", s.name, s.n.ID, err)
			}
			if got != s.want {
				t.Errorf("%s: record(evt-1, %s) = %v, want %v", s.name, s.n.ID, got, s.want)
			}
		}
		if got := rows(t, db); len(got) != 1 || got[0].ID != "n-1" || got[0].EventID != "evt-1" {
			t.Errorf("rows = %s\nwant only n-1 for evt-1", fmtRows(got))
		}

		for _, tt := range []struct {
			eventID string
			want    bool
		}{
			{"evt-1", true},
			{"evt-2", false},
		} {
			got, err := recorded(ctx, db, tt.eventID)
			if err != nil || got != tt.want {
				t.Errorf("recorded(%s) = %v, %v; want %v, nil", tt.eventID, got, err, tt.want)
			}
		}
	})
}

func TestProcessTwiceDeliversOnce(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		env := newTestEnvOn(t, b)
		dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com"})
		ch := &fakeChannel{}
		w := newTestWorker(t, env.workerConfig(t, dir, ch))
		ev := newEvent("user-1")
		data := mustJSON(t, ev)

		// A redelivery of an event already recorded (the ack was lost) must only
		// be acked again: no lookup, no delivery, no second row.
		for i := range 2 {
			if err := w.process(t.Context(), data); err != nil {
				t.Fatalf("process #%d = %v, want nil", i+1, err)
			}
		}
		if got := ch.Attempts(); len(got) != 1 || got[0].EventID != ev.ID {
			t.Errorf("deliveries = %v, want one for %s", eventIDs(got), ev.ID)
		}
		if got := len(dir.Calls()); got != 1 {
			t.Errorf("Directory.Email calls = %d, want 1", got)
		}
		if got := rowCount(t, env.db); got != 1 {
			t.Errorf("rows = %d, want 1", got)
		}
		if got := counter(t, env.tel, metricSent); got != 1 {
			t.Errorf("%s = %v, want 1", metricSent, got)
		}
	})
}

// TestProcessRacingReplicasRecordOnce runs one event through two workers at
// once, as two replicas do when an event was published twice or redelivered
// while the first replica still held it. Both pass the "already recorded?"
// check before either records, so both deliver (the Channel contract allows
// a repeat; the webhook channel sends the event id as an idempotency key),
// but the unique event id lets only one record.
func TestProcessRacingReplicasRecordOnce(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		env := newTestEnvOn(t, b)
		release := make(chan struct{})
		ch := &fakeChannel{gate: release}
		w := newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch))
		data := mustJSON(t, newEvent("user-1"))

		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() { errs[i] = w.process(t.Context(), data) }) // ends once release is closed
		}
		testwait.For(t, 5*time.Second, "both deliveries in flight", func() bool { return ch.InFlight() == 2 })
		close(release)
		wg.Wait()

		for i, err := range errs {
			if err != nil {
				t.Errorf("process #%d = %v, want nil (a lost race is not a failure)", i+1, err)
			}
		}
		if got := rowCount(t, env.db); got != 1 {
			t.Errorf("rows = %d, want 1", got)
		}
		// blueprint.notifications.sent is "notifications delivered and
		// recorded": the replica whose record lost the race recorded nothing.
		if got := counter(t, env.tel, metricSent); got != 1 {
			t.Errorf("%s = %v after one notification was recorded, want 1", metricSent, got)
		}
	})
}
