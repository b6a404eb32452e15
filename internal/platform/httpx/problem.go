// Package httpx holds the HTTP plumbing every Blueprint service shares:
// decoding and validating JSON bodies, encoding responses, RFC 9457
// problem+json errors, the router that answers unknown paths with problems,
// request ids, access logs and servers with timeouts. It knows nothing about
// users, orders or notifications.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// ProblemTypePrefix starts every problem type URI; the error code follows it.
// A URN is a valid RFC 9457 type that promises no web page behind it.
const ProblemTypePrefix = "urn:blueprint:problem:"

// ContentTypeProblem is the media type of RFC 9457 error bodies.
const ContentTypeProblem = "application/problem+json"

// Problem is the body of every error response.
type Problem struct {
	Type    string              `json:"type"`
	Title   string              `json:"title"`
	Status  int                 `json:"status"`
	Detail  string              `json:"detail,omitempty"`
	TraceID string              `json:"traceId,omitempty"`
	Errors  []apperr.FieldError `json:"errors,omitempty"`
}

// Code returns the error code of the problem: its type without the prefix.
func (p Problem) Code() string {
	if len(p.Type) > len(ProblemTypePrefix) && p.Type[:len(ProblemTypePrefix)] == ProblemTypePrefix {
		return p.Type[len(ProblemTypePrefix):]
	}
	return p.Type
}

// StatusOf maps an error kind to its HTTP status. It is the only place in
// Blueprint where that mapping lives.
func StatusOf(kind apperr.Kind) int {
	switch kind {
	case apperr.BadRequest:
		return http.StatusBadRequest
	case apperr.Invalid:
		return http.StatusUnprocessableEntity
	case apperr.Unauthorized:
		return http.StatusUnauthorized
	case apperr.Forbidden:
		return http.StatusForbidden
	case apperr.NotFound:
		return http.StatusNotFound
	case apperr.MethodNotAllowed:
		return http.StatusMethodNotAllowed
	case apperr.Conflict:
		return http.StatusConflict
	case apperr.TooLarge:
		return http.StatusRequestEntityTooLarge
	case apperr.RateLimited:
		return http.StatusTooManyRequests
	case apperr.Unavailable:
		return http.StatusServiceUnavailable
	case apperr.BadGateway:
		return http.StatusBadGateway
	case apperr.Timeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// StatusClientClosedRequest is the status of a request whose client went
// away before it was answered: nginx's 499 "client closed request". No
// client reads it; it is for the access log and the metrics, where a 5xx
// would count the client's leaving as the server's failure.
const StatusClientClosedRequest = 499

// clientGone reports whether the client of r has hung up: net/http cancels
// a request's context when its connection closes. A deadline passing is
// not that: it is the caller's time running out, a 504.
func clientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
}

// WriteError writes err as problem+json. Errors that are not *apperr.Error
// become a 500 "internal error" whose cause is logged here, once, with the
// trace id, and never shown to the client — unless the request's deadline
// has passed: then whatever failed (a query, a call) failed because time ran
// out, and the answer is a 504 "deadline_exceeded".
//
// A failure that would be a 5xx after the client has hung up is a 499
// instead, logged only at debug level: the work failed because leaving
// canceled it (a query, a call to another service), no server failed, and
// no one reads the answer.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	e, ok := errors.AsType[*apperr.Error](err)
	switch {
	case ok:
	case errors.Is(r.Context().Err(), context.DeadlineExceeded):
		e = apperr.Wrap(apperr.Timeout, "deadline_exceeded", "the request ran out of time", err)
	default:
		e = apperr.Wrap(apperr.Internal, "internal", "internal error", err)
	}
	status := StatusOf(e.Kind)
	switch {
	case status >= 500 && clientGone(r):
		logger.LogAttrs(r.Context(), slog.LevelDebug, "request abandoned by its client",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
		w.WriteHeader(StatusClientClosedRequest)
		return
	case status >= 500:
		logFailure(logger, r, status, err)
	}
	WriteAppError(w, r, e)
}

// logFailure writes the one error line of a request the server failed.
func logFailure(logger *slog.Logger, r *http.Request, status int, err error) {
	logger.LogAttrs(r.Context(), slog.LevelError, "request failed",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.String("error", err.Error()))
}

// WriteAppError writes e as problem+json, with its WWW-Authenticate and
// Retry-After headers, and logs nothing. It is WriteError's writing half,
// for answers their caller accounts for itself: a refusal by design, such as
// shedding load, which its own metric counts, and which logged as a failure
// on every request would add to the overload.
func WriteAppError(w http.ResponseWriter, r *http.Request, e *apperr.Error) {
	status := StatusOf(e.Kind)
	if e.Kind == apperr.Unauthorized {
		challenge := e.Challenge
		if challenge == "" {
			challenge = `Bearer realm="blueprint"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	WriteProblem(w, r, Problem{
		Type:   ProblemTypePrefix + e.Code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: e.Detail,
		Errors: e.Fields,
	})
}

// WriteProblem writes p, filling in the trace id of the request.
func WriteProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if sc := trace.SpanContextFromContext(r.Context()); sc.HasTraceID() {
		p.TraceID = sc.TraceID().String()
	}
	var buf bytes.Buffer
	// A Problem holds only strings, ints and field lists: it always encodes.
	_ = json.NewEncoder(&buf).Encode(p)
	w.Header().Set("Content-Type", ContentTypeProblem)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(p.Status)
	_, _ = w.Write(buf.Bytes())
}
