package telemetry_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: an OTLP
// exporter's batcher and connections must be gone once Shutdown returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
