package httpx

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// HeaderRequestID carries the request id, from the client to the gateway and
// from each service to the services it calls.
const HeaderRequestID = "X-Request-Id"

var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Handle adapts a handler that returns its failure into an http.Handler that
// writes the failure as problem+json. Handlers then read top to bottom and
// end in `return err`.
func Handle(logger *slog.Logger, fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			WriteError(w, r, logger, err)
		}
	})
}

// Instrument wraps a service's router in the middleware every Blueprint
// listener shares, outermost first: request id, OpenTelemetry server span
// and RED metrics (which also honour an incoming traceparent), then access
// log and panic recovery. The router must come directly inside so that the
// route pattern it sets on the request is seen by the span and the log.
//
// The access line is written at accessLevel: info at the gateway, where a
// request enters, and debug in the services behind it, so that a request
// costs one line at the default level (ADR 0012). Failures are logged at
// error level wherever they happen, whatever accessLevel is.
func Instrument(h http.Handler, logger *slog.Logger, tel telemetry.Providers, accessLevel slog.Level) http.Handler {
	h = withAccessLog(withRouteOnSpan(h), logger, accessLevel)
	h = otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(tel.Tracer),
		otelhttp.WithMeterProvider(tel.Meter),
		otelhttp.WithPropagators(tel.Propagator),
		otelhttp.WithSpanNameFormatter(spanName),
	)
	return withRequestID(h)
}

// withRouteOnSpan sets http.route on the request's server span once the
// router has matched the route. otelhttp starts the span before routing:
// it names the span after the route afterwards, but leaves the attribute
// out, and trace queries by route need it.
func withRouteOnSpan(router http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		router.ServeHTTP(w, r)
		if r.Pattern == "" {
			return
		}
		// "POST /orders/{id}" → "/orders/{id}", as the metrics' http_route.
		_, route, _ := strings.Cut(r.Pattern, " ")
		if route == "" {
			route = r.Pattern
		}
		trace.SpanFromContext(r.Context()).SetAttributes(semconv.HTTPRoute(route))
	})
}

func spanName(_ string, r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return r.Method
}

// withRequestID keeps a sane X-Request-Id from the caller or makes one, puts
// it in the context for logs and outbound calls, and echoes it on the
// response before anything else can write a header.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderRequestID)
		if !saneRequestID.MatchString(id) {
			id = NewRequestID()
		}
		w.Header().Set(HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(telemetry.WithRequestID(r.Context(), id)))
	})
}

// NewRequestID returns 16 random bytes in hex.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// withAccessLog writes one line per request at level and turns a panic into a 500
// problem, so one bad request never takes the process down. A request whose
// client hung up before it was answered is a 499 with client_closed=true,
// in the log and in the metrics the middleware outside it records.
func withAccessLog(next http.Handler, logger *slog.Logger, level slog.Level) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p) // the server's own signal to drop the connection
				}
				err := fmt.Errorf("panic: %v\n%s", p, debug.Stack())
				if rec.status == 0 {
					// A bug, whether or not the client is still there:
					// logged and answered 500, never taken for a 499.
					logFailure(logger, r, http.StatusInternalServerError, err)
					WriteAppError(rec, r, apperr.Wrap(apperr.Internal, "internal", "internal error", err))
				} else {
					logger.ErrorContext(r.Context(), "panic after response started", "error", err)
				}
			}
			switch {
			case rec.status == 0 && clientGone(r):
				rec.WriteHeader(StatusClientClosedRequest)
			case rec.status == 0:
				rec.status = http.StatusOK // what net/http sends for a handler that wrote nothing
			}
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("route", r.Pattern),
				slog.String("path", r.URL.Path),
				slog.Int("status", rec.status),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			}
			if rec.status == StatusClientClosedRequest {
				attrs = append(attrs, slog.Bool("client_closed", true))
			}
			logger.LogAttrs(r.Context(), level, "request", attrs...)
		}()
		next.ServeHTTP(rec, r)
	})
}
