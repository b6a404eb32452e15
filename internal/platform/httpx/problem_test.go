package httpx_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

func TestWriteErrorStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{name: "Internal", err: apperr.New(apperr.Internal, "internal", "internal error"), wantStatus: 500, wantCode: "internal"},
		{name: "BadRequest", err: apperr.New(apperr.BadRequest, "malformed_json", "bad"), wantStatus: 400, wantCode: "malformed_json"},
		{name: "Invalid", err: apperr.Validation(map[string]string{"sku": "bad"}), wantStatus: 422, wantCode: "validation"},
		{name: "Unauthorized", err: apperr.New(apperr.Unauthorized, "invalid_token", "bad token"), wantStatus: 401, wantCode: "invalid_token"},
		{name: "Forbidden", err: apperr.New(apperr.Forbidden, "forbidden", "no"), wantStatus: 403, wantCode: "forbidden"},
		{name: "NotFound", err: apperr.New(apperr.NotFound, "order_not_found", "no such order"), wantStatus: 404, wantCode: "order_not_found"},
		{name: "MethodNotAllowed", err: apperr.New(apperr.MethodNotAllowed, "method_not_allowed", "no"), wantStatus: 405, wantCode: "method_not_allowed"},
		{name: "Conflict", err: apperr.New(apperr.Conflict, "email_taken", "taken"), wantStatus: 409, wantCode: "email_taken"},
		{name: "TooLarge", err: apperr.New(apperr.TooLarge, "body_too_large", "big"), wantStatus: 413, wantCode: "body_too_large"},
		{name: "RateLimited", err: apperr.New(apperr.RateLimited, "rate_limited", "slow down"), wantStatus: 429, wantCode: "rate_limited"},
		{name: "BadGateway", err: apperr.New(apperr.BadGateway, "bad_gateway", "upstream"), wantStatus: 502, wantCode: "bad_gateway"},
		{name: "Unavailable", err: apperr.New(apperr.Unavailable, "unavailable", "later"), wantStatus: 503, wantCode: "unavailable"},
		{name: "Timeout", err: apperr.New(apperr.Timeout, "timeout", "too slow"), wantStatus: 504, wantCode: "timeout"},
		{name: "unknown kind", err: apperr.New(apperr.Kind(999), "odd", "odd"), wantStatus: 500, wantCode: "odd"},
		{name: "plain error", err: errors.New("boom"), wantStatus: 500, wantCode: "internal"},
		{name: "wrapped apperr", err: fmt.Errorf("get order: %w", apperr.New(apperr.NotFound, "order_not_found", "no such order")), wantStatus: 404, wantCode: "order_not_found"},
		{name: "context canceled", err: context.Canceled, wantStatus: 500, wantCode: "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			httpx.WriteError(rec, r, slog.New(slog.DiscardHandler), tt.err)
			if rec.Code != tt.wantStatus {
				t.Fatalf("WriteError(%v) status = %d, want %d", tt.err, rec.Code, tt.wantStatus)
			}
			p := readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
			if got := p.Code(); got != tt.wantCode {
				t.Errorf("WriteError(%v) problem code = %q, want %q", tt.err, got, tt.wantCode)
			}
			if p.TraceID != "" {
				t.Errorf("WriteError(%v) traceId = %q without a span, want none", tt.err, p.TraceID)
			}
		})
	}
}

func TestWriteErrorTraceID(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	wantTraceID := span.SpanContext().TraceID().String()

	for _, err := range []error{
		apperr.New(apperr.NotFound, "not_found", "gone"),
		errors.New("boom"),
	} {
		t.Run(fmt.Sprint(err), func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/x", nil)
			httpx.WriteError(rec, r, slog.New(slog.DiscardHandler), err)
			p := readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
			if p.TraceID != wantTraceID {
				t.Errorf("WriteError(%v) traceId = %q, want %q", err, p.TraceID, wantTraceID)
			}
		})
	}
}

