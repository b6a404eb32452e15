package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (a client IP, a user id, an email)
// held in memory. Buckets idle long enough to be full again are dropped, so
// memory stays bounded by the keys active in one refill period.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

func newKeyedLimiter(limit rate.Limit, burst int, now func() time.Time) *keyedLimiter {
	return &keyedLimiter{limit: limit, burst: burst, now: now, buckets: map[string]*rate.Limiter{}, lastSweep: now()}
}

// allow takes a token for key. When none is left it reports how long until
// one is.
func (l *keyedLimiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	b := l.bucket(key, now)
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// exhausted reports, without taking a token, whether key has none left and
// how long until it has one.
func (l *keyedLimiter) exhausted(key string) (bool, time.Duration) {
	now := l.now()
	tokens := l.bucket(key, now).TokensAt(now)
	if tokens >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
}

func (l *keyedLimiter) bucket(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[key] = b
	}
	return b
}

// sweep drops full buckets once per refill period; a full bucket is the
// same as no bucket.
func (l *keyedLimiter) sweep(now time.Time) {
	period := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
	if now.Sub(l.lastSweep) < period {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
}
