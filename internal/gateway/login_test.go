package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

const loginBody = `{"email":"ada@example.com","password":"` + rightPassword + `"}`

// TestLoginShedByUsersPassesThrough: users refuses a login it could not
// check in time, 503 overloaded with Retry-After. The client gets that
// answer, its Retry-After and problem included, not a 502 or 504 of the
// gateway's; the gateway logs no failure for it. A 503 without Retry-After
// is still users failing: 503 upstream_unavailable.
func TestLoginShedByUsersPassesThrough(t *testing.T) {
	t.Parallel()
	const shedding = `{"type":"urn:blueprint:problem:overloaded","title":"Service Unavailable","status":503,"detail":"too many logins at the moment; try again shortly"}`
	tests := []struct {
		name           string
		retryAfter     string // users' Retry-After; "" for none
		wantCode       string
		wantRetryAfter string
		wantErrorLines int
	}{
		{name: "shedding, with Retry-After", retryAfter: "2", wantCode: "overloaded", wantRetryAfter: "2"},
		{name: "failing, without", wantCode: "upstream_unavailable", wantRetryAfter: "1", wantErrorLines: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tg := newTestGateway(t, Limits{}, time.Now)
			tg.withUsers(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", httpx.ContentTypeProblem)
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(shedding))
			}))
			rec := must(t, tg.request("POST", "/auth/login", "203.0.113.7:5000", "", loginBody), http.StatusServiceUnavailable)
			if got := problemCode(rec); got != tt.wantCode {
				t.Errorf("problem code = %q, want %q (body %s)", got, tt.wantCode, rec.Body)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetryAfter)
			}
			if got := len(tg.logs.Records(t, "request failed")); got != tt.wantErrorLines {
				t.Errorf("logged %d failures, want %d: %s", got, tt.wantErrorLines, tg.logs)
			}
		})
	}
}

// TestLoginClientGoneDuringUpstreamCall: the client hangs up while its
// login waits for users. The call to users is canceled with it; that is the
// client leaving, not users failing: 499, and no failure logged, where it
// was a 503 "canceled" logged as an error.
func TestLoginClientGoneDuringUpstreamCall(t *testing.T) {
	t.Parallel()
	tg := newTestGateway(t, Limits{}, time.Now)
	called := make(chan struct{})
	tg.withUsers(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		// Read as users does, so the server then watches the connection.
		_, _ = io.Copy(io.Discard, r.Body)
		close(called)
		<-r.Context().Done() // the gateway gave up the call
	}))
	ctx, hangUp := context.WithCancel(t.Context())
	req := httptest.NewRequestWithContext(ctx, "POST", "/auth/login", strings.NewReader(loginBody))
	req.RemoteAddr = "203.0.113.7:5000"
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { // ends once the handler has seen the cancellation
		defer close(done)
		tg.Handler().ServeHTTP(rec, req)
	}()
	<-called
	hangUp()
	<-done
	if rec.Code != httpx.StatusClientClosedRequest {
		t.Errorf("status = %d, want 499 (body %s)", rec.Code, rec.Body)
	}
	if got := tg.logs.Records(t, "request failed"); len(got) != 0 {
		t.Errorf("logged %v, want no failure: the client went away", got)
	}
}
