package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Rate limits shared through Redis. With one gateway, buckets in memory are
// exact. With several replicas behind a load balancer each would hold its
// own, and a client spread over N replicas would get N times its limit; in
// Redis every replica draws from the same bucket. The bucket is GCRA (the
// redis_rate library): one key per bucket holding the time it is full
// again, updated by one Lua script, so concurrent replicas cannot
// double-spend a token and an idle bucket expires on its own.
//
// When Redis fails, requests are not refused and limits are not dropped:
// each replica limits with buckets of its own, as without Redis, and tries
// Redis again a second later. A client then gets at most N times its limit
// across N replicas, for as long as Redis is away. Refusing instead (fail
// closed) would turn a Redis outage into an API outage, and let whoever can
// disturb Redis lock every user out of login; dropping the limits (fail
// open) would lift the brute-force protection of login exactly when someone
// may be causing the outage to get it lifted.

const (
	// storeTimeout bounds one check in Redis. Redis answers in well under a
	// millisecond on a local network: a check slower than this means Redis
	// is in trouble, and the request goes on with local buckets rather
	// than wait.
	storeTimeout = 100 * time.Millisecond
	// storeRetry is how long a replica keeps to its own buckets after Redis
	// failed, so that a dead or hung Redis costs one request a second its
	// timeout rather than every request.
	storeRetry = time.Second
)

// RedisOptions parses a redis://, rediss:// or unix:// URL into client
// options for the rate limits: no retries and no repeated dials, since a
// check that cannot finish within its deadline falls back to local buckets
// and Redis is tried again a second later anyway.
func RedisOptions(rawURL string) (*redis.Options, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		if _, ok := errors.AsType[*url.Error](err); ok {
			// url.Error repeats the URL, password and all.
			return nil, errors.New("not a redis://, rediss:// or unix:// URL")
		}
		return nil, errors.New(strings.TrimPrefix(err.Error(), "redis: "))
	}
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialTimeout = time.Second
	opts.ContextTimeoutEnabled = true
	return opts, nil
}

// redisStore is the Redis every limit of one gateway shares, and whether it
// is answering.
type redisStore struct {
	rdb       *redis.Client
	limiter   *redis_rate.Limiter
	prefix    string
	logger    *slog.Logger
	tracer    trace.Tracer
	fallbacks metric.Int64Counter
	now       func() time.Time
	// retryAt is, after a failure, when to try Redis again (Unix
	// nanoseconds); 0 while Redis answers.
	retryAt atomic.Int64
}

func newRedisStore(rdb *redis.Client, prefix string, logger *slog.Logger, tracer trace.Tracer, meter metric.Meter, now func() time.Time) (*redisStore, error) {
	fallbacks, err := meter.Int64Counter("blueprint.gateway.rate_limit_fallbacks",
		metric.WithDescription("Rate-limit checks made with this replica's own buckets because Redis failed, by scope."))
	if err != nil {
		return nil, err
	}
	return &redisStore{rdb: rdb, limiter: redis_rate.NewLimiter(rdb), prefix: prefix, logger: logger, tracer: tracer, fallbacks: fallbacks, now: now}, nil
}

// usable reports whether to ask Redis: always while it answers; after a
// failure, once storeRetry has passed, for one request, whose answer
// decides for the rest.
func (s *redisStore) usable() bool {
	at := s.retryAt.Load()
	if at == 0 {
		return true
	}
	now := s.now().UnixNano()
	return now >= at && s.retryAt.CompareAndSwap(at, now+int64(storeRetry))
}

func (s *redisStore) failed(ctx context.Context, err error) {
	if s.retryAt.Swap(s.now().Add(storeRetry).UnixNano()) == 0 {
		s.logger.WarnContext(ctx, "rate limit store unreachable; limiting with this replica's own buckets",
			"error", err.Error(), "retry_in", storeRetry.String())
	}
}

