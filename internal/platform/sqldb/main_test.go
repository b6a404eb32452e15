package sqldb_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine they started (database
// pools, concurrent writers) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
