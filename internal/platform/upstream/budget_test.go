package upstream

import (
	"testing"
	"time"
)

// fakeClock is the retry budget's injected clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// retries takes retries from b until it refuses, up to 1000, and says how
// many it got.
func retries(b *retryBudget) int {
	n := 0
	for n < 1000 && b.retry() {
		n++
	}
	return n
}

func TestRetryBudget(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name  string
		ratio float64
		min   int
		// calls[i] calls are made at start + i seconds; want retries are
		// then allowed at start + at.
		calls []int
		at    time.Duration
		want  int
	}{
		{name: "a fifth of the calls", ratio: 0.2, calls: []int{100}, want: 20},
		{name: "a fifth of the calls, rounded down", ratio: 0.2, calls: []int{9}, want: 1},
		{name: "the minimum with no calls", ratio: 0.2, min: 3, want: 3},
		{name: "share and minimum add up", ratio: 0.2, min: 3, calls: []int{50}, want: 13},
		{name: "calls across the window", ratio: 0.2, calls: []int{10, 10, 10, 10, 10}, at: 9 * time.Second, want: 10},
		{name: "calls older than the window are forgotten", ratio: 0.2, calls: []int{100}, at: 10 * time.Second, want: 0},
		{name: "only the window's calls count", ratio: 0.2, calls: []int{100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50}, at: 10 * time.Second, want: 10},
		{name: "no budget at all", ratio: 0, calls: []int{100}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := &fakeClock{t: start}
			b := newRetryBudget(tt.ratio, tt.min, clock.now)
			for i, n := range tt.calls {
				clock.t = start.Add(time.Duration(i) * time.Second)
				for range n {
					b.call()
				}
			}
			clock.t = start.Add(tt.at)
			if got := retries(b); got != tt.want {
				t.Errorf("retries allowed = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestRetryBudgetSpentRetriesCount: retries taken stay counted against the
// budget for the whole window, then leave it with their second.
func TestRetryBudgetSpentRetriesCount(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	b := newRetryBudget(0.5, 0, clock.now)
	for range 10 {
		b.call()
	}
	if got := retries(b); got != 5 {
		t.Fatalf("retries allowed after 10 calls = %d, want 5", got)
	}
	clock.t = clock.t.Add(5 * time.Second)
	for range 10 {
		b.call()
	}
	// 20 calls in the window allow 10 retries; 5 are spent.
	if got := retries(b); got != 5 {
		t.Fatalf("retries allowed 5 s later after 10 more calls = %d, want 5", got)
	}
	clock.t = clock.t.Add(5 * time.Second)
	// The first second left the window with its 10 calls and 5 retries.
	if got := retries(b); got != 0 {
		t.Errorf("retries allowed when the first second left the window = %d, want 0 (10 calls allow 5, 5 spent)", got)
	}
}
