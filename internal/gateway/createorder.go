package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// An order's Idempotency-Key held by another request.
//
// orders answers 409 idempotency_key_in_flight while another request holds
// the order's key. After a crash that request is most often the gateway's
// own: its attempt reached a replica that claimed the key and died, the
// upstream client retried on another replica, and that one refused. The
// key stays locked until the dead attempt's deadline, plus a margin, and
// orders says how long in Retry-After-Ms. Rather than pass the 409 on to a
// client whose order is about to become available, the gateway waits that
// long and calls again: the key is then taken over, or the order replayed.

const (
	// headerRetryAfterMs is orders' time left on a key's lock, in
	// milliseconds: Retry-After's whole seconds would add up to a second.
	headerRetryAfterMs = "Retry-After-Ms"
	// maxKeyWaits bounds a request's waits: a key taken over by yet another
	// request (the client's own retry through another gateway) may be
	// waited for again, but not without end.
	maxKeyWaits = 3
	// minCallAfterWait is the least time worth calling orders again after
	// a wait: a claim and a commit, with room.
	minCallAfterWait = 250 * time.Millisecond
)

// placeOrder sends req to orders and, while orders answers that another
// request holds the order's key, waits for its lock to end and sends req
// again, as long as the wait and one more call fit in g.orderTimeout from
// now: the client gets its order, created or replayed, rather than a 409.
func (g *Gateway) placeOrder(ctx context.Context, req upstream.Request) (*upstream.Response, error) {
	deadline := time.Now().Add(g.orderTimeout)
	resp, err := g.upstreams.Orders.Do(ctx, req)
	for waits := 0; err == nil && waits < maxKeyWaits; waits++ {
		wait, ok := keyLockLeft(resp)
		if !ok || time.Until(deadline) < wait+minCallAfterWait {
			break
		}
		g.keyWaits.Add(ctx, 1)
		g.logger.InfoContext(ctx, "order's Idempotency-Key is held by another request; waiting for its lock to end",
			"wait_ms", wait.Milliseconds())
		if !sleep(ctx, wait) {
			break // the client has gone
		}
		resp, err = g.callOrdersBy(ctx, deadline, req)
	}
	return resp, err
}

// callOrdersBy sends req to orders, giving up at deadline.
func (g *Gateway) callOrdersBy(ctx context.Context, deadline time.Time, req upstream.Request) (*upstream.Response, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return g.upstreams.Orders.Do(ctx, req)
}

// keyLockLeft reports, for orders' 409 idempotency_key_in_flight, how long
// the key stays locked; ok is false for any other answer, or one that does
// not say.
func keyLockLeft(resp *upstream.Response) (time.Duration, bool) {
	if resp.Status != http.StatusConflict {
		return 0, false
	}
	if p, ok := resp.Problem(); !ok || p.Code() != "idempotency_key_in_flight" {
		return 0, false
	}
	// A positive number of milliseconds, as Request-Timeout is.
	return httpx.ParseRequestTimeout(resp.Header.Get(headerRetryAfterMs))
}

// sleep waits for d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
