package orders

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started (HTTP
// servers, concurrent callers, database pools) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