func (s *redisStore) answered(ctx context.Context) {
	// Load first: a write on every request would bounce the cache line
	// between cores.
	if s.retryAt.Load() != 0 && s.retryAt.Swap(0) != 0 {
		s.logger.InfoContext(ctx, "rate limit store reachable again")
	}
}

// redisLimiter keeps one policy's buckets in Redis under
// "rate:<prefix><policy>:<key>" (redis_rate adds "rate:").
type redisLimiter struct {
	store  *redisStore
	policy policy
	limit  redis_rate.Limit
	// local holds this replica's own buckets while Redis fails.
	local    *keyedLimiter
	scope    metric.MeasurementOption
	spanOpts []trace.SpanStartOption
}

func newRedisLimiter(store *redisStore, p policy) *redisLimiter {
	return &redisLimiter{
		store:  store,
		policy: p,
		limit:  redis_rate.Limit{Rate: p.quota, Burst: p.quota, Period: p.window},
		local:  newKeyedLimiter(p, store.now),
		scope:  scopeOf(p.name),
		spanOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			semconv.DBSystemNameRedis, semconv.DBOperationName("EVALSHA"), attribute.String("blueprint.rate_limit.scope", p.name))},
	}
}

func (l *redisLimiter) allow(ctx context.Context, key string) decision { return l.check(ctx, key, 1) }

func (l *redisLimiter) peek(ctx context.Context, key string) decision { return l.check(ctx, key, 0) }

// check takes n tokens (0 to peek) in Redis, or locally while Redis fails.
func (l *redisLimiter) check(ctx context.Context, key string, n int) decision {
	return viaRedis(ctx, l.store, l.scope, func(ctx context.Context) (decision, error) {
		return l.checkRedis(ctx, key, n)
	}, func() decision {
		if n == 0 {
			return l.local.peek(ctx, key)
		}
		return l.local.allow(ctx, key)
	})
}

func (l *redisLimiter) checkRedis(ctx context.Context, key string, n int) (decision, error) {
	var res *redis_rate.Result
	err := l.store.roundTrip(ctx, "EVALSHA", l.spanOpts, func(ctx context.Context) (err error) {
		res, err = l.store.limiter.AllowN(ctx, l.store.prefix+l.policy.name+":"+key, l.limit, n)
		return err
	})
	if err != nil {
		return decision{}, err
	}
	// The bucket is full again after ResetAfter, which tells what it holds
	// now. Redis computes in float seconds since 2017, whose last bits are
	// noise: rounded to a thousandth, a whole token is not read as 0.9999.
	tokens := float64(l.policy.quota) - float64(res.ResetAfter)/float64(l.policy.interval())
	tokens = math.Round(tokens*1000) / 1000
	if n == 0 {
		return decision{allowed: tokens >= 1, tokens: tokens}, nil
	}
	return decision{allowed: res.Allowed == n, tokens: tokens}, nil
}

// viaRedis returns remote's answer while Redis answers. While Redis fails,
// or when remote does, it returns local's instead, made with this
// replica's own state, and counts the fallback in scope.
func viaRedis[T any](ctx context.Context, s *redisStore, scope metric.MeasurementOption,
	remote func(context.Context) (T, error), local func() T,
) T {
	if s.usable() {
		v, err := remote(ctx)
		if err == nil {
			s.answered(ctx)
			return v
		}
		if ctx.Err() == nil { // a client that left is no fault of Redis
			s.failed(ctx, err)
		}
	}
	s.fallbacks.Add(ctx, 1, scope)
	return local()
}

// roundTrip runs fn, one round trip to Redis, in a client span named name
// and within storeTimeout.
func (s *redisStore) roundTrip(ctx context.Context, name string, opts []trace.SpanStartOption, fn func(context.Context) error) error {
	ctx, span := s.tracer.Start(ctx, name, opts...)
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	err := fn(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		span.RecordError(err)
		span.SetStatus(codes.Error, "rate limit check failed")
	}
	return err
}
