package outbox

import (
	"context"
	"sync"
	"time"
)

// lease is a relay's hold on the rows of the batch in hand, as the relay
// itself counts it: on its own monotonic clock, from the moment it sent the
// claim or the renewal that set it. The database dates the same lease from
// when it ran that statement, later, and by its own clock (see leaseClock).
// So the relay always believes its lease ends before the database lets
// another relay take the rows, and it publishes a row only while it
// believes it holds it: two relays never publish one row at once, however
// their clocks are set.
//
// A lease once lost is lost for the rest of the batch, even if a late
// renewal succeeds: by then another relay may have taken and sent the rows.
type lease struct {
	length time.Duration

	mu  sync.Mutex
	end time.Time
}

// newLease returns the lease of a claim of the given length asked at asked.
func newLease(asked time.Time, length time.Duration) *lease {
	l := &lease{length: length}
	l.end = l.endFrom(asked)
	return l
}

// endFrom is when a lease set by a statement sent at asked ends for the
// relay: a tenth of the lease before the database's end, for the rounding
// of stored times and for clocks that do not tick at quite the same rate.
func (l *lease) endFrom(asked time.Time) time.Time {
	return asked.Add(l.length - l.length/10)
}

// held reports whether the lease has not ended.
func (l *lease) held() bool {
	return time.Now().Before(l.deadline())
}

// deadline is when the lease ends unless renewed.
func (l *lease) deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.end
}

// extend records a renewal sent at asked that succeeded. It reports false,
// changing nothing, when the lease had already ended.
func (l *lease) extend(asked time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !time.Now().Before(l.end) {
		return false
	}
	l.end = l.endFrom(asked)
	return true
}

// keepLease renews l on the rows with the given ids every third of the
// lease until the returned stop is called: a relay that lives keeps its rows
// however long its publishes wait for acks, and a relay that died loses them
// one lease after its last renewal. Two renewals in a row may fail before
// the lease is lost. It stops renewing once the lease is lost.
func (r *Relay) keepLease(ctx context.Context, l *lease, ids []string) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() { // ends when stop is called or the lease is lost
		defer close(finished)
		tick := time.NewTicker(r.cfg.Lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if !r.renewLease(ctx, l, ids) {
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// renewLease renews l once and reports whether it is still held.
func (r *Relay) renewLease(ctx context.Context, l *lease, ids []string) bool {
	asked := time.Now()
	// A renewal that lands after the lease ended would be no use: the rows
	// may be another relay's by then.
	ctx, cancel := context.WithDeadline(ctx, l.deadline())
	defer cancel()
	err := renew(ctx, r.cfg.DB, r.cfg.Owner, ids, r.cfg.Lease, asked)
	if err == nil && l.extend(asked) {
		return true
	}
	if l.held() {
		r.cfg.Logger.WarnContext(ctx, "outbox lease renewal failed; retrying", "error", err.Error(), "rows", len(ids))
		return true
	}
	r.cfg.Logger.WarnContext(ctx, "outbox lease lost: another relay may take and send this batch's rows", "rows", len(ids))
	return false
}
