// Package chaos injects faults into a running service, for demos and fault
// tests: latency, errors and crashes, either on an HTTP route of the service
// ("GET /users/{id}", or "*" for every route) or at a named fault point in
// its code ("orders.after_commit", "notifications.deliver", …).
//
// It is off by default. internal/app builds an Injector for each service
// only when BLUEPRINT_CHAOS=true, and serves its rules on that service's ops
// listener, never on a public port. A nil *Injector injects nothing, so a
// fault point is one unconditional call to Hit. In `all` mode each service
// has its own Injector and rules, as it has its own ops listener.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// AllRoutes is the route of a rule for every HTTP route of the service. It
// never applies at a fault point: a crash there must be asked for by name.
const AllRoutes = "*"

// MaxLatency bounds a rule's latency: longer than any timeout in Blueprint,
// so every timeout can be made to fire, but not a way to hang a request
// for good.
const MaxLatency = time.Minute

// Rule is the fault injected at one route.
type Rule struct {
	// Route is an HTTP route pattern as the service's router registers it,
	// AllRoutes, or the name of a fault point.
	Route string `json:"route"`
	// LatencyMs is waited first, every time the route is hit.
	LatencyMs int `json:"latencyMs"`
	// ErrorRate is the share of hits, from 0 to 1, that fail after the
	// latency: with an error (503 on an HTTP route), or with a crash.
	ErrorRate float64 `json:"errorRate"`
	// Crash makes a failing hit kill the process with SIGKILL instead.
	Crash bool `json:"crash"`
	// Until is when the rule vanishes; zero keeps it until it is cleared.
	Until time.Time `json:"until,omitzero"`
}

// active reports whether the rule has not expired at now.
func (r Rule) active(now time.Time) bool { return r.Until.IsZero() || now.Before(r.Until) }

func (r Rule) logAttrs() []any {
	attrs := []any{"route", r.Route, "latency_ms", r.LatencyMs, "error_rate", r.ErrorRate, "crash", r.Crash}
	if !r.Until.IsZero() {
		attrs = append(attrs, "until", r.Until.Format(time.RFC3339))
	}
	return attrs
}

// Injector holds one service's rules and injects them.
type Injector struct {
	logger   *slog.Logger
	injected metric.Int64Counter

	mu sync.RWMutex
	// routes are the routes a rule may name, besides AllRoutes.
	routes map[string]bool
	rules  map[string]Rule
}

// New returns an Injector with no rules, which accepts rules for the given
// routes (HTTP route patterns and fault point names) and AllRoutes.
func New(logger *slog.Logger, meter metric.MeterProvider, routes ...string) (*Injector, error) {
	injected, err := meter.Meter("github.com/ds-blueprint/blueprint/internal/platform/chaos").Int64Counter(
		"blueprint.chaos.injected", metric.WithDescription("Faults injected, by route and kind (latency, error, crash)."))
	if err != nil {
		return nil, err
	}
	in := &Injector{logger: logger, injected: injected, routes: map[string]bool{}, rules: map[string]Rule{}}
	in.AddRoutes(routes...)
	return in, nil
}

// AddRoutes lets rules name more routes: a service's HTTP routes are known
// only once its router is built, after the code holding its fault points.
func (in *Injector) AddRoutes(routes ...string) {
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, r := range routes {
		in.routes[r] = true
	}
}

// Routes returns the routes a rule may name, AllRoutes first.
func (in *Injector) Routes() []string {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return append([]string{AllRoutes}, slices.Sorted(maps.Keys(in.routes))...)
}

// Set adds the rule for r.Route, replacing any rule it had. Errors:
// BadRequest "invalid_rule" naming each bad field.
func (in *Injector) Set(ctx context.Context, r Rule) error {
	if fields := in.check(r, time.Now()); len(fields) > 0 {
		return &apperr.Error{Kind: apperr.BadRequest, Code: "invalid_rule", Detail: "the rule has invalid fields", Fields: fields}
	}
	in.mu.Lock()
	in.rules[r.Route] = r
	in.mu.Unlock()
	in.logger.WarnContext(ctx, "chaos rule set", r.logAttrs()...)
	return nil
}

func (in *Injector) check(r Rule, now time.Time) []apperr.FieldError {
	var fields []apperr.FieldError
	bad := func(field, msg string) { fields = append(fields, apperr.FieldError{Field: field, Message: msg}) }
	if err := in.checkRoute(r.Route); err != nil {
		bad("route", err.Error())
	}
	if r.LatencyMs < 0 || r.LatencyMs > int(MaxLatency/time.Millisecond) {
		bad("latencyMs", fmt.Sprintf("must be from 0 to %d", MaxLatency/time.Millisecond))
	}
	switch {
	case r.ErrorRate < 0 || r.ErrorRate > 1:
		bad("errorRate", "must be from 0 to 1")
	case r.Crash && r.ErrorRate == 0:
		bad("errorRate", "must be above 0 with crash: it is the share of hits that crash (1 for every hit)")
	case r.LatencyMs == 0 && r.ErrorRate == 0:
		bad("errorRate", "the rule injects nothing: set latencyMs, errorRate or both")
	}
	if !r.Until.IsZero() && !r.Until.After(now) {
		bad("until", "must be in the future")
	}
	return fields
}

