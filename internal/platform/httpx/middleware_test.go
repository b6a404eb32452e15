package httpx_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

var (
	saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	traceIDHex    = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// newTestService returns a router with the kinds of handler a service has,
// wrapped in Instrument, and the buffer its logs go to.
func newTestService(t *testing.T) (http.Handler, *logtest.Buffer) {
	t.Helper()
	logger, logs := newTestLogger(t)
	rt := httpx.NewRouter()
	rt.Handle("GET /ok", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The handler sees the request id in its context, for outbound calls.
		_, _ = io.WriteString(w, "ok "+telemetry.RequestID(r.Context()))
	}))
	rt.Handle("GET /items/{id}", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		return httpx.Encode(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	}))
	rt.Handle("GET /missing", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		return apperr.New(apperr.NotFound, "item_not_found", "no such item")
	}))
	rt.Handle("GET /crash", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		return errors.New("database is on fire")
	}))
	// A handler that writes nothing: net/http answers 200 with no body.
	rt.Handle("GET /empty", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rt.Handle("GET /boom", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("nil map in handler")
	}))
	rt.Handle("GET /boom-late", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		panic("after the header")
	}))
	return httpx.Instrument(rt, logger, newTestTelemetry(t), slog.LevelInfo), logs
}

func TestInstrumentRequestID(t *testing.T) {
	t.Parallel()
	h, _ := newTestService(t)
	tests := []struct {
		name     string
		header   []string // nil: no header at all
		wantKept bool
	}{
		{name: "simple", header: []string{"abc-123"}, wantKept: true},
		{name: "every allowed symbol", header: []string{"A.b_c:d-9"}, wantKept: true},
		{name: "uuid", header: []string{"0190b5a2-7c1e-7e4e-9d6a-3f2b1c0d9e8f"}, wantKept: true},
		{name: "one char", header: []string{"x"}, wantKept: true},
		{name: "128 chars", header: []string{strings.Repeat("a", 128)}, wantKept: true},
		{name: "129 chars", header: []string{strings.Repeat("a", 129)}},
		{name: "very long", header: []string{strings.Repeat("a", 8<<10)}},
		{name: "space", header: []string{"abc 123"}},
		{name: "slash", header: []string{"abc/123"}},
		{name: "markup", header: []string{"<script>"}},
		{name: "log forging", header: []string{"id\nlevel=ERROR"}},
		{name: "trailing newline", header: []string{"abc\n"}},
		{name: "non ascii", header: []string{"café"}},
		{name: "quote", header: []string{`a"b`}},
		{name: "empty", header: []string{""}},
		{name: "absent", header: nil},
	}
	for _, path := range []string{"/ok", "/missing", "/crash", "/boom", "/nope", "//ok"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				r := httptest.NewRequest(http.MethodGet, path, nil)
				if tt.header != nil {
					r.Header[httpx.HeaderRequestID] = tt.header
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)

				got := rec.Header().Get(httpx.HeaderRequestID)
				if tt.wantKept {
					if got != tt.header[0] {
						t.Errorf("GET %s with X-Request-Id %q: X-Request-Id = %q, want it kept", path, tt.header[0], got)
					}
				} else {
					if !saneRequestID.MatchString(got) || (tt.header != nil && got == tt.header[0]) {
						t.Errorf("GET %s with X-Request-Id %q: X-Request-Id = %q, want a new sane id", path, tt.header, got)
					}
				}
				if path == "/ok" && rec.Body.String() != "ok "+got {
					t.Errorf("GET /ok body = %q, want the handler to see request id %q", rec.Body, got)
				}
			})
		}
	}
}

func TestInstrumentNewRequestIDsDiffer(t *testing.T) {
	t.Parallel()
	h, _ := newTestService(t)
	seen := map[string]bool{}
	for range 50 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ok", nil))
		id := rec.Header().Get(httpx.HeaderRequestID)
		if seen[id] {
			t.Fatalf("X-Request-Id %q was made twice", id)
		}
		seen[id] = true
	}
}

func TestInstrumentTraceparent(t *testing.T) {
	t.Parallel()
	h, _ := newTestService(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name        string
		traceparent string
		want        string // "" means a new trace id
	}{
		{name: "sampled parent", traceparent: "00-" + traceID + "-00f067aa0ba902b7-01", want: traceID},
		{name: "unsampled parent", traceparent: "00-" + traceID + "-00f067aa0ba902b7-00", want: traceID},
		{name: "no parent"},
		{name: "garbage parent", traceparent: "not-a-traceparent"},
		{name: "all-zero trace id", traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
	}
	for _, path := range []string{"/missing", "/crash", "/boom", "/nope"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				r := httptest.NewRequest(http.MethodGet, path, nil)
				if tt.traceparent != "" {
					r.Header.Set("traceparent", tt.traceparent)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				p := readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
				switch {
				case tt.want != "" && p.TraceID != tt.want:
					t.Errorf("GET %s with traceparent %q: traceId = %q, want %q", path, tt.traceparent, p.TraceID, tt.want)
				case tt.want == "" && (!traceIDHex.MatchString(p.TraceID) || p.TraceID == strings.Repeat("0", 32)):
					t.Errorf("GET %s with traceparent %q: traceId = %q, want a new 32-hex trace id", path, tt.traceparent, p.TraceID)
				}
			})
		}
	}
}

