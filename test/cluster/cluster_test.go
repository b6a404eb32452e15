// Package cluster tests Blueprint in its production shape: every service as
// several OS processes, PostgreSQL, a 3-node NATS cluster, and load through
// two gateways, with processes killed in the middle. It needs a PostgreSQL
// server (BLUEPRINT_TEST_POSTGRES_URL) and skips, saying so, without one.
package cluster

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// The load of the issue: 2,000 orders from 20 concurrent clients.
const (
	clients     = 20
	totalOrders = 2000
)

func TestClusterEveryOrderNotifiedOnce(t *testing.T) {
	t.Run("steady", func(t *testing.T) { runScenario(t, false) })
	t.Run("orders replica and NATS node killed", func(t *testing.T) { runScenario(t, true) })
}

func runScenario(t *testing.T, kill bool) {
	pgURL := os.Getenv(sqldbtest.EnvPostgresURL)
	if pgURL == "" {
		t.Skipf("cluster test skipped: %s is not set", sqldbtest.EnvPostgresURL)
	}
	dir := t.TempDir()
	bin := harness.Build(t, dir)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ctx := context.Background()
	c := harness.StartCluster(t, localcluster.Config{
		Binary: bin, Dir: filepath.Join(dir, "cluster"), PostgresURL: pgURL,
		DatabasePrefix: "bp_cluster_" + hex.EncodeToString(b),
		NATSNodes:      3, Gateways: 2, Users: 2, Orders: 3, Notifications: 2,
		Env: []string{"RATE_LIMITS_ENABLED=false"},
	})
	client := harness.NewClient(clients, c.Get("gateway-1").URL, c.Get("gateway-2").URL)

	// Each client places its orders one after another, each with its own
	// Idempotency-Key, retrying the same key after any failure; requests
	// alternate between the gateways.
	var accepted atomic.Int64
	killed := make(chan struct{})
	if kill {
		go func() { // ends when the kills are done, before the load ends
			defer close(killed)
			for accepted.Load() < totalOrders*2/5 {
				time.Sleep(10 * time.Millisecond)
			}
			for _, name := range []string{"orders-2", "nats-2"} {
				if err := c.Get(name).Kill(); err != nil {
					t.Errorf("kill %s: %v", name, err)
				}
				t.Logf("killed %s (SIGKILL) after %d orders", name, accepted.Load())
			}
		}()
	} else {
		close(killed)
	}
	res := client.Run(ctx, t, harness.Load{Orders: totalOrders, Clients: clients}, &accepted)
	<-killed
	if len(res.GaveUp) > 0 {
		t.Fatalf("%d orders never accepted after retries, e.g. %s", len(res.GaveUp), res.GaveUp[0])
	}

	src := harness.Sources{
		Orders:        harness.OpenDB(t, c.Databases["orders"]),
		Notifications: harness.OpenDB(t, c.Databases["notifications"]),
		NATSURL:       c.NATSURL,
		NATSNKey:      c.NATSNKey,
	}
	// Every 201 order exists once, has one event in the stream (every
	// re-send de-duplicated) and one notification; the outbox is empty.
	rep, _ := harness.Settle(t, src, res.Accepted, 2*time.Minute)
	if !rep.Holds() || rep.Notified != totalOrders || rep.StreamMessages != totalOrders {
		t.Errorf("after the run: %s; want %d orders, events and notifications, each once", rep, totalOrders)
	}
	var orders int
	if err := src.Orders.QueryRow(`SELECT count(*) FROM orders`).Scan(&orders); err != nil || orders != totalOrders {
		t.Errorf("orders in PostgreSQL = %d (%v), want %d: none nobody was told about", orders, err, totalOrders)
	}
	var lastSent time.Time
	if err := src.Notifications.QueryRow(`SELECT max(sent_at) FROM notifications`).Scan(&lastSent); err != nil {
		t.Fatal(err)
	}

	// How the work was spread.
	relays := groupCount(t, src.Orders, `SELECT sent_by, count(*) FROM outbox GROUP BY sent_by`)
	workers := map[string]int{}
	for _, p := range c.Named("notifications-") {
		if p.Running() {
			workers[p.Name] = harness.MetricSum(t, p.OpsURL, "blueprint_notifications_sent_total")
		}
	}
	sum := 0
	for name, n := range workers {
		sum += n
		if n == 0 {
			t.Errorf("%s recorded no notification; want the replicas to share the consumer", name)
		}
	}
	if sum != totalOrders {
		t.Errorf("notifications counted by the replicas = %d, want %d", sum, totalOrders)
	}
	// Any relay may publish any replica's rows, and whichever claims first
	// takes every row pending at that moment: a fast relay can carry all
	// of them, which is the outbox working, not a fault. The shares are
	// reported, not required.
	t.Logf("%d orders in %s: %.0f orders/s; %d client retries; last notification %s after the last 201",
		totalOrders, res.Duration.Round(time.Millisecond), float64(totalOrders)/res.Duration.Seconds(),
		res.Requests-totalOrders, lastSent.Sub(res.LastAccepted).Round(time.Millisecond))
	t.Logf("events published per relay: %v", relays)
	t.Logf("notifications per worker: %v", workers)
}

// groupCount runs a "SELECT key, count(*) … GROUP BY key" query.
func groupCount(t *testing.T, db *sql.DB, query string) map[string]int {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k sql.NullString
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k.String] = n
	}
	return out
}
