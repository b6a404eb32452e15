package users

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// busyHasher is a hasher whose every slot is held, as if by checks that
// last the whole test, with its metrics and warnings in reach.
type busyHasher struct {
	*hasher
	reader *sdkmetric.ManualReader
	logs   *logtest.Buffer
}

// newBusyHasher returns a hasher with every slot held, rounds of logins let
// in before the test's (as many each as there are slots), and a hash
// costing cost.
func newBusyHasher(t *testing.T, rounds int64, cost time.Duration) busyHasher {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	logs := &logtest.Buffer{}
	h, err := newHasher(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	hold(h)
	h.logins.Store(rounds * h.loginSlots())
	h.cost.Store(int64(cost))
	return busyHasher{hasher: h, reader: reader, logs: logs}
}

// hold takes every slot of h, as long-running checks would.
func hold(h *hasher) {
	for range cap(h.slots) {
		h.slots <- struct{}{}
	}
}

// shedCounts returns blueprint.users.login.shed by reason.
func (b busyHasher) shedCounts(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := b.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "blueprint.users.login.shed" {
				for _, dp := range sum.DataPoints {
					reason, _ := dp.Attributes.Value("reason")
					out[reason.AsString()] += dp.Value
				}
			}
		}
	}
	return out
}

// checkOrBlocked runs a login's check and returns its error, failing the
// test if it is still waiting after 5 s: far longer than any refusal
// takes, so it tells "refused" from "queued".
func checkOrBlocked(t *testing.T, ctx context.Context, h *hasher) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { // returns when the check does: at once, at its deadline, or when the test cancels ctx
		_, err := h.check(ctx, "any password", h.dummy)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the login is still waiting after 5 s, want it refused")
		return nil
	}
}

// wantLoginsBusy fails unless err is the 503 overloaded refusal with
// Retry-After.
func wantLoginsBusy(t *testing.T, err error) {
	t.Helper()
	wantAppErr(t, "check", err, apperr.Unavailable, "overloaded")
	if e, _ := errors.AsType[*apperr.Error](err); e != nil && e.RetryAfter < 1 {
		t.Errorf("refusal's Retry-After = %d, want at least 1", e.RetryAfter)
	}
}

// TestLoginRefusedAtOnceWhenItCannotBeCheckedInTime: every slot is busy and
// logins are queued for them; a login that those ahead of it would keep
// waiting past its time — half its caller's deadline, at most maxLoginWait
// — is refused at once with 503 and Retry-After, before its deadline,
// instead of waiting into a 504.
func TestLoginRefusedAtOnceWhenItCannotBeCheckedInTime(t *testing.T) {
	t.Parallel()
	const cost = 100 * time.Millisecond
	tests := []struct {
		name     string
		rounds   int64         // of logins let in before it, as many as there are slots
		ahead    int64         // more logins let in before it
		deadline time.Duration // 0: the caller sent none
	}{
		// Checked after two rounds, it would be done in 300 ms, past half
		// its deadline.
		{name: "queue longer than the deadline", rounds: 2, deadline: 500 * time.Millisecond},
		// One login ahead, and 75 ms to be checked in: less than a check takes.
		{name: "deadline shorter than one check", ahead: 1, deadline: 150 * time.Millisecond},
		// Done in 1.1 s, past maxLoginWait.
		{name: "no deadline, queue longer than the longest wait", rounds: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newBusyHasher(t, tt.rounds, cost)
			ahead := h.logins.Add(tt.ahead)
			ctx := t.Context()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			err := checkOrBlocked(t, ctx, h.hasher)
			if ctx.Err() != nil {
				t.Errorf("the refusal came after the login's deadline (%v)", err)
			}
			wantLoginsBusy(t, err)
			if got := h.logins.Load(); got != ahead {
				t.Errorf("logins let in after the refusal = %d, want the %d before it", got, ahead)
			}
			if got := h.shedCounts(t); got[shedQueue] != 1 || len(got) != 1 {
				t.Errorf("blueprint.users.login.shed = %v, want 1 for reason %q", got, shedQueue)
			}
			if n := len(h.logs.Records(t, "shedding logins")); n != 1 {
				t.Errorf("%d shedding warnings, want 1: %s", n, h.logs)
			}
		})
	}
}

