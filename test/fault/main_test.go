//go:build fault

// Package fault is the reliability suite: the whole event path (outbox →
// JetStream → worker → delivery) under crashes, pauses, partitions, poison
// messages and failing deliveries, each fault made to happen to real OS
// processes of the blueprint binary. After each scenario the run is drained
// and checked against the invariants of docs/reliability.md. Run it with
//
//	go test -tags=fault -v ./test/fault/
//
// and set FAULT_REPORT=path to write the table of figures as Markdown.
package fault

import (
	"cmp"
	"fmt"
	"maps"
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

// bin is the blueprint binary every scenario runs, built once.
var bin string

func TestMain(m *testing.M) {
	code := harness.Main(m, &bin)
	writeReport()
	os.Exit(code)
}

// system is one scenario's running Blueprint and what reads its outcome.
type system struct {
	*localcluster.Cluster
	client *harness.Client
	src    harness.Sources
}

// suiteEnv is every process's environment in the suite: no rate limits
// (the load is one client), fault switches on, and a short AckWait so a
// worker killed mid-event has it redelivered within seconds.
var suiteEnv = []string{"RATE_LIMITS_ENABLED=false", "BLUEPRINT_CHAOS=true", "NOTIFICATIONS_ACK_WAIT=5s", "LOG_LEVEL=info"}

// start runs a system for the test: by default one NATS process and one
// process per service, on SQLite. It is stopped when the test ends.
func start(t *testing.T, cfg localcluster.Config) *system {
	t.Helper()
	dir := t.TempDir()
	cfg.Binary, cfg.Dir = bin, filepath.Join(dir, "cluster")
	cfg.Env = append(append([]string{}, suiteEnv...), cfg.Env...)
	c := harness.StartCluster(t, cfg)
	s := &system{Cluster: c, client: harness.NewClient(32, harness.Gateways(c)...)}
	s.src = harness.Sources{
		Orders:        harness.OpenDB(t, c.Databases["orders"]),
		Notifications: harness.OpenDB(t, c.Databases["notifications"]),
		NATSURL:       c.NATSURL,
		NATSNKey:      c.NATSNKey,
	}
	return s
}

// afterAccepted runs fault in the background once n orders were accepted,
// and returns a channel closed when it is done.
func afterAccepted(accepted interface{ Load() int64 }, n int64, fault func()) <-chan struct{} {
	done := make(chan struct{})
	go func() { // ends when fault returns
		defer close(done)
		for accepted.Load() < n {
			time.Sleep(5 * time.Millisecond)
		}
		fault()
	}()
	return done
}

// row is one scenario's line in the report.
type row struct {
	Scenario string
	Requests int // order POSTs wanted
	Accepted int
	// FirstTry is the share of orders accepted by their first request.
	FirstTry float64
	Report   harness.Report
	// Recovery is the time from healing the fault to the outbox empty and
	// every order settled.
	Recovery time.Duration
	Note     string
}

var (
	reportMu sync.Mutex
	rows     []row
)

// record checks the invariants, logs the figures and keeps them for the report.
func record(t *testing.T, r row) {
	t.Helper()
	if !r.Report.Holds() {
		t.Errorf("invariants broken: %s", r.Report)
	}
	t.Logf("%s: %d requests, %d accepted (%.2f%% on the first try); %s; recovered in %s. %s",
		r.Scenario, r.Requests, r.Accepted, 100*r.FirstTry, r.Report, r.Recovery.Round(10*time.Millisecond), r.Note)
	reportMu.Lock()
	defer reportMu.Unlock()
	rows = append(rows, r)
}

// writeReport writes the table of docs/reliability.md to FAULT_REPORT.
func writeReport() {
	path := os.Getenv("FAULT_REPORT")
	if path == "" || len(rows) == 0 {
		return
	}
	// Scenarios finish in any order; the table follows their numbers.
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(number(a.Scenario), number(b.Scenario)) })
	var b strings.Builder
	b.WriteString("| Scenario | Orders | Accepted | First try | Lost | Without event | Unsettled | Notified | Dead-lettered | Duplicated | Recovery | Notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %.2f %% | %d | %d | %d | %d | %d | %d | %s | %s |\n",
			r.Scenario, r.Requests, r.Accepted, 100*r.FirstTry, r.Report.Missing, r.Report.NoEvent, r.Report.Unsettled,
			r.Report.Notified, r.Report.DeadLettered, r.Report.DuplicateNotifications+r.Report.DuplicateEvents,
			r.Recovery.Round(100*time.Millisecond), r.Note)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "FAULT_REPORT:", err)
	}
}

func itoa[T ~int | ~int64 | ~uint64](n T) string { return fmt.Sprint(n) }

// number is the scenario number a name starts with ("4. orders killed…").
func number(scenario string) int {
	n, _ := strconv.Atoi(strings.SplitN(scenario, ".", 2)[0])
	return n
}

// keys returns a map's keys, sorted.
func keys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
