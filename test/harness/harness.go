// Package harness is what the process-level suites (test/cluster,
// test/fault) share: building the binary, a client load that behaves like a
// careful client (one Idempotency-Key per order, the same key again after
// any failure), and the invariants every run must end with, read from the
// databases and the streams themselves.
package harness

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Build compiles cmd/blueprint into dir and returns its path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "blueprint")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin,
		"github.com/ds-blueprint/blueprint/cmd/blueprint").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
