package upstream

import (
	"sync"
	"time"
)

// budgetWindow is how far back the retry budget looks, in budgetSlots slots
// of a second: old traffic leaves the window a second at a time.
const (
	budgetSlots  = 10
	budgetWindow = budgetSlots * time.Second
)

// retryBudget lets an upstream's calls be retried only while retries stay
// under a share of the calls made in the last budgetWindow, plus a few
// whatever the traffic, so a quiet upstream can still be retried (Finagle's
// RetryBudget, gRPC's retry throttling). Without it, an upstream that fails
// every call gets each one MaxRetries+1 times: retries triple the load on
// the service least able to take it. With it, they add a fifth.
//
// failsafe-go's budget package bounds the retries in flight against the
// calls in flight instead, which lets sequential callers retry everything;
// see docs/adr/0009-failsafe-go.md.
type retryBudget struct {
	ratio float64
	min   int
	now   func() time.Time

	mu    sync.Mutex
	slots [budgetSlots]budgetSlot
}

// budgetSlot counts one second's calls and retries.
type budgetSlot struct {
	second         int64
	calls, retries int
}

func newRetryBudget(ratio float64, minRetries int, now func() time.Time) *retryBudget {
	return &retryBudget{ratio: ratio, min: minRetries, now: now}
}

// call counts a call (its first attempt).
func (b *retryBudget) call() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.slot(b.now().Unix()).calls++
}

// retry takes a retry from the budget, reporting whether there was one.
func (b *retryBudget) retry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	sec := b.now().Unix()
	var calls, retries int
	for _, s := range b.slots {
		if s.second > sec-budgetSlots {
			calls += s.calls
			retries += s.retries
		}
	}
	if float64(retries+1) > b.ratio*float64(calls)+float64(b.min) {
		return false
	}
	b.slot(sec).retries++
	return true
}

// slot returns the slot of second sec, emptied if it last held an older one.
func (b *retryBudget) slot(sec int64) *budgetSlot {
	s := &b.slots[sec%budgetSlots]
	if s.second != sec {
		*s = budgetSlot{second: sec}
	}
	return s
}