// TestWriteErrorHidesInternals checks that an unexpected error reaches the
// log exactly once, with the trace id, and never the client.
func TestWriteErrorHidesInternals(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()

	const secret = "dial tcp 10.0.0.7:5432: password=hunter2 refused"
	tests := []struct {
		name string
		err  error
	}{
		{name: "plain error", err: errors.New(secret)},
		{name: "wrapped plain error", err: fmt.Errorf("store: %w", errors.New(secret))},
		{name: "internal apperr with a cause", err: apperr.Wrap(apperr.Internal, "internal", "internal error", errors.New(secret))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, logs := newTestLogger(t)
			rec := httptest.NewRecorder()
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/orders", nil)
			httpx.WriteError(rec, r, logger, tt.err)

			if rec.Code != http.StatusInternalServerError {
				t.Fatalf("WriteError(%v) status = %d, want 500", tt.err, rec.Code)
			}
			if strings.Contains(rec.Body.String(), "hunter2") || strings.Contains(rec.Body.String(), "10.0.0.7") {
				t.Errorf("WriteError(%v) body = %s, want the cause hidden", tt.err, rec.Body)
			}
			p := readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
			if p.Detail != "internal error" {
				t.Errorf("WriteError(%v) detail = %q, want %q", tt.err, p.Detail, "internal error")
			}

			records := logs.Records(t, "")
			if len(records) != 1 {
				t.Fatalf("WriteError(%v) logged %d records, want 1: %s", tt.err, len(records), logs)
			}
			rec0 := records[0]
			if got, _ := rec0["error"].(string); !strings.Contains(got, "hunter2") {
				t.Errorf("log error = %q, want the cause %q", got, secret)
			}
			if got := rec0["trace_id"]; got != p.TraceID || p.TraceID == "" {
				t.Errorf("log trace_id = %v, want the problem's traceId %q", got, p.TraceID)
			}
			if got := rec0["level"]; got != "ERROR" {
				t.Errorf("log level = %v, want ERROR", got)
			}
			if got := rec0["status"]; got != float64(500) {
				t.Errorf("log status = %v, want 500", got)
			}
		})
	}
}

func TestWriteErrorLogsOnlyServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err         error
		wantRecords int
	}{
		{err: apperr.New(apperr.NotFound, "not_found", "gone"), wantRecords: 0},
		{err: apperr.Validation(map[string]string{"a": "b"}), wantRecords: 0},
		{err: apperr.New(apperr.RateLimited, "rate_limited", "slow"), wantRecords: 0},
		{err: apperr.New(apperr.Unavailable, "unavailable", "later"), wantRecords: 1},
		{err: apperr.New(apperr.BadGateway, "bad_gateway", "upstream"), wantRecords: 1},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			t.Parallel()
			logger, logs := newTestLogger(t)
			httpx.WriteError(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil), logger, tt.err)
			if got := len(logs.Records(t, "")); got != tt.wantRecords {
				t.Errorf("WriteError(%v) logged %d records, want %d: %s", tt.err, got, tt.wantRecords, logs)
			}
		})
	}
}

func TestWriteErrorHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                string
		err                 error
		wantRetryAfter      string
		wantWWWAuthenticate string
	}{
		{
			name:           "rate limited with retry after",
			err:            &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited", Detail: "slow down", RetryAfter: 30},
			wantRetryAfter: "30",
		},
		{
			name:           "unavailable with retry after",
			err:            fmt.Errorf("shed: %w", &apperr.Error{Kind: apperr.Unavailable, Code: "overloaded", Detail: "later", RetryAfter: 1}),
			wantRetryAfter: "1",
		},
		{name: "rate limited without retry after", err: apperr.New(apperr.RateLimited, "rate_limited", "slow down")},
		{
			name:                "unauthorized",
			err:                 apperr.New(apperr.Unauthorized, "invalid_credentials", "wrong password"),
			wantWWWAuthenticate: `Bearer realm="blueprint"`,
		},
		{
			name:                "unauthorized with its challenge",
			err:                 &apperr.Error{Kind: apperr.Unauthorized, Code: "unauthorized", Challenge: `Bearer error="invalid_token"`},
			wantWWWAuthenticate: `Bearer error="invalid_token"`,
		},
		{name: "forbidden has no challenge", err: apperr.New(apperr.Forbidden, "forbidden", "no")},
		{name: "not found has neither", err: apperr.New(apperr.NotFound, "not_found", "gone")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			httpx.WriteError(rec, httptest.NewRequest(http.MethodGet, "/x", nil), slog.New(slog.DiscardHandler), tt.err)
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("WriteError(%v) Retry-After = %q, want %q", tt.err, got, tt.wantRetryAfter)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.wantWWWAuthenticate {
				t.Errorf("WriteError(%v) WWW-Authenticate = %q, want %q", tt.err, got, tt.wantWWWAuthenticate)
			}
		})
	}
}

