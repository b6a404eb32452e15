package gateway

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// fakeClock is the injected clock of the limiter tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestKeyedLimiterAllowsBurstThenRate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newKeyedLimiter(rate.Limit(2), 3, clock.now) // 2/s, burst 3

	for i := range 3 {
		if ok, _ := l.allow("ip-a"); !ok {
			t.Fatalf("allow #%d = false, want true within the burst", i+1)
		}
	}
	ok, wait := l.allow("ip-a")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("allow after burst = %v, wait %v; want false and a wait of at most 500ms", ok, wait)
	}
	if ok, _ := l.allow("ip-b"); !ok {
		t.Fatal("allow for another key = false, want keys limited separately")
	}
	clock.t = clock.t.Add(wait)
	if ok, _ := l.allow("ip-a"); !ok {
		t.Fatalf("allow after waiting %v = false, want true", wait)
	}
}

func TestKeyedLimiterExhaustedDoesNotTake(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	window := 15 * time.Minute
	l := newKeyedLimiter(rate.Limit(5/window.Seconds()), 5, clock.now) // 5 failures per 15 min

	for range 10 {
		if blocked, _ := l.exhausted("ada@example.com"); blocked {
			t.Fatal("exhausted before any failure = true, want false: peeking must not take tokens")
		}
	}
	for range 5 {
		l.allow("ada@example.com")
	}
	blocked, wait := l.exhausted("ada@example.com")
	if !blocked || wait <= 0 || wait > 3*time.Minute {
		t.Fatalf("exhausted after 5 failures = %v, wait %v; want true and about 3 minutes", blocked, wait)
	}
	clock.t = clock.t.Add(wait + time.Millisecond)
	if blocked, _ := l.exhausted("ada@example.com"); blocked {
		t.Errorf("exhausted after waiting %v = true, want false", wait)
	}
}

func TestKeyedLimiterForgetsIdleKeys(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newKeyedLimiter(rate.Limit(10), 10, clock.now) // refills in 1 s
	for i := range 1000 {
		l.allow(fmt.Sprintf("ip-%d", i))
	}
	clock.t = clock.t.Add(2 * time.Second)
	l.allow("fresh")
	if n := len(l.buckets); n != 1 {
		t.Errorf("buckets after every key went idle = %d, want 1 (memory bounded by active keys)", n)
	}
}
