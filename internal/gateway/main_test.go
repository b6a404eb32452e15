package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine they started (listeners
// and their connections, requests held in a slow handler, Redis clients)
// outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
