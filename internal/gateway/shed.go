package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// Load shedding. Every request the gateway serves holds memory, a
// goroutine, and a connection to a service behind it. When the services
// slow down, requests pile up in the gateway faster than they leave, and a
// gateway that takes them all runs out of memory, or answers everyone too
// late to be of use. Past MaxInFlight requests the gateway refuses the next
// one at once with 503 and Retry-After: the requests it has keep their
// latency, and a client (or its load balancer) knows to try again later or
// elsewhere. Nothing waits in a queue: a queue only moves the pile-up.

// shedRetryAfter is the Retry-After of a shed request, in seconds: an
// overload lasts longer than a request, so sooner would mostly be shed again.
const shedRetryAfter = 1

// shedLogEvery spaces the log lines of an overload: the counter has every
// shed request; the log says when it happens.
const shedLogEvery = 10 * time.Second

// shedLoad serves a request only while fewer than maxInFlight are being
// served.
func (g *Gateway) shedLoad(next http.Handler) http.Handler {
	if g.maxInFlight <= 0 {
		return next
	}
	limit := int64(g.maxInFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A compare-and-swap rather than add-then-check, so the count (and
		// the gauge reading it) never exceeds the limit, even for an instant.
		for {
			n := g.inFlight.Load()
			if n >= limit {
				g.shed(w, r)
				return
			}
			if g.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
		defer g.inFlight.Add(-1)
		next.ServeHTTP(w, r)
	})
}

// shed answers 503 overloaded. It writes the problem itself rather than
// through httpx.WriteError, which logs every 5xx as a failure: a shed
// request is the gateway working as designed, and one error line per
// request would add to the overload.
func (g *Gateway) shed(w http.ResponseWriter, r *http.Request) {
	g.shedCount.Add(r.Context(), 1)
	now := g.now().UnixNano()
	if last := g.lastShedLog.Load(); now-last >= int64(shedLogEvery) && g.lastShedLog.CompareAndSwap(last, now) {
		g.logger.WarnContext(r.Context(), "shedding load", "max_in_flight", g.maxInFlight)
	}
	w.Header().Set("Retry-After", strconv.Itoa(shedRetryAfter))
	status := httpx.StatusOf(apperr.Unavailable)
	httpx.WriteProblem(w, r, httpx.Problem{
		Type:   httpx.ProblemTypePrefix + "overloaded",
		Title:  http.StatusText(status),
		Status: status,
		Detail: "the gateway is serving as many requests as it can; try again shortly",
	})
}
