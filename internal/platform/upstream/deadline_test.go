package upstream_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

func TestDoSendsTheDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		timeout        time.Duration
		attemptTimeout time.Duration
		callerTimeout  time.Duration // 0: the caller sets no deadline
		want           time.Duration // the most Request-Timeout may say
	}{
		{name: "the call's timeout", timeout: 5 * time.Second, want: 5 * time.Second},
		{name: "an attempt's timeout", timeout: 5 * time.Second, attemptTimeout: 2 * time.Second, want: 2 * time.Second},
		{name: "the caller's deadline when sooner", timeout: 5 * time.Second, attemptTimeout: 2 * time.Second,
			callerTimeout: time.Second, want: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv, reqs := recordingServer(t)
			cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Timeout: tt.timeout, AttemptTimeout: tt.attemptTimeout})
			ctx := context.Background()
			if tt.callerTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.callerTimeout)
				defer cancel()
			}
			mustDo(t, ctx, cl.Client, get)
			v := (<-reqs).header.Get(httpx.HeaderRequestTimeout)
			got, ok := httpx.ParseRequestTimeout(v)
			if !ok || got > tt.want {
				t.Errorf("upstream saw %s: %q, want milliseconds, at most %d", httpx.HeaderRequestTimeout, v, tt.want.Milliseconds())
			}
		})
	}
}

// TestDeadlinePropagatesAcrossHops: a service (front) is called with a
// deadline of 200 ms and calls another (back) with this client, which
// passes what is left of it on. When it passes, back's handler sees its
// context end, and front answers 504 — whether its call to back gave up
// first or back's 504 came back first — although the client itself would
// have waited 5 s.
func TestDeadlinePropagatesAcrossHops(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	logger := slog.New(slog.DiscardHandler)

	type seenAtBack struct {
		header string
		ended  error
	}
	atBack := make(chan seenAtBack, 1)
	backMux := http.NewServeMux()
	backMux.Handle("GET /users/{id}", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		select { // stands for a slow query: it ends when the request's context does
		case <-r.Context().Done():
		case <-time.After(callWait):
		}
		atBack <- seenAtBack{header: r.Header.Get(httpx.HeaderRequestTimeout), ended: r.Context().Err()}
		return r.Context().Err()
	}))
	back := newServer(t, httpx.WithCallerDeadline(httpx.Instrument(backMux, logger, *c.tel, slog.LevelInfo)).ServeHTTP)
	toBack := c.observedClient(t, upstream.Config{URLs: []string{back.URL}, Timeout: 5 * time.Second})

	frontMux := http.NewServeMux()
	frontMux.Handle("GET /me", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		resp, err := toBack.Do(r.Context(), get)
		if err != nil {
			return err
		}
		w.WriteHeader(resp.Status) // as the gateway relays
		return nil
	}))
	front := newServer(t, httpx.WithCallerDeadline(httpx.Instrument(frontMux, logger, *c.tel, slog.LevelInfo)).ServeHTTP)

	req, err := http.NewRequest(http.MethodGet, front.URL+"/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(httpx.HeaderRequestTimeout, "200")
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /me: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("GET /me with Request-Timeout 200 = %d %s, want 504", resp.StatusCode, body)
	}
	seen := <-atBack
	if d, ok := httpx.ParseRequestTimeout(seen.header); !ok || d > 200*time.Millisecond {
		t.Errorf("back saw %s: %q, want at most the 200 ms front was given", httpx.HeaderRequestTimeout, seen.header)
	}
	// Its own deadline, or front hanging up when front's passed: either
	// way the work stopped.
	if !errors.Is(seen.ended, context.DeadlineExceeded) && !errors.Is(seen.ended, context.Canceled) {
		t.Errorf("back's handler context ended with %v, want it ended by the deadline", seen.ended)
	}
}