// TestInstrumentPanic checks that a panicking handler costs one request a
// 500, not the process: the server keeps answering.
func TestInstrumentPanic(t *testing.T) {
	t.Parallel()
	h, logs := newTestService(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatalf("NewRequest: %v", err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: read body: %v", path, err)
		}
		return resp, body
	}

	for i := range 3 {
		resp, body := get("/boom")
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("GET /boom #%d status = %d, want 500 (body %s)", i, resp.StatusCode, body)
		}
		p := readProblem(t, resp.StatusCode, resp.Header, body)
		if p.Detail != "internal error" || strings.Contains(string(body), "nil map") {
			t.Errorf("GET /boom body = %s, want the panic hidden behind %q", body, "internal error")
		}
		if id := resp.Header.Get(httpx.HeaderRequestID); !saneRequestID.MatchString(id) {
			t.Errorf("GET /boom X-Request-Id = %q, want a sane id", id)
		}
		if resp, body := get("/ok"); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ok after a panic: status = %d, want 200 (body %s)", resp.StatusCode, body)
		}
	}
	if !strings.Contains(logs.String(), "nil map in handler") {
		t.Errorf("logs = %s, want the panic logged", logs)
	}
}

// TestInstrumentPanicAfterHeader: once the status is out, the panic can only
// be logged; the client keeps the status it got.
func TestInstrumentPanicAfterHeader(t *testing.T) {
	t.Parallel()
	h, logs := newTestService(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/boom-late", nil))
	if rec.Code != http.StatusAccepted {
		t.Errorf("GET /boom-late status = %d, want %d", rec.Code, http.StatusAccepted)
	}
	var panicLogged, accessLogged bool
	for _, rec := range logs.Records(t, "") {
		panicLogged = panicLogged || (rec["level"] == "ERROR" && strings.Contains(rec["error"].(string), "after the header"))
		accessLogged = accessLogged || (rec["msg"] == "request" && rec["status"] == float64(http.StatusAccepted))
	}
	if !panicLogged || !accessLogged {
		t.Errorf("logs = %s, want the panic and an access line with status 202", logs)
	}
}

func TestInstrumentAccessLog(t *testing.T) {
	t.Parallel()
	const (
		traceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
		requestID = "req-42"
	)
	tests := []struct {
		method, target string
		wantRoute      string
		wantStatus     int
	}{
		{method: "GET", target: "/items/i-7", wantRoute: "GET /items/{id}", wantStatus: 200},
		{method: "GET", target: "/missing", wantRoute: "GET /missing", wantStatus: 404},
		{method: "GET", target: "/empty", wantRoute: "GET /empty", wantStatus: 200},
		{method: "GET", target: "/crash", wantRoute: "GET /crash", wantStatus: 500},
		{method: "GET", target: "/boom", wantRoute: "GET /boom", wantStatus: 500},
		{method: "POST", target: "/items/i-7", wantStatus: 405},
		{method: "GET", target: "/nope", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			t.Parallel()
			h, logs := newTestService(t)
			r := httptest.NewRequest(tt.method, tt.target, nil)
			r.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
			r.Header.Set(httpx.HeaderRequestID, requestID)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.wantStatus {
				t.Fatalf("%s %s status = %d, want %d", tt.method, tt.target, rec.Code, tt.wantStatus)
			}

			var access []map[string]any
			for _, rec := range logs.Records(t, "") {
				if rec["msg"] == "request" {
					access = append(access, rec)
				}
			}
			if len(access) != 1 {
				t.Fatalf("%s %s wrote %d access lines, want 1: %s", tt.method, tt.target, len(access), logs)
			}
			line := access[0]
			want := map[string]any{
				"method":     tt.method,
				"path":       tt.target,
				"status":     float64(tt.wantStatus),
				"trace_id":   traceID,
				"request_id": requestID,
				"level":      "INFO",
			}
			if tt.wantRoute != "" {
				want["route"] = tt.wantRoute
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], v, line)
				}
			}
			if _, ok := line["route"].(string); !ok {
				t.Errorf("access log has no route: %v", line)
			}
			if _, ok := line["duration_ms"].(float64); !ok {
				t.Errorf("access log has no duration_ms: %v", line)
			}
		})
	}
}

// TestInstrumentErrorLogCarriesIDs: the one error line a 500 leaves carries
// the same trace and request ids the client sees.
func TestInstrumentErrorLogCarriesIDs(t *testing.T) {
	t.Parallel()
	h, logs := newTestService(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/crash", nil))
	p := readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
	var errorLines []map[string]any
	for _, line := range logs.Records(t, "") {
		if line["level"] == slog.LevelError.String() {
			errorLines = append(errorLines, line)
		}
	}
	if len(errorLines) != 1 {
		t.Fatalf("GET /crash logged %d error lines, want 1: %s", len(errorLines), logs)
	}
	line := errorLines[0]
	if line["trace_id"] != p.TraceID {
		t.Errorf("error log trace_id = %v, want %q", line["trace_id"], p.TraceID)
	}
	if got, want := line["request_id"], rec.Header().Get(httpx.HeaderRequestID); got != want {
		t.Errorf("error log request_id = %v, want %q", got, want)
	}
	if !strings.Contains(line["error"].(string), "database is on fire") {
		t.Errorf("error log error = %v, want the cause", line["error"])
	}
}
