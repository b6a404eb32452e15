package users

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// Login admission. A login costs a password check, tens of milliseconds of
// a CPU and 7 MiB, and only a few checks run at once (hasher.slots). Under a
// flood of logins the rest queue, and a login that waits past its caller's
// deadline is worse than one refused: the caller answers its client 504
// after the whole wait, and counts the timeout against this replica in its
// circuit breaker, the same breaker every other call to users goes through
// (GET /users/{id} for a profile). So a login is let in to wait only when
// the logins already in, checked as many at a time as there are slots the
// registrations leave, would let it be checked before its deadline; if not,
// it is refused at once with 503 overloaded and Retry-After, which callers
// read as "alive and shedding", not as a failure of the replica. A login let
// in on an estimate that proves short gives up the same way as soon as it
// could no longer be checked in time.
//
// A login may take here, waiting and checking, half the time its caller
// has left (the Request-Timeout it sent: the gateway sends what is left of
// its attempt), and never more than maxLoginWait. The other half is for
// what the answer still goes through after the check — the way back, the
// caller's own work — which under a flood waits for the CPUs too. And a
// queue longer than maxLoginWait is a backlog, not a burst: its logins are
// better refused, and sent elsewhere or later, than kept waiting.

// maxLoginWait is the longest a login may take here, waiting and checking.
const maxLoginWait = time.Second

// errLoginsBusy refuses a login that could not be checked before its
// deadline.
var errLoginsBusy = &apperr.Error{Kind: apperr.Unavailable, Code: "overloaded",
	Detail: "too many logins at the moment; try again shortly", RetryAfter: 1}

// Why a login was refused: the reason attribute of blueprint.users.login.shed.
const (
	// shedQueue: on arrival, the logins ahead of it would take too long.
	shedQueue = "queue"
	// shedWait: let in, it found no slot while there was time to be checked.
	shedWait = "wait"
)

// shedLogEvery spaces the warnings of an overload: the counter has every
// refused login; the log says when it happens.
const shedLogEvery = 10 * time.Second

// admitLogin lets a login in to wait for a slot, counted in h.logins until
// the caller subtracts it, and returns the time by which it must hold a
// slot to be checked in time; or it refuses the login with errLoginsBusy.
// That time is two checks' worth before the end: a check takes the average
// only on average, and when the CPUs are busy, longer.
//
// A login with none ahead of it is always let in: a slot is free for it
// (registrations hold at most half), and only checks made correct the
// estimate of the cost. Were a slow start (the first hash, made while the
// machine was busy) to leave the estimate above every deadline, refusing
// on it would refuse every login for ever.
func (h *hasher) admitLogin(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err // its caller has stopped waiting: nothing to check
	}
	now := time.Now()
	within := maxLoginWait
	if d, ok := ctx.Deadline(); ok {
		within = min(within, d.Sub(now)/2)
	}
	checkedBy := now.Add(within)
	ahead := h.logins.Add(1) - 1
	cost := time.Duration(h.cost.Load())
	if ahead > 0 && now.Add(h.queueWait(ahead, cost)+cost).After(checkedBy) {
		h.logins.Add(-1)
		return time.Time{}, h.refuse(ctx, shedQueue)
	}
	return checkedBy.Add(-2 * cost), nil
}

// queueWait estimates how long a login waits for a slot behind ahead
// others: they are checked as many at a time as there are slots hashes of
// new passwords do not hold, each taking cost.
func (h *hasher) queueWait(ahead int64, cost time.Duration) time.Duration {
	return time.Duration(ahead/h.loginSlots()) * cost
}

// loginSlots is how many slots logins have now: every one registrations
// are not using, at least half of them.
func (h *hasher) loginSlots() int64 { return int64(cap(h.slots) - len(h.hashSlots)) }

// waitForSlot takes a slot for an admitted login: a free one at once, else
// the first to come before startBy, past which its check could end after
// its deadline. Then the login is refused, unless its caller has stopped
// waiting first.
func (h *hasher) waitForSlot(ctx context.Context, startBy time.Time) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	default:
	}
	waitCtx, cancel := context.WithDeadline(ctx, startBy)
	defer cancel()
	err := acquire(waitCtx, h.slots)
	if err != nil && ctx.Err() == nil {
		return h.refuse(ctx, shedWait)
	}
	return err
}

// refuse counts a refused login, warns at most every shedLogEvery, and
// returns the refusal.
func (h *hasher) refuse(ctx context.Context, reason string) error {
	h.shed.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	now := time.Now().UnixNano()
	if last := h.lastShedLog.Load(); now-last >= int64(shedLogEvery) && h.lastShedLog.CompareAndSwap(last, now) {
		h.logger.WarnContext(ctx, "shedding logins", "reason", reason, "logins", h.logins.Load(),
			"slots", h.loginSlots(), "hash_ms", time.Duration(h.cost.Load()).Milliseconds())
	}
	return errLoginsBusy
}

// registerMetrics makes the admission's counter and gauges.
func (h *hasher) registerMetrics(meters metric.MeterProvider) error {
	m := meters.Meter("github.com/ds-blueprint/blueprint/internal/users")
	var err error
	if h.shed, err = m.Int64Counter("blueprint.users.login.shed",
		metric.WithDescription("Logins refused with 503 because they could not be checked before their deadline, by reason: queue (on arrival), wait (let in, then no slot in time).")); err != nil {
		return err
	}
	queue, err := m.Int64ObservableGauge("blueprint.users.login.queue",
		metric.WithDescription("Logins let in and not yet checked: waiting for a password-check slot or holding one."))
	if err != nil {
		return err
	}
	cost, err := m.Float64ObservableGauge("blueprint.users.password.hash.cost", metric.WithUnit("s"),
		metric.WithDescription("The time one password hash takes, the moving average login admission estimates waits with."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(queue, h.logins.Load())
		o.ObserveFloat64(cost, time.Duration(h.cost.Load()).Seconds())
		return nil
	}, queue, cost)
	return err
}
