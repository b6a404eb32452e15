package users

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine they started (HTTP
// servers and their connections, concurrent registrations, database pools)
// outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
