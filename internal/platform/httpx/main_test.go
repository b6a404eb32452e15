package httpx_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine they started (servers
// run by Serve, httptest servers and their connections, requests in flight)
// outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
