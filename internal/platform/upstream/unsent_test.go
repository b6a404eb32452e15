package upstream

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// TestResetBeforeWrite: a connection that breaks before a byte of the
// request is written proves the replica never saw it, so even a keyless
// POST goes to the other replica, and the first is ejected. One that breaks
// after some of the request left proves nothing: the POST is not sent
// again, and the replica is not ejected.
func TestResetBeforeWrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		written  int // bytes of the request that leave before the reset
		failover bool
	}{
		{name: "nothing written", written: 0, failover: true},
		{name: "part of the request written", written: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var healthy atomic.Int64 // requests the second replica answered
			first := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			t.Cleanup(first.Close)
			second := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { healthy.Add(1) }))
			t.Cleanup(second.Close)
			c := newClientForTest(t, first.URL, second.URL)
			c.dialer = resetDialer{to: first.Listener.Addr().String(), after: tt.written}

			resp, err := c.Do(context.Background(), Request{Method: http.MethodPost, Path: "/orders", Body: []byte(`{"sku":"A-1","qty":1}`)})
			reps := *c.replicas.Load()
			if tt.failover {
				if err != nil || resp.Status != http.StatusOK || healthy.Load() != 1 {
					t.Fatalf("Do() = %v, %v with the second replica answering %d, want its 200", resp, err, healthy.Load())
				}
				if !reps[0].ejected() {
					t.Errorf("replica whose connection reset before the request left is not ejected")
				}
				return
			}
			if !apperr.Is(err, apperr.BadGateway) || healthy.Load() != 0 {
				t.Errorf("Do() = %v, %v, second replica answered %d; want a BadGateway and the POST not sent again", resp, err, healthy.Load())
			}
			if reps[0].ejected() {
				t.Errorf("replica that may have read the request is ejected, want it in")
			}
		})
	}
}

// resetDialer dials for real, but the connections to one address break
// once after bytes of what is written to them: a reset from the peer.
type resetDialer struct {
	to    string
	after int
}

func (d resetDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || addr != d.to {
		return conn, err
	}
	return &resetConn{Conn: conn, left: d.after}, nil
}

type resetConn struct {
	net.Conn
	left int
}

func (c *resetConn) Write(p []byte) (int, error) {
	if len(p) <= c.left {
		c.left -= len(p)
		return c.Conn.Write(p)
	}
	n, _ := c.Conn.Write(p[:c.left])
	c.left = 0
	return n, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
}

// newClientForTest is a client of the users upstream at urls, with the
// gateway's identity and telemetry that goes nowhere.
func newClientForTest(t *testing.T, urls ...string) *Client {
	t.Helper()
	kr, err := auth.GenerateKeyring([]string{"gateway", "users"})
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.New(context.Background(), "gateway", "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	c, err := New(Config{Service: "users", URLs: urls, Timeout: 5 * time.Second, ConnectTimeout: 2 * time.Second,
		Minter: auth.NewMinter("gateway", kr.Identities["gateway"], time.Now), Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestResentByTheTransport: a pooled connection breaks once a request is
// written on it, and the transport itself sends the request anew on a new
// connection (it does for a GET, or a request with an Idempotency-Key),
// whose dial is refused. The replica is gone and is ejected, but the first
// copy may have reached it: the call is a retry, within the budget, not a
// failover that would spend nothing.
func TestResentByTheTransport(t *testing.T) {
	t.Parallel()
	var firstSaw, secondSaw atomic.Int64
	first := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { firstSaw.Add(1) }))
	t.Cleanup(first.Close)
	second := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { secondSaw.Add(1) }))
	t.Cleanup(second.Close)
	c := newClientForTest(t, first.URL, second.URL)
	d := &dyingDialer{to: first.Listener.Addr().String()}
	c.dialer = d

	// One call to each replica: the first's connection is now pooled.
	for range 2 {
		if _, err := c.Do(context.Background(), Request{Method: http.MethodGet, Path: "/users/1"}); err != nil {
			t.Fatal(err)
		}
	}
	// The first replica dies under the next request it is written: its
	// pooled connection breaks once the request is out, and it refuses
	// connections from then on.
	d.die.Store(true)
	before := spentRetries(c.budget)
	resp, err := c.Do(context.Background(), Request{Method: http.MethodGet, Path: "/users/1"})
	if err != nil || resp.Status != http.StatusOK || secondSaw.Load() != 2 {
		t.Fatalf("Do() = %v, %v with the second replica answering %d, want its 200", resp, err, secondSaw.Load())
	}
	if d.dials.Load() < 2 {
		t.Fatalf("the transport dialled the first replica %d times, want it to have sent the request anew", d.dials.Load())
	}
	if !(*c.replicas.Load())[0].ejected() {
		t.Errorf("the replica that refused the new connection is not ejected")
	}
	if got := spentRetries(c.budget) - before; got != 1 {
		t.Errorf("retries spent from the budget = %d, want 1: a copy of the request may have reached the first replica", got)
	}
}

// dyingDialer dials for real until die is set; then connections to one
// address break under the next request written on them (the peer resets
// once it has it), and new ones to it are refused.
type dyingDialer struct {
	to    string
	die   atomic.Bool
	dials atomic.Int64
}

func (d *dyingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr != d.to {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	d.dials.Add(1)
	if d.die.Load() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &dyingConn{Conn: conn, d: d}, nil
}

type dyingConn struct {
	net.Conn
	d       *dyingDialer
	written atomic.Bool // a request was written after die was set
}

func (c *dyingConn) Write(p []byte) (int, error) {
	if c.d.die.Load() {
		c.written.Store(true)
		_ = c.Conn.Close() // the transport's read, waiting already, fails
		return len(p), nil // taken in, never answered
	}
	return c.Conn.Write(p)
}

func (c *dyingConn) Read(p []byte) (int, error) {
	if c.written.Load() {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return c.Conn.Read(p)
}

// spentRetries is how many retries b has granted in its window.
func spentRetries(b *retryBudget) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.slots {
		n += s.retries
	}
	return n
}
