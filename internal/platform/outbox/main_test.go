package outbox_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: the
// relay's Run, the embedded NATS servers and their connections must all be
// stopped by the tests that started them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