func (in *Injector) checkRoute(route string) error {
	if route == "" {
		return errors.New("must name a route")
	}
	if route == AllRoutes {
		return nil
	}
	in.mu.RLock()
	known := in.routes[route]
	in.mu.RUnlock()
	if !known {
		return fmt.Errorf("unknown route %q; this service has %s", route, strings.Join(in.Routes(), ", "))
	}
	return nil
}

// Clear removes the rule of route. Errors: BadRequest "invalid_rule" for a
// route the service does not have; NotFound "rule_not_found" when the route
// has no rule.
func (in *Injector) Clear(ctx context.Context, route string) error {
	if err := in.checkRoute(route); err != nil {
		return &apperr.Error{Kind: apperr.BadRequest, Code: "invalid_rule", Detail: err.Error(),
			Fields: []apperr.FieldError{{Field: "route", Message: err.Error()}}}
	}
	in.mu.Lock()
	_, ok := in.rules[route]
	delete(in.rules, route)
	in.mu.Unlock()
	if !ok {
		return apperr.New(apperr.NotFound, "rule_not_found", "no rule for "+route)
	}
	in.logger.WarnContext(ctx, "chaos rule cleared", "route", route)
	return nil
}

// ClearAll removes every rule.
func (in *Injector) ClearAll(ctx context.Context) {
	in.mu.Lock()
	routes := slices.Sorted(maps.Keys(in.rules))
	clear(in.rules)
	in.mu.Unlock()
	in.logger.WarnContext(ctx, "chaos rules cleared", "count", len(routes), "routes", routes)
}

// Rules returns the active rules, by route.
func (in *Injector) Rules(ctx context.Context) []Rule {
	in.mu.RLock()
	all := slices.Collect(maps.Values(in.rules))
	in.mu.RUnlock()
	now := time.Now()
	var out []Rule
	for _, r := range all {
		if r.active(now) {
			out = append(out, r)
		} else {
			in.expire(ctx, r)
		}
	}
	slices.SortFunc(out, func(a, b Rule) int { return strings.Compare(a.Route, b.Route) })
	return out
}

// rule returns the active rule of route. Expired rules are dropped when
// found: nothing runs in the background to remove them.
func (in *Injector) rule(ctx context.Context, route string) (Rule, bool) {
	in.mu.RLock()
	r, ok := in.rules[route]
	in.mu.RUnlock()
	if !ok || r.active(time.Now()) {
		return r, ok
	}
	in.expire(ctx, r)
	return Rule{}, false
}

// expire removes r unless it was replaced meanwhile.
func (in *Injector) expire(ctx context.Context, r Rule) {
	in.mu.Lock()
	cur, ok := in.rules[r.Route]
	gone := ok && cur == r
	if gone {
		delete(in.rules, r.Route)
	}
	in.mu.Unlock()
	if gone {
		in.logger.WarnContext(ctx, "chaos rule expired", r.logAttrs()...)
	}
}

// Hit is a fault point: it injects the rule of the named point, if any. It
// waits the rule's latency, then fails at the rule's rate: with a crash when
// the rule says so (Hit never returns), else with Unavailable "chaos". When
// ctx ends during the latency it returns Unavailable "chaos" wrapping the
// context's error. A nil Injector returns nil at once.
func (in *Injector) Hit(ctx context.Context, point string) error {
	if in == nil {
		return nil
	}
	r, ok := in.rule(ctx, point)
	if !ok {
		return nil
	}
	return in.inject(ctx, point, r)
}

// inject applies r at route, the point or HTTP route being hit.
func (in *Injector) inject(ctx context.Context, route string, r Rule) error {
	if r.LatencyMs > 0 {
		in.count(ctx, route, "latency")
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The caller's deadline passed while this imitated a slow
				// service: a timeout, as the slow service would give
				// (httpx answers it 504 deadline_exceeded).
				return fmt.Errorf("latency injected at %s outlived the deadline: %w", route, ctx.Err())
			}
			return apperr.Wrap(apperr.Unavailable, "chaos", "ended during the latency injected at "+route, context.Cause(ctx))
		case <-time.After(time.Duration(r.LatencyMs) * time.Millisecond):
		}
	}
	// rand.Float64 is in [0, 1): a rate of 0 never fails, 1 always does.
	if rand.Float64() >= r.ErrorRate {
		return nil
	}
	if r.Crash {
		in.crash(ctx, route)
	}
	in.count(ctx, route, "error")
	return apperr.New(apperr.Unavailable, "chaos", "fault injected at "+route)
}

// count records an injected fault on the metric and the current span.
func (in *Injector) count(ctx context.Context, route, kind string) {
	attrs := []attribute.KeyValue{attribute.String("route", route), attribute.String("kind", kind)}
	in.injected.Add(ctx, 1, metric.WithAttributes(attrs...))
	trace.SpanFromContext(ctx).AddEvent("chaos.injected", trace.WithAttributes(attrs...))
}

// crash kills the process with SIGKILL. Not os.Exit, not a panic: no
// deferred call, shutdown hook, drain, ack or flush runs, exactly as when
// the kernel's OOM killer or a lost node ends a process. The log line is
// written first (the logger writes synchronously); the metric and span can
// only be seen if something reads them before the signal lands.
func (in *Injector) crash(ctx context.Context, route string) {
	in.count(ctx, route, "crash")
	in.logger.WarnContext(ctx, "chaos crash: killing the process", "route", route, "pid", os.Getpid())
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill() // on Unix, SIGKILL to ourselves cannot be refused
	}
	// The signal may land a moment later: nothing past the point may run.
	select {}
}
