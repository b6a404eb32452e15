//go:build resilience

// Package resilience tests the synchronous calls under faults, as
// docs/resilience.md describes them: the system runs as OS processes on
// loopback (SQLite, one NATS process), faults are chaos rules and signals,
// and the load goes through the gateway the way clients send it. Some
// checks are latencies docs/design.md promises (a breaker fails fast), so the
// suite runs on its own, one test at a time, not beside other packages:
//
//	go test -tags=resilience -v ./test/resilience/
package resilience

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

var bin string

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &bin)) }

// start runs one process per service (more when cfg asks), with fault
// injection on, rate limits off and debug logs, where the services behind
// the gateway write their access lines, and returns it with a client.
func start(t *testing.T, cfg localcluster.Config, env ...string) (*localcluster.Cluster, *harness.Client) {
	t.Helper()
	cfg.Binary, cfg.Dir = bin, filepath.Join(t.TempDir(), "cluster")
	cfg.Env = append([]string{"RATE_LIMITS_ENABLED=false", "BLUEPRINT_CHAOS=true", "LOG_LEVEL=debug"}, env...)
	c := harness.StartCluster(t, cfg)
	return c, harness.NewClient(64, harness.Gateways(c)...)
}

// sample is one request's outcome.
type sample struct {
	at     time.Time
	status int
	took   time.Duration
}

// hammer sends GET url from workers at about rate requests per second
// until stop is closed, and returns every outcome in order of sending.
func hammer(c *harness.Client, url, token string, rate float64, workers int, stop <-chan struct{}) []sample {
	var mu sync.Mutex
	var out []sample
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range jobs {
				at := time.Now()
				status, _ := c.Get(url, token)
				mu.Lock()
				out = append(out, sample{at: at, status: status, took: time.Since(at)})
				mu.Unlock()
			}
		})
	}
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
			select {
			case jobs <- struct{}{}:
			default: // every worker busy: the load is what the system can take
			}
		}
	}
	close(jobs)
	wg.Wait()
	slices.SortFunc(out, func(a, b sample) int { return a.at.Compare(b.at) })
	return out
}

// p99 is the 99th percentile of the durations.
func p99(d []time.Duration) time.Duration { return percentile(d, 99) }

// percentile is the p-th percentile of the durations (d is left as it was).
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)*p)/100]
}

// setFault sets a chaos rule on a service's ops listener.
func setFault(t *testing.T, opsURL string, rule map[string]any) {
	t.Helper()
	body, _ := json.Marshal(rule)
	resp, err := http.Post(opsURL+"/chaos", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("set fault: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Fatalf("set fault %v: %d %s", rule, resp.StatusCode, b.String())
	}
}

// clearFaults removes every chaos rule of a service.
func clearFaults(t *testing.T, opsURL string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, opsURL+"/chaos", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("clear faults: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("clear faults: %d", resp.StatusCode)
	}
}

// rssMiB is a process's resident memory.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// logRecords returns the JSON log records of a process with the message
// msg (and the route, when given).
func logRecords(t *testing.T, dir, process, msg, route string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, process+".log"))
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil && rec["msg"] == msg && (route == "" || rec["route"] == route) {
			out = append(out, rec)
		}
	}
	return out
}

// logTime is when a log record was written.
func logTime(rec map[string]any) time.Time {
	s, _ := rec["time"].(string)
	at, _ := time.Parse(time.RFC3339Nano, s)
	return at
}
