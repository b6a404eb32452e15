package notifications

import (
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
)

// TestWorkerFaultPoints: an error injected before delivery fails the
// attempt without calling the channel; one injected after delivery fails it
// with the message delivered but not recorded, so the retry delivers again
// (at least once, never recorded twice).
func TestWorkerFaultPoints(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	faults, err := chaos.New(testLogger(t), env.tel.Meter, FaultDeliver, FaultAfterDelivery)
	if err != nil {
		t.Fatal(err)
	}
	ch := &fakeChannel{}
	cfg := env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)
	cfg.Faults = faults
	w := newTestWorker(t, cfg)
	data := mustJSON(t, newEvent("user-1"))

	attempt := func(point string) error {
		t.Helper()
		faults.ClearAll(t.Context())
		if point != "" {
			if err := faults.Set(t.Context(), chaos.Rule{Route: point, ErrorRate: 1}); err != nil {
				t.Fatal(err)
			}
		}
		return w.process(t.Context(), data)
	}

	if err := attempt(FaultDeliver); !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("process at an injected %s error = %v, want Unavailable", FaultDeliver, err)
	}
	if n := len(ch.Attempts()); n != 0 {
		t.Errorf("channel called %d times, want 0: the fault comes before the delivery", n)
	}
	if err := attempt(FaultAfterDelivery); !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("process at an injected %s error = %v, want Unavailable", FaultAfterDelivery, err)
	}
	if d, r := len(ch.Delivered()), len(rows(t, env.db)); d != 1 || r != 0 {
		t.Errorf("delivered, recorded = %d, %d, want 1, 0", d, r)
	}
	if err := attempt(""); err != nil {
		t.Fatalf("process without faults = %v", err)
	}
	if d, r := len(ch.Delivered()), len(rows(t, env.db)); d != 2 || r != 1 {
		t.Errorf("delivered, recorded after the retry = %d, %d, want 2, 1", d, r)
	}
}
