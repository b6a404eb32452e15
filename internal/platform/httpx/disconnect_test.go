package httpx_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// TestClientClosedRequest: a client hangs up while its request is being
// served, and the work fails for it — a query cut off, a call to another
// service canceled — or the handler just stops. That is the client's doing,
// not a server failure: the access log says 499 and that the client went
// away, the request duration histogram counts it under status 499, and no
// error is logged. Before, these were 500s and 503s with an error line each.
func TestClientClosedRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// fail is what the handler returns once the client has gone; nil
		// writes nothing.
		fail func(ctx context.Context) error
	}{
		{name: "work canceled", fail: func(ctx context.Context) error { return ctx.Err() }},
		{name: "upstream call canceled", fail: func(ctx context.Context) error {
			return apperr.Wrap(apperr.Unavailable, "canceled", "the request was canceled", ctx.Err())
		}},
		{name: "handler writes nothing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, logs := newTestLogger(t)
			tel := newTestTelemetry(t)
			started := make(chan struct{})
			rt := httpx.NewRouter()
			rt.Handle("GET /slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				<-r.Context().Done()
				if tt.fail != nil {
					httpx.WriteError(w, r, logger, tt.fail(r.Context()))
				}
			}))
			srv := httptest.NewServer(httpx.Instrument(rt, logger, tel, slog.LevelInfo))
			t.Cleanup(srv.Close)

			ctx, hangUp := context.WithCancel(t.Context())
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/slow", nil)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { // ends when hangUp cancels the request
				resp, err := srv.Client().Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			<-started
			hangUp()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("request = %v, want it canceled by the client", err)
			}

			var access []map[string]any
			statuses := map[string]uint64{}
			waitFor(func() bool {
				access = logs.Records(t, "request")
				statuses = serverStatuses(t, tel.Registry.Gather)
				return len(access) == 1 && len(statuses) > 0
			})
			if len(access) != 1 {
				t.Fatalf("access log lines %v, want 1", access)
			}
			line := access[0]
			if line["status"] != float64(httpx.StatusClientClosedRequest) || line["client_closed"] != true {
				t.Errorf("access log = %v, want status 499 and client_closed=true", line)
			}
			for _, rec := range logs.Records(t, "") {
				if rec["level"] == "ERROR" {
					t.Errorf("logged %v, want no error: the client went away, nothing failed", rec)
				}
			}
			if len(statuses) != 1 || statuses["499"] != 1 {
				t.Errorf("http.server.request.duration counts by status %v, want one request, under 499", statuses)
			}
		})
	}
}

// TestClientClosedRequestPanicStays500: a panic is a bug, whether or not
// the client is still there to get the 500.
func TestClientClosedRequestPanicStays500(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger(t)
	rt := httpx.NewRouter()
	rt.Handle("GET /boom", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("bug") }))
	ctx, hangUp := context.WithCancel(t.Context())
	hangUp()
	rec := httptest.NewRecorder()
	httpx.Instrument(rt, logger, newTestTelemetry(t), slog.LevelInfo).ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/boom", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", rec.Code)
	}
	if n := len(logs.Records(t, "request failed")); n != 1 {
		t.Errorf("logged %d failures, want the panic's one: %s", n, logs)
	}
}

// serverStatuses returns the request count of http.server.request.duration
// by status code.
func serverStatuses(t *testing.T, gather func() ([]*dto.MetricFamily, error)) map[string]uint64 {
	t.Helper()
	families, err := gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	out := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "http_server_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "http_response_status_code" {
					out[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// waitFor polls cond until it holds or 10 s have passed: long enough to
// tell a server that never records from one that records late. The caller
// then checks what it found.
func waitFor(cond func() bool) {
	for deadline := time.Now().Add(10 * time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}
