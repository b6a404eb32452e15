package outbox_test

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// testLease is the lease of the relays these tests race against each other:
// shorter than the 5 s ack timeout, so that only its renewal keeps a relay
// waiting for an ack from losing its rows.
const testLease = 2 * time.Second

// eachBackendURL runs fn once per database backend, in parallel subtests
// named sqlite and postgres, each with the URL of a fresh, empty database
// (openDB gives it the orders schema), for tests that open it more than
// once: two processes, or a relay whose connection is cut. The postgres one skips, saying why,
// unless BLUEPRINT_TEST_POSTGRES_URL is set.
func eachBackendURL(t *testing.T, fn func(t *testing.T, dbURL string)) {
	t.Helper()
	backends := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "orders.db") }},
		{"postgres", func(t *testing.T) string { return sqldbtest.CreatePostgresDatabase(t) }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.url(t))
		})
	}
}

// openDB opens the database at dbURL (migrating it if need be) until the
// test ends.
func openDB(t *testing.T, dbURL string) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(t.Context(), dbURL, orders.Migrations)
	if err != nil {
		t.Fatalf("open %s: %v", dbURL, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// holdAfterClaim returns fault injection that holds every batch between its
// claim and its publish for d, as a slow relay would be held.
func holdAfterClaim(t *testing.T, d time.Duration) *chaos.Injector {
	t.Helper()
	faults, err := chaos.New(discard, noop.NewMeterProvider(), outbox.FaultAfterClaim)
	if err != nil {
		t.Fatalf("chaos.New() error = %v", err)
	}
	if err := faults.Set(t.Context(), chaos.Rule{Route: outbox.FaultAfterClaim, LatencyMs: int(d / time.Millisecond)}); err != nil {
		t.Fatalf("set the rule: %v", err)
	}
	return faults
}

// leaseOf is the relay that holds the row with id, and until when by the
// database's reckoning ("" and the zero time when none does).
func leaseOf(t *testing.T, db *sqldb.DB, id string) (string, time.Time) {
	t.Helper()
	var owner sql.NullString
	var until sqldb.NullTime
	if err := db.QueryRowContext(t.Context(), `SELECT claimed_by, claimed_until FROM outbox WHERE id = $1`, id).Scan(&owner, &until); err != nil {
		t.Fatalf("read the lease of %s: %v", id, err)
	}
	return owner.String, until.Time.Time
}

// takenOver is the value of blueprint.outbox.taken_over; 0 before any row
// was taken over.
func takenOver(t *testing.T, reader *sdkmetric.ManualReader) int64 {
	t.Helper()
	m, ok := findMetric(t, reader, "blueprint.outbox.taken_over")
	if !ok {
		return 0
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok || len(s.DataPoints) != 1 {
		t.Fatalf("blueprint.outbox.taken_over = %+v, want a counter with one value", m.Data)
	}
	return s.DataPoints[0].Value
}

// timedOut is the first recorded publish span of id that ended in an ack
// timeout.
func timedOut(rec *tracetest.SpanRecorder, id string) (sdktrace.ReadOnlySpan, bool) {
	for _, s := range publishSpans(rec, id) {
		if spanAttr(s, "error.type") == "timeout" {
			return s, true
		}
	}
	return nil, false
}

// TestRelayKeepsItsRowsWhileWaitingForAcks: a relay alive but slow — its
// publish stored, the ack held back for the 5 s ack timeout, more than twice
// its lease — renews its lease meanwhile, so another relay polling all along
// never publishes the row while the first one waits for its ack.
func TestRelayKeepsItsRowsWhileWaitingForAcks(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayKeepsItsRowsWhileWaitingForAcks)
}

func testRelayKeepsItsRowsWhileWaitingForAcks(t *testing.T, db *sqldb.DB) {
	addr, direct := startTCPNATS(t)
	proxy := newAckProxy(t, addr, events.OrderCreated)
	m := newMessage(t, events.OrderCreated, requestSpan(t))
	insert(t, db, m)

	slowCfg, slowRec := newTestConfig(t, db, connectJS(t, proxy.URL()))
	slowCfg.Owner, slowCfg.Lease = "slow", testLease
	runRelay(t, newRelay(t, slowCfg))
	waitClosed(t, proxy.Stalled(), "the slow relay to publish")

	otherCfg, otherRec := newTestConfig(t, db, direct)
	otherCfg.Owner, otherCfg.Lease, otherCfg.Poll = "other", testLease, 20*time.Millisecond
	runRelay(t, newRelay(t, otherCfg))

	var timeout sdktrace.ReadOnlySpan
	testwait.For(t, waitTimeout, "the slow relay's ack to time out", func() bool {
		var ok bool
		timeout, ok = timedOut(slowRec, m.ID)
		return ok
	})
	proxy.release()
	testwait.For(t, waitTimeout, "the row to be sent", func() bool { return pending(t, db) == 0 })

	for _, s := range publishSpans(otherRec, m.ID) {
		if s.StartTime().Before(timeout.EndTime()) {
			t.Errorf("the other relay published %s at %s, while the slow relay still waited for its ack (until %s)",
				m.ID, s.StartTime().Format(time.StampMicro), timeout.EndTime().Format(time.StampMicro))
		}
	}
	if got, want := streamIDs(streamMessages(t, direct)), []string{m.ID}; !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v (the event once)", got, want)
	}
}

// TestRelayReleasesItsRowsOnShutdown: a relay stopped with a batch in hand
// hands back the rows it did not send, so another relay sends them at once
// rather than after the lease, and counts no takeover. Stopped while waiting
// for acks, it waits for them first (at most the ack timeout); stopped while
// held before publishing, it stops at once and publishes nothing.
func TestRelayReleasesItsRowsOnShutdown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// hold makes cfg hold its batch once claimed and returns what is
		// true once it does.
		hold func(t *testing.T, cfg *outbox.RelayConfig, natsAddr string) func() bool
		// publishes says whether the relay publishes the batch it holds.
		publishes bool
	}{
		{"waiting for acks", func(t *testing.T, cfg *outbox.RelayConfig, natsAddr string) func() bool {
			proxy := newAckProxy(t, natsAddr, events.OrderCreated)
			cfg.JS = connectJS(t, proxy.URL())
			return func() bool { return isClosed(proxy.Stalled()) }
		}, true},
		{"held before publishing", func(t *testing.T, cfg *outbox.RelayConfig, _ string) func() bool {
			cfg.Faults = holdAfterClaim(t, chaos.MaxLatency)
			return func() bool { return true }
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, db *sqldb.DB) {
				testRelayReleasesItsRowsOnShutdown(t, db, tt.hold, tt.publishes)
			})
		})
	}
}

