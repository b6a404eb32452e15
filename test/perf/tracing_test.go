//go:build perf

// Package perf measures what Blueprint's machinery costs under load, for
// docs/benchmarks.md. It asserts nothing about speed; it prints figures:
//
//	go test -tags=perf -v ./test/perf/
package perf

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry/telemetrytest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// TestTracingCost runs GET /users/me as fast as 16 clients can against the
// all-in-one binary, once with tracing off (sampler always_off) and once
// with every request traced and exported over OTLP to the OpenTelemetry
// Collector on the shipped config (BLUEPRINT_TEST_OTELCOL; its Tempo is a
// receiver in the test), and prints requests per second and the binary's
// CPU time per request. The collector's own CPU is printed apart: on this
// machine it competes with the binary for the same cores.
func TestTracingCost(t *testing.T) {
	harness.OtelcolBinary(t) // skips before the build when there is none
	dir := t.TempDir()
	bin := harness.Build(t, dir)
	tempo := telemetrytest.NewCollector(t)
	collector := harness.StartCollector(t, filepath.Join(dir, "otelcol"), tempo.URL, tempo.URL)
	modes := []struct {
		name string
		env  []string
	}{
		{"tracing off", []string{"OTEL_TRACES_SAMPLER=always_off"}},
		{"100 % sampled, exported over OTLP to the collector", []string{"OTEL_TRACES_SAMPLER=always_on",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" + collector.OTLP + "/v1/traces"}},
	}
	for _, m := range modes {
		c := harness.StartCluster(t, localcluster.Config{
			Binary: bin, Dir: filepath.Join(t.TempDir(), "cluster"), AllInOne: true,
			// The console would receive every sampled span too: its cost
			// is measured apart (docs/benchmarks.md#the-console).
			Env: append([]string{"RATE_LIMITS_ENABLED=false", "CONSOLE_ENABLED=false"}, m.env...),
		})
		client := harness.NewClient(16, harness.Gateways(c)...)
		token := client.SignUp(t, 0)
		url := client.Gateways[0] + "/users/me"
		run(t, client, url, token, 2*time.Second) // warm up
		p := c.Get("blueprint")
		cpu0, colCPU0 := cpuTime(t, p.Pid()), cpuTime(t, collector.Pid)
		n, failed := run(t, client, url, token, 10*time.Second)
		cpu, colCPU := cpuTime(t, p.Pid())-cpu0, cpuTime(t, collector.Pid)-colCPU0
		if failed > 0 {
			t.Errorf("%s: %d requests failed", m.name, failed)
		}
		t.Logf("%s: %d requests in 10 s = %.0f req/s; binary CPU %.0f µs per request (%s over the run); collector CPU %.0f µs per request; spans in Tempo so far %d",
			m.name, n, float64(n)/10, float64(cpu.Microseconds())/float64(n), cpu.Round(time.Millisecond),
			float64(colCPU.Microseconds())/float64(n), len(tempo.Spans()))
	}
}

// run sends GET url from 16 clients in a closed loop for d and returns the
// answers that were 200 and the others.
func run(t *testing.T, c *harness.Client, url, token string, d time.Duration) (ok, failed int64) {
	t.Helper()
	var okN, failedN atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(end) {
				if status, _ := c.Get(url, token); status == http.StatusOK {
					okN.Add(1)
				} else {
					failedN.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return okN.Load(), failedN.Load()
}

// cpuTime is the user and system CPU a process has used (/proc/<pid>/stat).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 per second).
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