func TestWriteErrorFieldErrors(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	err := apperr.Validation(map[string]string{"sku": "must match ^[A-Z0-9][A-Z0-9-]{0,63}$", "qty": "must be from 1 to 1000"})
	httpx.WriteError(rec, httptest.NewRequest(http.MethodPost, "/orders", nil), slog.New(slog.DiscardHandler), err)
	p := readProblem(t, http.StatusUnprocessableEntity, rec.Header(), rec.Body.Bytes())
	want := []apperr.FieldError{
		{Field: "qty", Message: "must be from 1 to 1000"},
		{Field: "sku", Message: "must match ^[A-Z0-9][A-Z0-9-]{0,63}$"},
	}
	if fmt.Sprint(p.Errors) != fmt.Sprint(want) {
		t.Errorf("problem errors = %v, want %v", p.Errors, want)
	}
	// Clients read errors[] with these exact JSON names.
	if !regexp.MustCompile(`"errors":\[\{"field":"qty","message":`).MatchString(rec.Body.String()) {
		t.Errorf("body = %s, want errors[] of {field, message}", rec.Body)
	}
}

func TestProblemCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ  string
		want string
	}{
		{typ: httpx.ProblemTypePrefix + "email_taken", want: "email_taken"},
		{typ: "about:blank", want: "about:blank"},
		{typ: httpx.ProblemTypePrefix, want: httpx.ProblemTypePrefix},
		{typ: "", want: ""},
	}
	for _, tt := range tests {
		if got := (httpx.Problem{Type: tt.typ}).Code(); got != tt.want {
			t.Errorf("Problem{Type: %q}.Code() = %q, want %q", tt.typ, got, tt.want)
		}
	}
}

// TestWriteErrorClientGone: once the client has hung up, a failure that
// would be the server's (5xx) is a 499, not logged as an error; a client
// error stays what it was, and a deadline that passed stays a 504.
func TestWriteErrorClientGone(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	t.Cleanup(cancelExpired)
	tests := []struct {
		name       string
		ctx        context.Context
		err        error
		wantStatus int
		wantErrors int // error lines logged
	}{
		{name: "plain error, client gone", ctx: canceled, err: errors.New("query interrupted"), wantStatus: 499},
		{name: "upstream call canceled", ctx: canceled, err: apperr.Wrap(apperr.Unavailable, "canceled", "the request was canceled", context.Canceled), wantStatus: 499},
		{name: "bad gateway, client gone", ctx: canceled, err: apperr.New(apperr.BadGateway, "upstream_error", "upstream"), wantStatus: 499},
		{name: "client error, client gone", ctx: canceled, err: apperr.New(apperr.NotFound, "order_not_found", "no such order"), wantStatus: 404},
		{name: "deadline passed", ctx: expired, err: context.DeadlineExceeded, wantStatus: 504, wantErrors: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, logs := newTestLogger(t)
			rec := httptest.NewRecorder()
			httpx.WriteError(rec, httptest.NewRequestWithContext(tt.ctx, http.MethodGet, "/x", nil), logger, tt.err)
			if rec.Code != tt.wantStatus {
				t.Errorf("WriteError(%v) status = %d, want %d", tt.err, rec.Code, tt.wantStatus)
			}
			errorLines := 0
			for _, line := range logs.Records(t, "") {
				if line["level"] == "ERROR" {
					errorLines++
				}
			}
			if errorLines != tt.wantErrors {
				t.Errorf("WriteError(%v) logged %d error lines, want %d: %s", tt.err, errorLines, tt.wantErrors, logs)
			}
		})
	}
}
