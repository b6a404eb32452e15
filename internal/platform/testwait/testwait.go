// Package testwait waits in tests for what happens in other goroutines or
// processes: it polls a condition instead of sleeping a guessed time.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every 10 ms until it holds, failing the test when timeout
// passes first; what names the awaited state in the failure.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("after %s: still waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}
