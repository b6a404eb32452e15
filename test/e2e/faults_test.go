package e2e

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// TestUpstreamFailuresBecomeProblems runs the gateway alone in front of
// upstreams that are down, hang, fail or refuse its credentials. Every
// request ends, with the problem docs/errors.md names, and none hangs past the
// upstream deadline.
func TestUpstreamFailuresBecomeProblems(t *testing.T) {
	t.Parallel()
	keysDir, kr := keysOnDisk(t)

	down := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/orders" {
			<-r.Context().Done() // hang until the gateway gives up
			return
		}
		http.Error(w, "who are you", http.StatusUnauthorized) // refuses the gateway's token
	}))
	t.Cleanup(hanging.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "stack trace with secrets", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)

	sys := startInProcess(t, t.TempDir(), map[string]string{
		"BLUEPRINT_TARGET":   "gateway",
		"BLUEPRINT_KEYS_DIR": keysDir,
		"USERS_URL":          down,
		"ORDERS_URL":         hanging.URL,
		"NOTIFICATIONS_URL":  failing.URL,
		"UPSTREAM_TIMEOUT":   "300ms",
	})
	c := newClient(t, sys.url("gateway"))
	c.token = forge(t, kr.Access, "at+jwt", accessClaims("01a20000-0000-7000-8000-000000000001", time.Now()))

	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"upstream down", "GET", "/users/me", nil, http.StatusServiceUnavailable, "upstream_unavailable"},
		{"register with upstream down", "POST", "/auth/register", map[string]any{"email": "a@example.com", "password": "password1", "name": "A"}, http.StatusServiceUnavailable, "upstream_unavailable"},
		{"upstream hangs", "GET", "/orders", nil, http.StatusGatewayTimeout, "upstream_timeout"},
		{"upstream refuses credentials", "GET", "/orders/some-id", nil, http.StatusBadGateway, "upstream_error"},
		{"upstream fails", "GET", "/notifications", nil, http.StatusBadGateway, "upstream_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(tc.method, tc.path, tc.body).expect(t, tc.status)
			p := r.problem(t)
			if p.Type != "urn:blueprint:problem:"+tc.code {
				t.Errorf("type = %q, want urn:blueprint:problem:%s", p.Type, tc.code)
			}
			if tc.status == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if bytes.Contains(r.body, []byte("secrets")) {
				t.Errorf("body = %s, want a problem that hides the upstream's answer", r.body)
			}
		})
	}
}

// TestOrdersAcceptedWhileNATSIsDown stops the NATS server the services use,
// places orders while it is away, and starts it again: every order was
// accepted, and every one is notified exactly once after NATS returns,
// because its event waited in the outbox.
func TestOrdersAcceptedWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	storeDir := filepath.Join(t.TempDir(), "nats")
	startNATS := func() *natsbus.Embedded {
		srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: storeDir, Listen: natsAddr},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatalf("start nats: %v", err)
		}
		return srv
	}
	nats := startNATS()
	t.Cleanup(func() { nats.Stop() })

	sys := startInProcess(t, t.TempDir(), map[string]string{"NATS_URL": "nats://" + natsAddr})
	c := newClient(t, sys.url("gateway"))
	c.signUp(uniqueEmail("outage"), "outage-password")
	ordersReady := sys.url("orders_ops") + "/readyz"

	var before order
	c.do("POST", "/orders", map[string]any{"sku": "BEFORE", "qty": 1}).expect(t, http.StatusCreated).json(t, &before)
	if n := c.notificationsFor(before.ID, 15*time.Second); len(n) != 1 {
		t.Fatalf("notifications before the outage = %d, want 1", len(n))
	}

	nats.Stop()
	testwait.For(t, 15*time.Second, "orders to report not ready", func() bool { return status(ordersReady) == http.StatusServiceUnavailable })
	var during []order
	for i := range 5 {
		var o order
		c.do("POST", "/orders", map[string]any{"sku": "DURING", "qty": i + 1}).expect(t, http.StatusCreated).json(t, &o)
		during = append(during, o)
	}
	// Nothing can be notified while the broker is away.
	var p page[notification]
	c.do("GET", "/notifications?limit=100", nil).expect(t, http.StatusOK).json(t, &p)
	if len(p.Items) != 1 {
		t.Fatalf("notifications during the outage = %d, want only the one from before", len(p.Items))
	}

	nats = startNATS()
	for _, o := range during {
		if n := c.notificationsFor(o.ID, 30*time.Second); len(n) != 1 {
			t.Fatalf("notifications for order %s accepted during the outage = %d, want 1", o.ID, len(n))
		}
	}
	testwait.For(t, 15*time.Second, "orders to be ready again", func() bool { return status(ordersReady) == http.StatusOK })
	c.do("GET", "/notifications?limit=100", nil).expect(t, http.StatusOK).json(t, &p)
	if len(p.Items) != 1+len(during) {
		t.Errorf("notifications after the outage = %d, want %d (one per order, none twice)", len(p.Items), 1+len(during))
	}
}
