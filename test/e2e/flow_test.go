package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// TestFlowSurvivesRestart is the newcomer's path through the whole system in
// one process: register, log in, read the profile, order, get notified once.
// Then the process stops and starts again on the same data dir, and every
// piece of it is still there.
func TestFlowSurvivesRestart(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	sys := startInProcess(t, dataDir, nil)
	c := newClient(t, sys.url("gateway"))

	email, password := uniqueEmail("Flow"), "correct horse battery"
	u := c.signUp(email, password)
	if u.Email != email || u.Name != "Test User" || u.Plan != "free" || u.ID == "" {
		t.Fatalf("register = %+v, want the user as given with plan free", u)
	}
	var me user
	c.do("GET", "/users/me", nil).expect(t, http.StatusOK).json(t, &me)
	if me != u {
		t.Fatalf("GET /users/me = %+v, want %+v", me, u)
	}

	resp := c.do("POST", "/orders", map[string]any{"sku": "BLUEPRINT-MUG", "qty": 2}).expect(t, http.StatusCreated)
	var o order
	resp.json(t, &o)
	if o.UserID != u.ID || o.SKU != "BLUEPRINT-MUG" || o.Qty != 2 || o.Status != "created" {
		t.Fatalf("POST /orders = %+v, want the order of %s", o, u.ID)
	}
	if loc := resp.header.Get("Location"); loc != "/orders/"+o.ID {
		t.Errorf("Location = %q, want /orders/%s", loc, o.ID)
	}

	got := c.notificationsFor(o.ID, 15*time.Second)
	if len(got) != 1 {
		t.Fatalf("notifications for order %s = %d, want 1", o.ID, len(got))
	}
	n := got[0]
	if n.UserID != u.ID || n.Channel != "log" || n.Status != "sent" || n.SentAt == nil {
		t.Errorf("notification = %+v, want sent on the log channel to %s", n, u.ID)
	}
	delivered := sys.logs.records("notification delivered")
	if len(delivered) != 1 {
		t.Fatalf("delivery log lines = %d, want 1", len(delivered))
	}
	// One trace from the request to the delivery: through the outbox row,
	// the relay's publish and the NATS headers to the worker.
	var orderTrace any
	for _, l := range sys.logs.records("request") {
		if l["service"] == "gateway" && l["route"] == "POST /orders" {
			orderTrace = l["trace_id"]
		}
	}
	if orderTrace == nil || delivered[0]["trace_id"] != orderTrace {
		t.Errorf("delivery logged in trace %v, want the trace of POST /orders %v", delivered[0]["trace_id"], orderTrace)
	}

	sys.stop(t)
	if count := countNotifications(t, dataDir, o.ID); count != 1 {
		t.Fatalf("notification rows for order %s = %d, want exactly 1", o.ID, count)
	}

	// Keys are made in memory in `all` mode, so the old token is void after a
	// restart; the user logs in again and finds everything.
	sys = startInProcess(t, dataDir, nil)
	c = newClient(t, sys.url("gateway"))
	c.logIn(email, password)
	c.do("GET", "/users/me", nil).expect(t, http.StatusOK).json(t, &me)
	if me != u {
		t.Errorf("after restart GET /users/me = %+v, want %+v", me, u)
	}
	var again order
	c.do("GET", "/orders/"+o.ID, nil).expect(t, http.StatusOK).json(t, &again)
	if again != o {
		t.Errorf("after restart GET /orders/%s = %+v, want %+v", o.ID, again, o)
	}
	if got := c.notificationsFor(o.ID, time.Second); len(got) != 1 || !reflect.DeepEqual(got[0], n) {
		t.Errorf("after restart notifications = %+v, want [%+v]", got, n)
	}
	sys.stop(t)
	if count := countNotifications(t, dataDir, o.ID); count != 1 {
		t.Errorf("after restart notification rows = %d, want still 1", count)
	}
}

// countNotifications reads the notifications database of a stopped system.
func countNotifications(t *testing.T, dataDir, orderID string) int {
	t.Helper()
	db, err := sqldb.Open(context.Background(), "sqlite:"+filepath.Join(dataDir, "notifications.db"), notifications.Migrations)
	if err != nil {
		t.Fatalf("open notifications db: %v", err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(context.Background(),
		`SELECT count(*) FROM notifications WHERE order_id = $1`, orderID).Scan(&n); err != nil {
		t.Fatalf("count notifications: %v", err)
	}
	return n
}
