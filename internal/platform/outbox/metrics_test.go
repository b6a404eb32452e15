package outbox_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// TestBacklogGauge: blueprint.outbox.pending shows the events waiting, read
// from the table at collection time, and drops to 0 once they are sent.
func TestBacklogGauge(t *testing.T) {
	t.Parallel()
	eachBackend(t, testBacklogGauge)
}

func testBacklogGauge(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	r := newRelay(t, cfg)

	backlog := func() int64 {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatalf("collect: %v", err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "blueprint.outbox.pending" && len(g.DataPoints) == 1 {
					return g.DataPoints[0].Value
				}
			}
		}
		t.Fatal("no blueprint.outbox.pending gauge")
		return 0
	}

	insert(t, db, newMessages(t, 3, requestSpan(t))...)
	if got := backlog(); got != 3 {
		t.Fatalf("blueprint.outbox.pending before the relay runs = %d, want 3", got)
	}
	runRelay(t, r)
	r.Notify()
	waitFor(t, waitTimeout, "the backlog to drain", func() bool { return backlog() == 0 })
}
