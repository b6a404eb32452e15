package gateway

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

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

// Requests in flight per client. Shedding protects the gateway, not its
// clients from one another: one address holding requests open (a body sent
// a byte a second, an answer read as slowly) would take every slot, and
// every other client would be shed. So each client IP, counted as the rate
// limits count it, may hold at most MaxInFlightPerIP requests; past it, its
// next one is refused at once with 429, before it takes a slot of the
// gateway's. Requests in flight are this process's own, so the counts stay
// in memory even when the rate-limit buckets are in Redis.

// clientsInFlight counts the requests each client is holding.
type clientsInFlight struct {
	limit int
	scope metric.MeasurementOption

	mu   sync.Mutex
	held map[string]int // absent once a client holds none, so memory follows the clients active now
}

func newClientsInFlight(limit int) *clientsInFlight {
	return &clientsInFlight{limit: limit, held: map[string]int{}, scope: scopeOf(scopeIPInFlight)}
}

// acquire counts one more request for client, unless it holds the limit.
func (c *clientsInFlight) acquire(client string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[client] >= c.limit {
		return false
	}
	c.held[client]++
	return true
}

func (c *clientsInFlight) release(client string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[client] <= 1 {
		delete(c.held, client)
		return
	}
	c.held[client]--
}

// limitInFlightPerIP serves a request only while its client holds fewer
// than its limit.
func (g *Gateway) limitInFlightPerIP(next http.Handler) http.Handler {
	if g.inFlightByIP == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := clientKey(r)
		if !g.inFlightByIP.acquire(client) {
			g.rateLimited.Add(r.Context(), 1, g.inFlightByIP.scope)
			// The body may still be on its way, a byte at a time: closing
			// the connection sends the answer now instead of after reading
			// it. A second is long enough for one of the client's requests
			// to finish.
			w.Header().Set("Connection", "close")
			httpx.WriteError(w, r, g.logger, rateLimited(time.Second, "too many requests in progress from this address"))
			return
		}
		defer g.inFlightByIP.release(client)
		next.ServeHTTP(w, r)
	})
}
