package app

import (
	"testing"
)

// TestPprofIsOptIn: the ops listeners serve Go profiles only with
// PPROF_ENABLED, since the profiles show the command line and cost the
// process CPU, and an ops port is reachable from inside a cluster.
func TestPprofIsOptIn(t *testing.T) {
	t.Parallel()
	paths := []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/heap"}
	off := startApp(t)
	for _, p := range paths {
		if status, _ := get(t, off["orders_ops"]+p); status != 404 {
			t.Errorf("GET %s by default = %d, want 404", p, status)
		}
	}
	on := startApp(t, "--pprof")
	for _, p := range paths {
		if status, _ := get(t, on["orders_ops"]+p); status != 200 {
			t.Errorf("GET %s with --pprof = %d, want 200", p, status)
		}
	}
}
