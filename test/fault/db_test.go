//go:build fault

package fault

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// requestDeadline is how long the gateway waits for a service
// (UPSTREAM_TIMEOUT's default).
const requestDeadline = 5 * time.Second

// Scenario 8: a service's database unavailable for 10 s — its SQLite file
// locked by another writer — first the orders database under load, then the
// worker's. No request waits past the deadline, both recover within 15 s,
// and nothing is lost.
func TestDatabaseLocked(t *testing.T) {
	for _, service := range []string{"orders", "notifications"} {
		t.Run(service, func(t *testing.T) {
			s := start(t, localcluster.Config{})
			ctx := t.Context()
			var accepted atomic.Int64
			var recovered time.Duration
			done := afterAccepted(&accepted, 200, func() {
				release := lockSQLite(t, s.Databases[service])
				time.Sleep(10 * time.Second)
				release()
				healed := time.Now()
				// Recovered: orders accepts again, and the worker has caught up.
				before := accepted.Load()
				for accepted.Load() == before && time.Since(healed) < 30*time.Second {
					time.Sleep(10 * time.Millisecond)
				}
				if service == "notifications" {
					for notifiedCount(t, s) < int(before) && time.Since(healed) < 30*time.Second {
						time.Sleep(50 * time.Millisecond)
					}
				}
				recovered = time.Since(healed)
			})
			res := s.client.Run(ctx, t, harness.Load{Orders: 1000, Clients: 20, Rate: 50}, &accepted)
			<-done
			rep, _ := harness.Settle(t, s.src, res.Accepted, settleTimeout)
			if limit := requestDeadline + 2*time.Second; res.Slowest > limit {
				t.Errorf("slowest request took %s, want it ended by the deadline (%s)", res.Slowest, requestDeadline)
			}
			if recovered > 15*time.Second {
				t.Errorf("recovered %s after the lock was released, want within 15 s", recovered)
			}
			record(t, row{Scenario: "8. " + service + " database locked 10 s", Requests: 1000, Accepted: len(res.Accepted),
				FirstTry: float64(res.FirstTry) / 1000, Report: rep, Recovery: recovered,
				Note: "slowest request " + res.Slowest.Round(10*time.Millisecond).String()})
		})
	}
}

// lockSQLite takes the write lock of a SQLite database, as a stuck writer
// would, and returns the function that lets it go.
func lockSQLite(t *testing.T, dbURL string) func() {
	t.Helper()
	db := harness.OpenDB(t, dbURL)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatalf("lock %s: %v", dbURL, err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatalf("lock %s: %v", dbURL, err)
	}
	return func() {
		if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil && !strings.Contains(err.Error(), "no transaction") {
			t.Errorf("unlock: %v", err)
		}
		conn.Close()
	}
}

// notifiedCount counts recorded notifications.
func notifiedCount(t *testing.T, s *system) int {
	var n int
	if err := s.src.Notifications.QueryRow(`SELECT count(*) FROM notifications`).Scan(&n); err != nil {
		t.Logf("count notifications: %v", err)
	}
	return n
}
