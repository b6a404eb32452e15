package orders

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// TestFaultAfterCommit: a failure between the commit and the relay's
// wake-up (an injected error here; a crash in the process-level suite)
// loses nothing. The order and its event stay committed, the event pending
// for the relay's poll, and the client's retry with its key gets the order.
func TestFaultAfterCommit(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		faults, err := chaos.New(slog.New(slog.DiscardHandler), noop.NewMeterProvider(), FaultAfterCommit)
		if err != nil {
			t.Fatal(err)
		}
		ts.faults = faults
		if err := faults.Set(t.Context(), chaos.Rule{Route: FaultAfterCommit, ErrorRate: 1}); err != nil {
			t.Fatal(err)
		}
		body := NewOrder{SKU: "A-1", Qty: 2}

		_, err = ts.Create(t.Context(), "user-1", "key-1", body)
		if kind, code := appErr(t, err); kind != apperr.Unavailable || code != "chaos" {
			t.Fatalf("Create() at an injected fault = %v %q, want Unavailable %q", kind, code, "chaos")
		}
		if n := ts.orderRows(t); n != 1 {
			t.Errorf("order rows = %d, want 1: the order committed before the fault", n)
		}
		if n := ts.count(t, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`); n != 1 {
			t.Errorf("pending outbox rows = %d, want 1: the event waits for the relay", n)
		}
		if n := ts.written.Load(); n != 0 {
			t.Errorf("relay woken %d times, want 0: the fault came first", n)
		}

		var stored string
		if err := ts.db.QueryRowContext(t.Context(), `SELECT id FROM orders`).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		faults.ClearAll(t.Context())
		retry := ts.mustCreate(t, "user-1", "key-1", body)
		if !retry.Replayed || retry.Order.ID != stored {
			t.Errorf("retry with the key = %+v, want the committed order %s replayed", retry, stored)
		}
		if o, e := ts.orderRows(t), ts.outboxRows(t); o != 1 || e != 1 {
			t.Errorf("order, outbox rows after the retry = %d, %d, want 1, 1", o, e)
		}
	})
}

// TestFaultAfterKeyClaim: a request held up between the claim of its key and
// its order (a latency rule; a crash rule in the process-level suites)
// keeps the key locked for what is left of its deadline plus the margin,
// and a duplicate is told so; once it commits, the duplicate replays it.
func TestFaultAfterKeyClaim(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		faults, err := chaos.New(slog.New(slog.DiscardHandler), noop.NewMeterProvider(), FaultAfterKeyClaim)
		if err != nil {
			t.Fatal(err)
		}
		ts.faults = faults
		if err := faults.Set(t.Context(), chaos.Rule{Route: FaultAfterKeyClaim, LatencyMs: 1000}); err != nil {
			t.Fatal(err)
		}
		body := NewOrder{SKU: "A-1", Qty: 2}

		first := make(chan error, 1)
		go func() { // ends after the injected latency
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := ts.Create(ctx, "user-1", "key-1", body)
			first <- err
		}()
		testwait.For(t, time.Second, "the first request's claim", func() bool { return ts.keyRows(t) == 1 })
		_, err = ts.Create(t.Context(), "user-1", "key-1", body)
		inFlight, ok := errors.AsType[*keyInFlightError](err)
		if !ok || inFlight.left < 2*time.Second || inFlight.left > 2*time.Second+keyLockMargin {
			t.Errorf("Create() while the first waits after its claim = %v, want idempotency_key_in_flight with about 2.5 s left (its deadline and the margin)", err)
		}
		if err := <-first; err != nil {
			t.Fatalf("first Create() error = %v", err)
		}
		if again := ts.mustCreate(t, "user-1", "key-1", body); !again.Replayed {
			t.Errorf("Create() after the first committed = %+v, want a replay", again)
		}
	})
}
