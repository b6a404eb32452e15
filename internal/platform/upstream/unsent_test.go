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
