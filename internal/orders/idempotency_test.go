package orders

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// lockOf returns how long the key's row says it is locked from the service's
// clock, now.
func (ts *testService) lockOf(t *testing.T, userID, key string) time.Duration {
	t.Helper()
	var until sqldb.NullTime
	if err := ts.db.QueryRowContext(t.Context(),
		`SELECT locked_until FROM idempotency_keys WHERE user_id = $1 AND key = $2`, userID, key).Scan(&until); err != nil {
		t.Fatalf("read lock of %s: %v", key, err)
	}
	if !until.Valid {
		t.Fatalf("key %s is not locked", key)
	}
	return until.Time.Sub(sqldb.NewTime(ts.clock.Now()).Time)
}

// TestKeyLockFollowsDeadline: a request holds its key until its deadline
// (what its caller sent in Request-Timeout) plus a margin, not for a fixed
// time; at least keyLockMin, at most keyLockMax, which is also the lock of a
// request without a deadline.
func TestKeyLockFollowsDeadline(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		tests := []struct {
			name     string
			deadline time.Duration // 0: none
			// The lock is in [min, max]: the deadline has run a little
			// by the time the key is claimed.
			min, max time.Duration
		}{
			{"no deadline", 0, keyLockMax, keyLockMax},
			{"2 s", 2 * time.Second, 2*time.Second + keyLockMargin - 500*time.Millisecond, 2*time.Second + keyLockMargin},
			{"300 ms, raised to the floor", 300 * time.Millisecond, keyLockMin, keyLockMin},
			{"1 min, cut to the cap", time.Minute, keyLockMax, keyLockMax},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				ts := newTestService(t, b)
				ctx := t.Context()
				if tt.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.deadline)
					defer cancel()
				}
				if _, _, err := ts.claimKey(ctx, "user-1", "key-1", NewOrder{SKU: "A", Qty: 1}.hash()); err != nil {
					t.Fatalf("claimKey() error = %v", err)
				}
				if got := ts.lockOf(t, "user-1", "key-1"); got < tt.min || got > tt.max {
					t.Errorf("lock of a request with deadline %v = %v, want %v to %v", tt.deadline, got, tt.min, tt.max)
				}
			})
		}
	})
}

// TestKeyTakenOverWhenItsLockEnds: the request holding a key is gone (its
// replica died after the claim). Until its lock ends, a retry is refused
// 409 with the time left; from then on the retry takes the key over and
// creates the order. Should the first request come back late, it commits
// nothing and cannot free the key from under the new holder: one order.
func TestKeyTakenOverWhenItsLockEnds(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		body := NewOrder{SKU: "A", Qty: 1}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		gone, _, err := ts.claimKey(ctx, "user-1", "key-1", body.hash())
		if err != nil {
			t.Fatalf("claimKey() error = %v", err)
		}
		lock := ts.lockOf(t, "user-1", "key-1") // a little under 2.5 s

		ts.clock.Advance(lock - 1200*time.Millisecond)
		_, err = ts.Create(t.Context(), "user-1", "key-1", body)
		inFlight, ok := errors.AsType[*keyInFlightError](err)
		if !ok || inFlight.left != 1200*time.Millisecond {
			t.Fatalf("Create() 1.2 s before the lock ends = %v, want idempotency_key_in_flight with 1.2s left", err)
		}
		if e, _ := errors.AsType[*apperr.Error](err); e.RetryAfter != 2 {
			t.Errorf("Create() 1.2 s before the lock ends: RetryAfter = %d, want 2 (seconds, rounded up)", e.RetryAfter)
		}

		ts.clock.Advance(1200 * time.Millisecond)
		taken, err := ts.Create(t.Context(), "user-1", "key-1", body)
		if err != nil || taken.Replayed {
			t.Fatalf("Create() as the lock ends = %+v, %v, want the key taken over and a new order", taken, err)
		}

		// The first request comes back: its answer is refused, its order
		// rolled back, and the key stays the new holder's.
		_, err = ts.commitOrder(t.Context(), "user-1", body, gone)
		if _, ok := errors.AsType[*keyInFlightError](err); !ok {
			t.Errorf("commitOrder() by the request that lost the key = %v, want idempotency_key_in_flight", err)
		}
		releaseKey(t.Context(), ts.db, *gone)
		if o, e := ts.orderRows(t), ts.outboxRows(t); o != 1 || e != 1 {
			t.Errorf("order, outbox rows = %d, %d, want 1, 1", o, e)
		}
		again := ts.mustCreate(t, "user-1", "key-1", body)
		if !again.Replayed || again.Order.ID != taken.Order.ID {
			t.Errorf("Create() again = %+v, want a replay of %s", again, taken.Order.ID)
		}
	})
}
