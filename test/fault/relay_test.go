//go:build fault

package fault

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// maxNotificationDelay bounds the time from an order's commit to its
// notification after the crash. The goal is a p99 of 5 s (a 3 s lease, a
// 1 s poll, then the publish and the delivery); the bound only tells a
// takeover from a relay that waited for something else, such as the 30 s
// lease it once had.
const maxNotificationDelay = 10 * time.Second

// Scenario 13: two orders replicas share a PostgreSQL database under steady
// load (50 orders/s, 10 s of it before the fault); one is SIGKILLed while
// its relay holds a batch of outbox rows. To be sure it dies mid-batch, a
// latency rule at outbox.after_claim holds its relay between claim and
// publish, and the test kills the process as soon as it sees rows claimed.
// The surviving replica's relay must take the rows over once their lease
// ends and send them; every accepted order is notified once, and the order
// → notification delay after the crash stays within seconds.
func TestRelayKilledHoldingRows(t *testing.T) {
	pg := os.Getenv(sqldbtest.EnvPostgresURL)
	if pg == "" {
		t.Skipf("skipped: two orders replicas sharing one database need PostgreSQL; set %s", sqldbtest.EnvPostgresURL)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	s := start(t, localcluster.Config{Orders: 2, PostgresURL: pg, DatabasePrefix: "bp_fault_" + hex.EncodeToString(b)})
	victim, survivor := s.Get("orders-1"), s.Get("orders-2")

	const orders, warmUp = 1500, 500 // at 50/s: 10 s of steady load before the kill
	var accepted atomic.Int64
	var crash relayCrash
	done := afterAccepted(&accepted, warmUp, func() { crash = killHoldingRows(t, s, victim) })
	res := s.client.Run(t.Context(), t, harness.Load{Orders: orders, Clients: 20, Rate: 50}, &accepted)
	<-done
	rep, _ := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	if len(res.GaveUp) > 0 {
		t.Errorf("%d orders never accepted", len(res.GaveUp))
	}
	if len(crash.held) == 0 {
		t.Fatal("the killed replica's relay held no rows: the crash was not mid-batch")
	}

	takeover := crash.takeover(t, s.src)
	delays := notificationDelays(t, s.src, res.Accepted, crash.firstHeld)
	if len(delays) == 0 {
		t.Fatal("no order was notified after the crash")
	}
	p50, p99, worst := percentile(delays, 0.50), percentile(delays, 0.99), delays[len(delays)-1]
	if worst > maxNotificationDelay {
		t.Errorf("slowest order → notification after the crash = %s, want at most %s", worst, maxNotificationDelay)
	}
	if n := harness.MetricSum(t, survivor.OpsURL, "blueprint_outbox_taken_over_total"); n < len(crash.held) {
		t.Errorf("the survivor's blueprint_outbox_taken_over_total = %d, want at least the %d rows the killed relay held", n, len(crash.held))
	}
	record(t, row{Scenario: "13. orders replica killed holding outbox rows, 2 replicas on PostgreSQL", Requests: orders,
		Accepted: len(res.Accepted), FirstTry: float64(res.FirstTry) / orders, Report: rep, Recovery: takeover,
		Note: fmt.Sprintf("rows held by the killed relay: %d, sent by the survivor %s after the kill; "+
			"order → notification from the first held order on (%d orders): p50 %s, p99 %s, max %s",
			len(crash.held), takeover.Round(100*time.Millisecond), len(delays),
			p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond))})
}

// relayCrash is what killHoldingRows saw.
type relayCrash struct {
	pid  int
	at   time.Time
	held []string // ids of the rows the killed relay had claimed and not sent
	// firstHeld is when the earliest of them was committed.
	firstHeld time.Time
}

// killHoldingRows holds p's relay between claim and publish, waits until it
// holds rows, and SIGKILLs p.
func killHoldingRows(t *testing.T, s *system, p *localcluster.Process) relayCrash {
	setFault(t, p.OpsURL, map[string]any{"route": outbox.FaultAfterClaim, "latencyMs": time.Minute.Milliseconds()})
	// A relay's name is <hostname>-<pid>-<random>.
	owner := fmt.Sprintf("%%-%d-%%", p.Pid())
	c := relayCrash{pid: p.Pid()}
	for deadline := time.Now().Add(10 * time.Second); len(c.held) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%s's relay claimed no rows within 10 s of the hold", p.Name)
			return c
		}
		rows, err := s.src.Orders.Query(`SELECT id, created_at FROM outbox WHERE sent_at IS NULL AND claimed_by LIKE $1 ORDER BY id`, owner)
		if err != nil {
			t.Errorf("read the leases: %v", err)
			return c
		}
		for rows.Next() {
			var id string
			var created sqldb.Time
			if err := rows.Scan(&id, &created); err != nil {
				t.Errorf("read the leases: %v", err)
			}
			if len(c.held) == 0 {
				c.firstHeld = created.Time
			}
			c.held = append(c.held, id)
		}
		if err := rows.Err(); err != nil {
			t.Errorf("read the leases: %v", err)
		}
		rows.Close()
	}
	if err := p.Kill(); err != nil {
		t.Errorf("kill %s: %v", p.Name, err)
	}
	c.at = time.Now()
	t.Logf("killed %s holding %d outbox rows", p.Name, len(c.held))
	return c
}

// takeover checks that another relay sent every row the killed one held
// and returns the time from the kill to the last of their PubAcks.
func (c relayCrash) takeover(t *testing.T, src harness.Sources) time.Duration {
	t.Helper()
	var last time.Time
	for _, id := range c.held {
		var by string
		var at sqldb.Time
		if err := src.Orders.QueryRow(`SELECT sent_by, sent_at FROM outbox WHERE id = $1`, id).Scan(&by, &at); err != nil {
			t.Errorf("row %s held by the killed relay: %v, want it sent", id, err)
			continue
		}
		if strings.Contains(by, fmt.Sprintf("-%d-", c.pid)) {
			t.Errorf("row %s sent by %s, the relay that was killed", id, by)
		}
		if at.After(last) {
			last = at.Time
		}
	}
	return last.Sub(c.at)
}

// notificationDelays returns, sorted, the time from commit to notification
// of the accepted orders committed at or after since.
func notificationDelays(t *testing.T, src harness.Sources, accepted map[string]string, since time.Time) []time.Duration {
	t.Helper()
	committed := map[string]time.Time{}
	rows, err := src.Orders.Query(`SELECT id, created_at FROM orders WHERE created_at >= $1`, sqldb.NewTime(since))
	if err != nil {
		t.Fatalf("read orders: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var at sqldb.Time
		if err := rows.Scan(&id, &at); err != nil {
			t.Fatalf("read orders: %v", err)
		}
		if _, ok := accepted[id]; ok {
			committed[id] = at.Time
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read orders: %v", err)
	}
	var delays []time.Duration
	notified, err := src.Notifications.Query(`SELECT order_id, sent_at FROM notifications WHERE sent_at IS NOT NULL`)
	if err != nil {
		t.Fatalf("read notifications: %v", err)
	}
	defer notified.Close()
	for notified.Next() {
		var id string
		var at sqldb.Time
		if err := notified.Scan(&id, &at); err != nil {
			t.Fatalf("read notifications: %v", err)
		}
		if c, ok := committed[id]; ok {
			delays = append(delays, at.Sub(c))
		}
	}
	if err := notified.Err(); err != nil {
		t.Fatalf("read notifications: %v", err)
	}
	slices.Sort(delays)
	return delays
}

// percentile is the q-quantile (0 < q ≤ 1) of sorted, by the nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, rank)]
}
