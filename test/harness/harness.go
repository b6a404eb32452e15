// Package harness is what the process-level suites (test/cluster,
// test/fault, test/resilience, test/perf, deploy/observability) share:
// building the binary, a client load that behaves like a careful client
// (one Idempotency-Key per order, the same key again after any failure),
// the invariants every run must end with, read from the databases and the
// streams themselves, and the servers beside the system (Prometheus, the
// OpenTelemetry Collector on the shipped config).
package harness

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Build compiles cmd/blueprint into dir and returns its path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	bin, err := buildBinary(dir)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Main is a TestMain for suites that run the binary: it builds it into a
// temp dir, sets *bin, runs the tests, and returns their exit code (the
// caller may report, then os.Exit with it).
func Main(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "blueprint-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = buildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// buildBinary builds cmd/blueprint in Blueprint's own module, with its
// go.mod and go.sum, also for a suite with a module of its own (test/fault)
// that requires only what its tests import.
func buildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "blueprint")
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ds-blueprint/blueprint").Output()
	if err != nil {
		return "", fmt.Errorf("find Blueprint's module: %w", err)
	}
	out, err := exec.Command("go", "build", "-C", strings.TrimSpace(string(root)), "-o", bin, "./cmd/blueprint").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// LogTails shows the end of every process log in dir, access logs left
// out, to see why a run failed.
func LogTails(t testing.TB, dir string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var keep []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if !strings.Contains(l, `"msg":"request"`) {
				keep = append(keep, l)
			}
		}
		t.Logf("--- %s (last lines other than access logs)\n%s", filepath.Base(f), strings.Join(keep[max(0, len(keep)-20):], "\n"))
	}
}

// MetricSum adds up the series of a metric on a /metrics page whose labels
// contain every one of labels (e.g. `scope="user"`); with none, all of them.
func MetricSum(t testing.TB, opsURL, name string, labels ...string) int {
	t.Helper()
	resp, err := http.Get(opsURL + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue // another metric, or this one's _bucket, _sum…
		}
		if !slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(rest, l) }) {
			fields := strings.Fields(line)
			if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
				sum += v
			}
		}
	}
	return int(sum)
}
