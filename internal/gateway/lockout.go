package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Account lockout. Failed logins are limited per account and client
// address (the login_failures rate limit), so one address guessing an
// account is stopped without stopping the owner anywhere else. Guesses
// spread over many addresses are limited per account too (the
// login_account rate limit), much higher, so that no one address can reach
// it. A failure past it locks the account: for a second at first, then, at
// each further such failure, twice as long, up to a maximum: the
// exponential lockout of OWASP's Authentication Cheat Sheet. A lock refuses
// the owner too, which is why it comes late and short: it takes failures
// from many addresses, and ends soon after they stop.

// lockoutPolicy is the shape of an exponential lockout: lock number n locks
// the account for base·2ⁿ⁻¹, at most max; the count starts again once
// window has passed since the last.
type lockoutPolicy struct {
	name      string
	window    time.Duration
	base, max time.Duration
}

// lockFor is how long lock number n lasts.
func (p lockoutPolicy) lockFor(n int) time.Duration {
	d := p.base
	for range n - 1 {
		if d >= p.max {
			break
		}
		d *= 2
	}
	return min(d, p.max)
}

// lockedFor is how much longer an account locked n times, the last since
// ago, stays locked; 0 when it is not.
func (p lockoutPolicy) lockedFor(n int, since time.Duration) time.Duration {
	if n == 0 {
		return 0
	}
	return max(0, p.lockFor(n)-since)
}

// lockouts keeps the locks of accounts under one lockoutPolicy, in this
// process's memory (localLockouts) or in Redis (redisLockouts). Neither
// returns an error: a lockout never fails a request.
type lockouts interface {
	// lockedFor is how much longer key is locked; 0 when it is not.
	lockedFor(ctx context.Context, key string) time.Duration
	// lock locks key, for twice as long as the time before within the
	// policy's window, and returns for how long.
	lock(ctx context.Context, key string) time.Duration
}

// localLockouts keeps the locks in memory. An account is forgotten once its
// count starts again, so memory stays bounded by the accounts locked
// within one window.
type localLockouts struct {
	policy lockoutPolicy
	now    func() time.Time

	mu        sync.Mutex
	accounts  map[string]locks
	lastSweep time.Time
}

// locks are how many times an account was locked, and when last.
type locks struct {
	n    int
	last time.Time
}

func newLocalLockouts(p lockoutPolicy, now func() time.Time) *localLockouts {
	return &localLockouts{policy: p, now: now, accounts: map[string]locks{}, lastSweep: now()}
}

func (l *localLockouts) lockedFor(_ context.Context, key string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.accounts[key]
	return l.policy.lockedFor(a.n, now.Sub(a.last))
}

func (l *localLockouts) lock(_ context.Context, key string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	a := l.accounts[key]
	if now.Sub(a.last) >= l.policy.window {
		a = locks{}
	}
	a.n++
	a.last = now
	l.accounts[key] = a
	return l.policy.lockFor(a.n)
}

// sweep drops, once per window, the accounts whose count starts again;
// their locks, never longer than the window, are over too.
func (l *localLockouts) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.policy.window {
		return
	}
	l.lastSweep = now
	for k, a := range l.accounts {
		if now.Sub(a.last) >= l.policy.window {
			delete(l.accounts, k)
		}
	}
}

// redisLockouts keeps an account's locks in Redis, shared by every gateway
// replica, as one counter under "lockout:<prefix><policy>:<key>" that
// expires window after the last lock: how long it has left tells when that
// lock began, on Redis's clock. While Redis fails it locks with
// localLockouts of its own, as the rate limits do.
type redisLockouts struct {
	store    *redisStore
	policy   lockoutPolicy
	local    *localLockouts
	scope    metric.MeasurementOption
	spanOpts []trace.SpanStartOption
}

func newRedisLockouts(store *redisStore, p lockoutPolicy) *redisLockouts {
	return &redisLockouts{
		store:  store,
		policy: p,
		local:  newLocalLockouts(p, store.now),
		scope:  scopeOf(p.name),
		spanOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			semconv.DBSystemNameRedis, semconv.DBOperationName("BATCH"), semconv.DBOperationBatchSize(2),
			attribute.String("blueprint.rate_limit.scope", p.name))},
	}
}

func (l *redisLockouts) key(key string) string {
	return "lockout:" + l.store.prefix + l.policy.name + ":" + key
}

func (l *redisLockouts) lockedFor(ctx context.Context, key string) time.Duration {
	return viaRedis(ctx, l.store, l.scope, func(ctx context.Context) (time.Duration, error) {
		var count *redis.StringCmd
		var left *redis.DurationCmd
		err := l.store.roundTrip(ctx, "BATCH", l.spanOpts, func(ctx context.Context) error {
			_, err := l.store.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				count = p.Get(ctx, l.key(key))
				left = p.PTTL(ctx, l.key(key))
				return nil
			})
			return err
		})
		if errors.Is(err, redis.Nil) { // never locked, or long ago
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		n, err := count.Int()
		if err != nil {
			return 0, err
		}
		return l.policy.lockedFor(n, l.policy.window-left.Val()), nil
	}, func() time.Duration { return l.local.lockedFor(ctx, key) })
}

func (l *redisLockouts) lock(ctx context.Context, key string) time.Duration {
	return viaRedis(ctx, l.store, l.scope, func(ctx context.Context) (time.Duration, error) {
		var count *redis.IntCmd
		err := l.store.roundTrip(ctx, "BATCH", l.spanOpts, func(ctx context.Context) error {
			// One transaction, so the counter never exists without its
			// expiry.
			_, err := l.store.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				count = p.Incr(ctx, l.key(key))
				p.PExpire(ctx, l.key(key), l.policy.window)
				return nil
			})
			return err
		})
		if err != nil {
			return 0, err
		}
		return l.policy.lockFor(int(count.Val())), nil
	}, func() time.Duration { return l.local.lock(ctx, key) })
}
