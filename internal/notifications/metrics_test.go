package notifications

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// series returns the series of the named family in the service's registry,
// each as its labels and the family's type-specific value.
func series(t *testing.T, tel *telemetry.Providers, name string) []*dto.Metric {
	t.Helper()
	families, err := tel.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// gaugeValue is the value of a gauge with a single series; ok is false
// when the gauge has none.
func gaugeValue(t *testing.T, tel *telemetry.Providers, name string) (float64, bool) {
	t.Helper()
	ms := series(t, tel, name)
	if len(ms) == 0 {
		return 0, false
	}
	if len(ms) != 1 {
		t.Fatalf("%s has %d series, want 1", name, len(ms))
	}
	if got := label(ms[0], "messaging_consumer_group_name"); got != ConsumerName {
		t.Errorf("%s messaging_consumer_group_name = %q, want %q", name, got, ConsumerName)
	}
	return ms[0].GetGauge().GetValue(), true
}

// TestConsumerMetrics: the consumer's lag, what the workers hold unacked and
// how much of it is a redelivery are read from JetStream at each scrape.
func TestConsumerMetrics(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com"})
	dir.failures = 1 // the first attempt fails before the channel: one redelivery
	release := make(chan struct{})
	cfg := env.workerConfig(t, dir, &fakeChannel{gate: release})
	cfg.Concurrency = 1
	w := newTestWorker(t, cfg)

	// Before the consumer exists a scrape works and reports nothing.
	if _, ok := gaugeValue(t, env.tel, "blueprint_consumer_pending"); ok {
		t.Errorf("blueprint_consumer_pending reported before the consumer exists")
	}

	runWorker(t, w)
	for range 3 {
		publishEvent(t, env.js, newEvent("user-1"))
	}
	// The first event fails once, comes back after its back-off, and then
	// blocks in the channel: delivered twice, unacked. The others wait.
	testwait.For(t, 15*time.Second, "one redelivered event held by the worker", func() bool {
		red, _ := gaugeValue(t, env.tel, "blueprint_consumer_redelivered")
		return red == 1
	})
	pending, _ := gaugeValue(t, env.tel, "blueprint_consumer_pending")
	ackPending, _ := gaugeValue(t, env.tel, "blueprint_consumer_ack_pending")
	if pending+ackPending != 3 || ackPending < 1 {
		t.Errorf("pending = %v, ack pending = %v; want 3 events between them, at least one held", pending, ackPending)
	}

	close(release)
	testwait.For(t, 15*time.Second, "every event acked", func() bool {
		pending, _ := gaugeValue(t, env.tel, "blueprint_consumer_pending")
		ackPending, _ := gaugeValue(t, env.tel, "blueprint_consumer_ack_pending")
		red, _ := gaugeValue(t, env.tel, "blueprint_consumer_redelivered")
		return pending == 0 && ackPending == 0 && red == 0
	})

	// messaging.process.duration: one failed attempt, by its error type, and
	// three that succeeded.
	counts := map[string]uint64{}
	for _, m := range series(t, env.tel, "messaging_process_duration_seconds") {
		if label(m, "messaging_system") != "nats" || label(m, "messaging_operation_name") != "process" ||
			label(m, "messaging_destination_name") != "orders.created" || label(m, "messaging_consumer_group_name") != ConsumerName {
			t.Errorf("messaging_process_duration_seconds series %v, want nats, process, orders.created, %s", m.GetLabel(), ConsumerName)
		}
		counts[label(m, "error_type")] += m.GetHistogram().GetSampleCount()
	}
	if counts[""] != 3 || counts["_OTHER"] != 1 || len(counts) != 2 {
		t.Errorf("messaging_process_duration_seconds counts by error_type = %v, want 3 without and 1 _OTHER", counts)
	}
}
