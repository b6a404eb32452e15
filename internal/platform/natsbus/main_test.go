package natsbus_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// embedded server and every connection a test opens must be stopped or
// closed by that test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
