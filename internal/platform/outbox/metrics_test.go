package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// findMetric collects what reader holds now and returns the metric named name.
func findMetric(t *testing.T, reader *sdkmetric.ManualReader, name string) (metricdata.Metrics, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// gauge is the single value of the gauge named name.
func gauge[N int64 | float64](t *testing.T, reader *sdkmetric.ManualReader, name string) N {
	t.Helper()
	m, ok := findMetric(t, reader, name)
	g, isGauge := m.Data.(metricdata.Gauge[N])
	if !ok || !isGauge || len(g.DataPoints) != 1 {
		t.Fatalf("metric %s = %+v, want a gauge with one value", name, m.Data)
	}
	return g.DataPoints[0].Value
}

// histogram is the data point of the histogram named name whose attributes
// are exactly attrs; ok is false when there is none.
func histogram(t *testing.T, reader *sdkmetric.ManualReader, name string, attrs ...attribute.KeyValue) (metricdata.HistogramDataPoint[float64], bool) {
	t.Helper()
	m, ok := findMetric(t, reader, name)
	if !ok {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("metric %s = %T, want a float64 histogram", name, m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, dp := range h.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp, true
		}
	}
	return metricdata.HistogramDataPoint[float64]{}, false
}

// publishAttrs are the attributes messaging.client.operation.duration
// records for a publish to subject that ended in errType ("" for success).
func publishAttrs(subject, errType string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.name", "publish"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.destination.name", subject),
	}
	if errType != "" {
		attrs = append(attrs, attribute.String("error.type", errType))
	}
	return attrs
}

// publishCount is how many publishes to subject that ended in errType ("" for
// success) messaging.client.operation.duration has recorded.
func publishCount(t *testing.T, reader *sdkmetric.ManualReader, subject, errType string) uint64 {
	t.Helper()
	dp, _ := histogram(t, reader, "messaging.client.operation.duration", publishAttrs(subject, errType)...)
	return dp.Count
}

// TestBacklogGauges: blueprint.outbox.pending and
// blueprint.outbox.oldest_pending_age are read from the table at collection
// time, so they show the backlog growing while the relay cannot publish, and
// drop to 0 once it has sent everything.
func TestBacklogGauges(t *testing.T) {
	t.Parallel()
	eachBackend(t, testBacklogGauges)
}

func testBacklogGauges(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var natsUp atomic.Bool
	prepare := cfg.Prepare
	cfg.Prepare = func(ctx context.Context) error {
		if !natsUp.Load() {
			return errors.New("nats is away")
		}
		return prepare(ctx)
	}
	r := newRelay(t, cfg)
	if got := gauge[int64](t, reader, "blueprint.outbox.pending"); got != 0 {
		t.Errorf("blueprint.outbox.pending of an empty outbox = %d, want 0", got)
	}
	if got := gauge[float64](t, reader, "blueprint.outbox.oldest_pending_age"); got != 0 {
		t.Errorf("blueprint.outbox.oldest_pending_age of an empty outbox = %v, want 0", got)
	}

	runRelay(t, r)
	msgs := newMessages(t, 3, requestSpan(t))
	msgs[0].CreatedAt = time.Now().Add(-time.Minute) // the first in line, committed a minute ago
	insert(t, db, msgs...)
	r.Notify()
	if got := gauge[int64](t, reader, "blueprint.outbox.pending"); got != 3 {
		t.Errorf("blueprint.outbox.pending while the relay cannot publish = %d, want 3", got)
	}
	if got := gauge[float64](t, reader, "blueprint.outbox.oldest_pending_age"); got < 60 {
		t.Errorf("blueprint.outbox.oldest_pending_age while the relay cannot publish = %vs, want at least 60s", got)
	}

	natsUp.Store(true)
	r.Notify()
	testwait.For(t, waitTimeout, "the backlog to drain", func() bool {
		return gauge[int64](t, reader, "blueprint.outbox.pending") == 0
	})
	if got := gauge[float64](t, reader, "blueprint.outbox.oldest_pending_age"); got != 0 {
		t.Errorf("blueprint.outbox.oldest_pending_age once sent = %v, want 0", got)
	}
}

// TestBacklogGaugesWhileTheTableCannotBeRead: the gauges go missing, but
// the collection succeeds, so the relay's other metrics are still pushed.
func TestBacklogGaugesWhileTheTableCannotBeRead(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, db *sqldb.DB) {
		_, js := natsbustest.Start(t)
		cfg, _ := newTestConfig(t, db, js)
		reader := sdkmetric.NewManualReader()
		cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		newRelay(t, cfg)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Errorf("Collect() with the table unreadable = %v, want nil", err)
		}
		if m, ok := findMetric(t, reader, "blueprint.outbox.pending"); ok {
			t.Errorf("blueprint.outbox.pending = %+v with the table unreadable, want it missing", m.Data)
		}
	})
}

// TestPublishMetrics: every publish is timed in
// messaging.client.operation.duration, failures with their error.type, and
// every acknowledged event's lag from its commit is in blueprint.outbox.lag.
func TestPublishMetrics(t *testing.T) {
	t.Parallel()
	eachBackend(t, testPublishMetrics)
}

func testPublishMetrics(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sc := requestSpan(t)
	msgs := newMessages(t, 3, sc)
	for i := range msgs {
		msgs[i].CreatedAt = time.Now().Add(-time.Minute) // committed while NATS was away
	}
	// No stream holds this subject: JetStream never acknowledges it.
	refused := newMessage(t, "nowhere.created", sc)
	insert(t, db, append(msgs, refused)...)

	runRelay(t, newRelay(t, cfg))
	testwait.For(t, waitTimeout, "the acknowledged rows to be sent and the refused one tried", func() bool {
		return pending(t, db) == 1 && publishCount(t, reader, refused.Subject, "no_responders") >= 1
	})

	if got := publishCount(t, reader, events.OrderCreated, ""); got != uint64(len(msgs)) {
		t.Errorf("messaging.client.operation.duration count for %s = %d, want %d", events.OrderCreated, got, len(msgs))
	}
	lag, ok := histogram(t, reader, "blueprint.outbox.lag", attribute.String("messaging.destination.name", events.OrderCreated))
	if !ok || lag.Count != uint64(len(msgs)) {
		t.Fatalf("blueprint.outbox.lag for %s = %+v, want %d values", events.OrderCreated, lag, len(msgs))
	}
	// Lag runs from the commit, not from the claim.
	if lowest, ok := lag.Min.Value(); !ok || lowest < 60 {
		t.Errorf("blueprint.outbox.lag min = %vs, want at least 60s", lowest)
	}
	// Exemplars link a value to the trace of the order that caused it.
	traceID := sc.TraceID()
	if len(lag.Exemplars) == 0 || !bytes.Equal(lag.Exemplars[0].TraceID, traceID[:]) {
		t.Errorf("blueprint.outbox.lag exemplars = %+v, want one in trace %s", lag.Exemplars, traceID)
	}
	if _, ok := histogram(t, reader, "blueprint.outbox.lag", attribute.String("messaging.destination.name", refused.Subject)); ok {
		t.Errorf("blueprint.outbox.lag has %s, which was never acknowledged", refused.Subject)
	}
}
