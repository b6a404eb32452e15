package upstream_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: calls in
// flight, the client's connections and the httptest servers must all be gone
// when the tests that made them end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