func testRelayReleasesItsRowsOnShutdown(t *testing.T, db *sqldb.DB, hold func(*testing.T, *outbox.RelayConfig, string) func() bool, publishes bool) {
	addr, direct := startTCPNATS(t)
	msgs := newMessages(t, 3, requestSpan(t))
	insert(t, db, msgs...)

	cfg, rec := newTestConfig(t, db, direct)
	cfg.Owner = "stopping"
	held := hold(t, &cfg, addr)
	r := newRelay(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }() // ends when cancel is called
	testwait.For(t, waitTimeout, "the relay to claim and hold its batch", func() bool {
		owner, _ := leaseOf(t, db, msgs[len(msgs)-1].ID)
		return owner == cfg.Owner && held()
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() after cancel = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Run() still running %s after cancel, want it to finish its batch and return", waitTimeout)
	}
	for _, m := range msgs {
		if owner, until := leaseOf(t, db, m.ID); owner != "" || !until.IsZero() {
			t.Errorf("row %s after shutdown: claimed by %q until %s, want released", m.ID, owner, until)
		}
	}
	if n := len(rec.Ended()); !publishes && n != 0 {
		t.Errorf("publish spans of the relay held before publishing = %d, want 0", n)
	}

	otherCfg, _ := newTestConfig(t, db, direct)
	reader := sdkmetric.NewManualReader()
	otherCfg.Owner, otherCfg.Meter = "other", sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	runRelay(t, newRelay(t, otherCfg))
	testwait.For(t, waitTimeout, "the other relay to send the rows", func() bool { return pending(t, db) == 0 })
	if n := takenOver(t, reader); n != 0 {
		t.Errorf("blueprint.outbox.taken_over = %d after a shutdown, want 0 (the rows were released)", n)
	}
	if got, want := streamIDs(streamMessages(t, direct)), ids(msgs); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v (each event once)", got, want)
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestRelayThatCannotRenewLosesItsRows: a relay cut off from the database
// while it holds a batch between claim and publish can no longer renew its
// lease. Another relay takes the rows once the lease has ended by the
// database's clock, and sends them; when the first relay goes on, it finds
// its lease lost and publishes none of them, so the stream never gets a
// second copy from it, however late it comes.
func TestRelayThatCannotRenewLosesItsRows(t *testing.T) {
	t.Parallel()
	eachBackendURL(t, testRelayThatCannotRenewLosesItsRows)
}

func testRelayThatCannotRenewLosesItsRows(t *testing.T, dbURL string) {
	db, cutDB := openDB(t, dbURL), openDB(t, dbURL)
	_, js := natsbustest.Start(t)
	msgs := newMessages(t, 3, requestSpan(t))
	insert(t, db, msgs...)

	// The relay is held after its claim for two leases: past the end of a
	// lease it cannot renew once cut off.
	cutCfg, cutRec := newTestConfig(t, cutDB, js)
	logs := &logtest.Buffer{}
	cutCfg.Owner, cutCfg.Lease, cutCfg.Faults = "cut", testLease, holdAfterClaim(t, 2*testLease)
	cutCfg.Logger = telemetry.NewLogger(logs, telemetry.LogJSON, false, slog.LevelInfo)
	runRelay(t, newRelay(t, cutCfg))
	testwait.For(t, waitTimeout, "the relay to claim the rows", func() bool {
		owner, _ := leaseOf(t, db, msgs[len(msgs)-1].ID)
		return owner == cutCfg.Owner
	})
	if err := cutDB.Close(); err != nil {
		t.Fatalf("close the relay's database: %v", err)
	}
	_, leaseEnd := leaseOf(t, db, msgs[0].ID) // renewed for the last time, if at all, before the cut

	otherCfg, _ := newTestConfig(t, db, js)
	reader := sdkmetric.NewManualReader()
	otherCfg.Owner, otherCfg.Lease, otherCfg.Poll = "other", testLease, 20*time.Millisecond
	otherCfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	runRelay(t, newRelay(t, otherCfg))
	testwait.For(t, waitTimeout, "the other relay to take over and send the rows", func() bool { return pending(t, db) == 0 })
	if n := takenOver(t, reader); n != int64(len(msgs)) {
		t.Errorf("blueprint.outbox.taken_over = %d, want %d", n, len(msgs))
	}
	for _, m := range msgs {
		var by string
		var at sqldb.Time
		if err := db.QueryRowContext(t.Context(), `SELECT sent_by, sent_at FROM outbox WHERE id = $1`, m.ID).Scan(&by, &at); err != nil {
			t.Fatalf("read row %s: %v", m.ID, err)
		}
		if by != "other" || at.Before(leaseEnd) {
			t.Errorf("row %s sent by %q at %s, want by other after the lease ended at %s", m.ID, by, at, leaseEnd)
		}
	}

	// The cut relay's hold ends; it must find its lease lost.
	testwait.For(t, waitTimeout, "the cut relay to give up its batch", func() bool {
		return slices.ContainsFunc(logs.Records(t, "outbox relay failed; retrying"), func(rec map[string]any) bool {
			msg, _ := rec["error"].(string)
			return strings.Contains(msg, "outbox lease lost")
		})
	})
	if n := len(cutRec.Ended()); n != 0 {
		t.Errorf("publish spans of the relay that lost its lease = %d, want 0", n)
	}
	if got, want := streamIDs(streamMessages(t, js)), ids(msgs); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v (each event once)", got, want)
	}
}