// TestLoginWithNoneAheadIsChecked: a login that finds no other is let in
// and checked whatever the estimate of the cost says, so that an estimate
// left far too high (by a first hash made on a busy machine) is corrected
// by the checks, instead of refusing every login for ever.
func TestLoginWithNoneAheadIsChecked(t *testing.T) {
	t.Parallel()
	h, err := newHasher(noMetrics, noLogs)
	if err != nil {
		t.Fatal(err)
	}
	const password = "correct horse"
	encoded, err := h.hash(t.Context(), password)
	if err != nil {
		t.Fatal(err)
	}
	const wrong = 10 * time.Second
	h.cost.Store(int64(wrong))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if ok, err := h.check(ctx, password, encoded); !ok || err != nil {
		t.Errorf("check with an estimate of %s = %v, %v, want true, nil", wrong, ok, err)
	}
	if got := time.Duration(h.cost.Load()); got >= wrong {
		t.Errorf("estimate after a check = %s, want it corrected below %s", got, wrong)
	}
}

// TestAdmittedLoginGivesUpBeforeItsDeadline: a login let in finds no slot
// free (the checks ahead took longer than estimated) and gives up while it
// can still be answered: a 503, before its deadline, not a 504 after it.
func TestAdmittedLoginGivesUpBeforeItsDeadline(t *testing.T) {
	t.Parallel()
	h := newBusyHasher(t, 0, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	err := checkOrBlocked(t, ctx, h.hasher)
	if ctx.Err() != nil {
		t.Errorf("the refusal came after the login's deadline (%v)", err)
	}
	wantLoginsBusy(t, err)
	if got := h.shedCounts(t); got[shedWait] != 1 || len(got) != 1 {
		t.Errorf("blueprint.users.login.shed = %v, want 1 for reason %q", got, shedWait)
	}
	t.Logf("refused after %s of waiting (at most %s, less two checks)", time.Since(start).Round(time.Millisecond), maxLoginWait)
}

// TestLoginCanceledByItsCallerIsNoRefusal: a caller that stops waiting
// ends its login with its own cancellation, which is not counted as
// shedding.
func TestLoginCanceledByItsCallerIsNoRefusal(t *testing.T) {
	t.Parallel()
	h := newBusyHasher(t, 0, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := checkOrBlocked(t, ctx, h.hasher); !errors.Is(err, context.Canceled) {
		t.Errorf("check = %v, want the caller's cancellation", err)
	}
	if got := h.shedCounts(t); len(got) != 0 {
		t.Errorf("blueprint.users.login.shed = %v, want nothing counted", got)
	}
}

// TestAuthenticateRefusedWithRetryAfter: over HTTP, with the deadline the
// gateway sends in Request-Timeout, a login that cannot be checked in time
// is answered 503 overloaded with Retry-After at once, and users logs no
// error for it: shedding is not failing.
func TestAuthenticateRefusedWithRetryAfter(t *testing.T) {
	t.Parallel()
	kr, err := auth.GenerateKeyring([]string{"gateway", "users", "notifications"})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewServiceVerifier(Name, TrustedCallers, kr.Bundle, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	svc := newTestService(t, sqldbtest.SQLite)
	hold(svc.hasher)
	// Two rounds of checks ahead, 100 ms each: checked in 300 ms.
	svc.hasher.logins.Store(2 * svc.hasher.loginSlots())
	svc.hasher.cost.Store(int64(100 * time.Millisecond))
	logs := &logtest.Buffer{}
	srv := httptest.NewServer(httpx.WithCallerDeadline(NewServer(svc, verifier, slog.New(slog.NewJSONHandler(logs, nil)))))
	t.Cleanup(srv.Close)

	token, err := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now).Token(Name, "")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/users/authenticate",
		strings.NewReader(`{"email":"ada@example.com","password":"correct horse"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(httpx.HeaderRequestTimeout, "250")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	res := response{status: resp.StatusCode, header: resp.Header, body: body}
	wantProblem(t, "POST /users/authenticate", res, http.StatusServiceUnavailable, httpx.ProblemTypePrefix+"overloaded")
	if got := res.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	for _, rec := range logs.Records(t, "") {
		if rec["level"] == "ERROR" {
			t.Errorf("logged %v, want no error for a refused login", rec)
		}
	}
}
