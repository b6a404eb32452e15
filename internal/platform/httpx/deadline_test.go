package httpx_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// TestWithCallerDeadline: a caller's Request-Timeout becomes the request's
// deadline, so work done for it stops when the caller stops waiting, and the
// answer is a 504 problem.
func TestWithCallerDeadline(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger(t)
	stopped := make(chan error, 1)
	rt := httpx.NewRouter()
	rt.Handle("GET /slow", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		// Stands for a query or an upstream call: it ends when its context does.
		select {
		case <-r.Context().Done():
			stopped <- r.Context().Err()
			return r.Context().Err()
		case <-time.After(time.Minute):
			stopped <- nil
			return nil
		}
	}))
	srv := httptest.NewServer(httpx.WithCallerDeadline(httpx.Instrument(rt, logger, newTestTelemetry(t), slog.LevelInfo)))
	t.Cleanup(srv.Close)

	req, err := http.NewRequest(http.MethodGet, srv.URL+"/slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(httpx.HeaderRequestTimeout, "50")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /slow: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)

	if err := <-stopped; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handler's context ended with %v, want context.DeadlineExceeded", err)
	}
	p := readProblem(t, http.StatusGatewayTimeout, resp.Header, body)
	if p.Code() != "deadline_exceeded" {
		t.Errorf("problem code = %q, want deadline_exceeded", p.Code())
	}
	var found bool
	for _, rec := range logs.Records(t, "") {
		if rec["msg"] == "request" && rec["status"] == float64(http.StatusGatewayTimeout) {
			found = true
		}
	}
	if !found {
		t.Errorf("no access log line with status 504; logs:\n%s", logs)
	}
}

func TestRequestTimeoutSetsTheDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		// want is the longest the handler may be given; 0: no deadline.
		want time.Duration
	}{
		{name: "no header", header: ""},
		{name: "milliseconds", header: "1500", want: 1500 * time.Millisecond},
		{name: "capped at the server's write timeout", header: "99999999", want: 30 * time.Second},
		{name: "zero", header: "0"},
		{name: "negative", header: "-5"},
		{name: "not a number", header: "soon"},
		{name: "a unit", header: "150ms"},
		{name: "absurdly long", header: "9999999999999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			seen := make(chan time.Time, 1)
			h := httpx.WithCallerDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				d, _ := r.Context().Deadline()
				seen <- d
			}))
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			if tt.header != "" {
				req.Header.Set(httpx.HeaderRequestTimeout, tt.header)
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			after := time.Now() // the deadline was set before this
			got := <-seen
			if tt.want == 0 {
				if !got.IsZero() {
					t.Errorf("Request-Timeout %q: deadline %v, want none", tt.header, got)
				}
				return
			}
			if got.IsZero() || got.After(after.Add(tt.want)) {
				t.Errorf("Request-Timeout %q: deadline %v, want one within %v of the request", tt.header, got, tt.want)
			}
		})
	}
}

func TestFormatRequestTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{1850 * time.Millisecond, "1850"},
		{1850*time.Millisecond + 999*time.Microsecond, "1850"}, // down, never past the caller
		{300 * time.Microsecond, "1"},                          // a deadline about to pass is still one
		{-time.Second, "1"},
	}
	for _, tt := range tests {
		got := httpx.FormatRequestTimeout(tt.d)
		if got != tt.want {
			t.Errorf("FormatRequestTimeout(%v) = %q, want %q", tt.d, got, tt.want)
		}
		if d, ok := httpx.ParseRequestTimeout(got); !ok || d > max(tt.d, time.Millisecond) {
			t.Errorf("ParseRequestTimeout(%q) = %v, %v, want at most %v", got, d, ok, tt.d)
		}
	}
}
