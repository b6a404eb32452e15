package httpx

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// HeaderRequestTimeout carries a caller's remaining deadline to the service
// it calls, in whole milliseconds ("Request-Timeout: 1850"). A duration
// rather than a point in time, so that the clocks of the two hosts need not
// agree. The callee counts from when it reads the request, so its deadline
// falls after the caller's by the time the request took to reach it, and
// its answer needs time to get back: work that must be answered in time
// keeps a margin (users' login admission keeps half the time left).
const HeaderRequestTimeout = "Request-Timeout"

// maxRequestTimeout caps what a caller may ask for: past the server's
// WriteTimeout the answer could not be written anyway.
const maxRequestTimeout = writeTimeout

// WithCallerDeadline gives each request the deadline its caller sent in
// Request-Timeout, capped at maxRequestTimeout, so database queries and
// further upstream calls made for it stop when the caller stops waiting.
// A missing or malformed header leaves the request as it came: the header
// can only shorten a request's life. Work that runs out of time is answered
// 504 by WriteError.
//
// Only services whose callers are other services mount it. The gateway
// does not: a client's deadline would turn into the gateway's 504s, errors
// on its dashboards that no server caused.
func WithCallerDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := ParseRequestTimeout(r.Header.Get(HeaderRequestTimeout))
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), min(d, maxRequestTimeout))
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// ParseRequestTimeout reads a Request-Timeout value: a positive number of
// milliseconds.
func ParseRequestTimeout(v string) (time.Duration, bool) {
	if v == "" || len(v) > 9 { // more than 9 digits is over 11 days: not a deadline
		return 0, false
	}
	ms, err := strconv.Atoi(v)
	if err != nil || ms <= 0 {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// FormatRequestTimeout writes d as a Request-Timeout value, rounded down to
// the millisecond so the callee never outlives its caller, and at least 1.
func FormatRequestTimeout(d time.Duration) string {
	return strconv.FormatInt(max(1, d.Milliseconds()), 10)
}
