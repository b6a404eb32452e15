//go:build scale

package scale

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"

	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// The relay's round is timed this many times, each on relayBatch rows (the
// batch the system's relay claims).
const (
	relayRounds = 10
	relayBatch  = 100
)

// inProcess opens the databases as the services do (timing it: each open
// applies the migrations), checks that they hold what was seeded, runs the
// measured operations in the services' own code with every statement they
// run recorded, logs each statement's plan and, when the tables are big,
// fails the test for any that reads more than it needs (plans_test.go); and
// it times the relay's claim and mark-sent, which have no API.
func inProcess(t *testing.T, urls map[string]string, s seeded, big bool, f *figures) {
	ctx := t.Context()
	rec := &recorder{}
	start := time.Now()
	dbs := openAll(t, urls, func(service string) []sqldb.Option {
		return []sqldb.Option{sqldb.WithStatementHook(rec.hook(service))}
	})
	f.took[opMigrate] = time.Since(start)
	defer closeAll(t, dbs)
	checkCounts(t, urls, s)

	ordersSvc, err := orders.NewService(dbs["orders"], propagation.TraceContext{}, noop.NewMeterProvider(), func() {}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	notificationsSvc := notifications.NewService(dbs["notifications"])
	first := pagination.Request{Limit: pagination.DefaultLimit}
	deep := pagination.Request{Limit: pagination.DefaultLimit, After: &pagination.Cursor{CreatedAt: s.middle.CreatedAt, ID: s.middle.ID}}
	mug := orders.NewOrder{SKU: "BLUEPRINT-MUG", Qty: 1}
	rec.run(t, opFirstPage, func() error { _, err := ordersSvc.List(ctx, s.heavyID, first); return err })
	rec.run(t, opDeepPage, func() error { _, err := ordersSvc.List(ctx, s.heavyID, deep); return err })
	rec.run(t, opGet, func() error { _, err := ordersSvc.Get(ctx, s.heavyID, s.middle.ID); return err })
	rec.run(t, opCreate, func() error { _, err := ordersSvc.Create(ctx, s.heavyID, "in-process", mug); return err })
	rec.run(t, opNotifications, func() error { _, err := notificationsSvc.List(ctx, s.heavyID, first); return err })

	// The relay's round: orders placed through Create leave their events
	// pending, as they wait for the relay; a claim leases them, and
	// mark-sent marks them as published.
	var claims, marks []time.Duration
	for range relayRounds {
		for range relayBatch {
			if _, err := ordersSvc.Create(ctx, s.heavyID, "", mug); err != nil {
				t.Fatalf("place an order: %v", err)
			}
		}
		var ids []string
		claims = append(claims, rec.run(t, opClaim, func() error {
			msgs, err := outbox.Claim(ctx, dbs["orders"], "scale", relayBatch)
			for _, m := range msgs {
				ids = append(ids, m.ID)
			}
			return err
		}))
		marks = append(marks, rec.run(t, opMarkSent, func() error {
			return outbox.MarkSent(ctx, dbs["orders"], "scale", ids)
		}))
	}
	f.took[opClaim], f.took[opMarkSent] = median(claims), median(marks)

	for _, p := range rec.plans(t, dbs, urls) {
		if big && len(p.tooMuch) > 0 {
			t.Errorf("%s: %s\nreads more than it needs: %s\nplan: %s", p.op, p.query, strings.Join(p.tooMuch, "; "), p.plan)
		} else {
			t.Logf("%s: %s\n\tplan: %s", p.op, short(p.query), p.plan)
		}
	}
}

// checkCounts fails the test unless the databases at urls hold what seed
// wrote. It counts on connections of the test's: the services' cut
// statements off after 5 s, and counting millions of rows may take longer.
func checkCounts(t *testing.T, urls map[string]string, s seeded) {
	ctx := t.Context()
	for _, c := range []struct {
		service, query string
		args           []any
		want           int
	}{
		{"users", `SELECT count(*) FROM users`, nil, s.want.users},
		{"orders", `SELECT count(*) FROM orders`, nil, s.want.orders},
		{"orders", `SELECT count(*) FROM orders WHERE user_id = $1`, []any{s.heavyID}, s.want.heavy},
		{"orders", `SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL`, nil, s.want.outbox},
		{"orders", `SELECT count(*) FROM idempotency_keys WHERE response IS NOT NULL`, nil, s.want.keys},
		{"notifications", `SELECT count(*) FROM notifications`, nil, s.want.notifications},
	} {
		var got int
		if err := harness.OpenDB(t, urls[c.service]).QueryRowContext(ctx, c.query, c.args...).Scan(&got); err != nil {
			t.Fatalf("%s: %v", c.query, err)
		}
		if got != c.want {
			t.Errorf("%s = %d, want %d", c.query, got, c.want)
		}
	}
}

// median is the middle of the durations.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
