// Package apperr defines the kinds of failure every Blueprint service can
// report. Services return these values; exactly one place, the HTTP error
// writer in package httpx, turns a kind into a status code. Keeping the
// mapping in one function is what stops a "not found" in the users service
// from leaking out of the gateway as a 500, as it did in the original system.
package apperr

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Kind classifies a failure by what the caller can do about it.
type Kind int

// The kinds, each with the status the HTTP error writer gives it.
const (
	Internal         Kind = iota // 500: a bug or an unexpected failure; details are logged, not returned
	BadRequest                   // 400: the request cannot be parsed (malformed JSON, wrong type, unknown field)
	Invalid                      // 422: the request parses but breaks a rule; Fields says which
	Unauthorized                 // 401: missing or bad credentials
	Forbidden                    // 403: authenticated but not allowed
	NotFound                     // 404
	Conflict                     // 409: the state does not allow it (email taken, key in flight)
	TooLarge                     // 413: the body is over the cap
	RateLimited                  // 429
	Unavailable                  // 503: try again later (shutting down, dependency down, shed)
	BadGateway                   // 502: an upstream answered with something unusable
	Timeout                      // 504: an upstream did not answer within the deadline
	MethodNotAllowed             // 405
)

// FieldError names one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a failure the API may show to its caller. Code is a short stable
// identifier ("email_taken") that becomes the problem type; Detail is a human
// sentence. Neither may contain secrets or internal details.
type Error struct {
	Kind   Kind
	Code   string
	Detail string
	Fields []FieldError
	// RetryAfter, in seconds, for RateLimited and Unavailable; 0 means unset.
	RetryAfter int
	// Challenge, for Unauthorized, says how to authenticate (the
	// WWW-Authenticate header); empty means a plain Bearer challenge.
	Challenge string
	// Err is the underlying cause, kept for logs and errors.Is, never shown.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Detail, e.Err)
	}
	return e.Code + ": " + e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of the given kind.
func New(kind Kind, code, detail string) *Error {
	return &Error{Kind: kind, Code: code, Detail: detail}
}

// Wrap returns an error of the given kind that keeps err as its cause.
func Wrap(kind Kind, code, detail string, err error) *Error {
	return &Error{Kind: kind, Code: code, Detail: detail, Err: err}
}

// Validation returns an Invalid error listing the fields that broke a rule.
// fields maps a field name to its message, the shape Valid methods return.
func Validation(fields map[string]string) *Error {
	e := &Error{Kind: Invalid, Code: "validation", Detail: "the request has invalid fields"}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		e.Fields = append(e.Fields, FieldError{Field: name, Message: fields[name]})
	}
	return e
}

// KindOf reports the kind of err: the kind of the first *Error in its chain,
// or Internal when there is none.
func KindOf(err error) Kind {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind
	}
	return Internal
}

// Is reports whether err carries an *Error of the given kind.
func Is(err error, kind Kind) bool {
	return err != nil && KindOf(err) == kind
}
