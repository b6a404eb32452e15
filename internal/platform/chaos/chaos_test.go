package chaos_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
)

// The routes of the test service: two HTTP routes and two fault points.
const (
	routeGet    = "GET /items/{id}"
	routePost   = "POST /items"
	pointCommit = "items.after_commit"
	pointSend   = "items.send"
)

// testInjector is an Injector with its log and metrics in reach of the test.
type testInjector struct {
	*chaos.Injector
	logs   *logtest.Buffer
	reader *sdkmetric.ManualReader
}

func newTestInjector(t *testing.T) *testInjector {
	t.Helper()
	logs := &logtest.Buffer{}
	reader := sdkmetric.NewManualReader()
	in, err := chaos.New(slog.New(slog.NewJSONHandler(logs, nil)), sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		pointCommit, pointSend)
	if err != nil {
		t.Fatalf("chaos.New: %v", err)
	}
	in.AddRoutes(routeGet, routePost)
	return &testInjector{Injector: in, logs: logs, reader: reader}
}

func (ti *testInjector) mustSet(t *testing.T, r chaos.Rule) {
	t.Helper()
	if err := ti.Set(t.Context(), r); err != nil {
		t.Fatalf("Set(%+v) = %v, want nil", r, err)
	}
}

// injected returns blueprint.chaos.injected by "route kind".
func (ti *testInjector) injected(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := ti.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok || m.Name != "blueprint.chaos.injected" {
				continue
			}
			for _, dp := range sum.DataPoints {
				route, _ := dp.Attributes.Value("route")
				kind, _ := dp.Attributes.Value("kind")
				out[route.AsString()+" "+kind.AsString()] = dp.Value
			}
		}
	}
	return out
}

// chaosCode returns the problem code of an injected error, "" for nil, and
// fails the test for any other error.
func chaosCode(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	e, ok := errors.AsType[*apperr.Error](err)
	if !ok || e.Kind != apperr.Unavailable {
		t.Fatalf("error %v (%T) is not an Unavailable *apperr.Error", err, err)
	}
	return e.Code
}

func TestNilInjectorInjectsNothing(t *testing.T) {
	t.Parallel()
	var in *chaos.Injector
	in.AddRoutes(routeGet)
	if err := in.Hit(t.Context(), pointCommit); err != nil {
		t.Errorf("nil Injector Hit = %v, want nil", err)
	}
}

func TestErrorRate(t *testing.T) {
	t.Parallel()
	const hits = 200
	for _, tt := range []struct {
		name       string
		rate       float64
		wantErrors int // -1: some, but not all and not none
	}{
		{"rate 0 never fails", 0, 0},
		{"rate 1 always fails", 1, hits},
		{"rate 0.5 fails sometimes", 0.5, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ti := newTestInjector(t)
			latency := 0
			if tt.rate == 0 {
				latency = 1 // a rule must inject something
			}
			ti.mustSet(t, chaos.Rule{Route: pointCommit, ErrorRate: tt.rate, LatencyMs: latency})
			errs := 0
			for range hits {
				if code := chaosCode(t, ti.Hit(t.Context(), pointCommit)); code == "chaos" {
					errs++
				}
			}
			switch {
			case tt.wantErrors >= 0 && errs != tt.wantErrors:
				t.Errorf("%d hits at rate %v failed %d times, want %d", hits, tt.rate, errs, tt.wantErrors)
			// At 0.5 the chance of 200 equal outcomes is 2^-199.
			case tt.wantErrors < 0 && (errs == 0 || errs == hits):
				t.Errorf("%d hits at rate %v failed %d times, want some but not all", hits, tt.rate, errs)
			}
			if got := ti.injected(t)[pointCommit+" error"]; got != int64(errs) {
				t.Errorf("blueprint.chaos.injected{route=%s,kind=error} = %d, want %d", pointCommit, got, errs)
			}
			if err := ti.Hit(t.Context(), pointSend); err != nil {
				t.Errorf("Hit(%s), a point without a rule, = %v, want nil", pointSend, err)
			}
		})
	}
}

// TestLatency runs on synctest's fake clock: the wait is exact and instant.
func TestLatency(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ti := newTestInjector(t)
		ti.mustSet(t, chaos.Rule{Route: pointSend, LatencyMs: 800})
		start := time.Now()
		if err := ti.Hit(t.Context(), pointSend); err != nil {
			t.Fatalf("Hit with latency only = %v, want nil", err)
		}
		if got := time.Since(start); got != 800*time.Millisecond {
			t.Errorf("Hit waited %v, want 800ms", got)
		}
		if got := ti.injected(t); got[pointSend+" latency"] != 1 || got[pointSend+" error"] != 0 {
			t.Errorf("blueprint.chaos.injected = %v, want one latency and no error", got)
		}
	})
}

// TestLatencyHonoursContext: a caller whose context ends during the
// injected latency gets its answer then, not when the latency is over.
func TestLatencyHonoursContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ti := newTestInjector(t)
		ti.mustSet(t, chaos.Rule{Route: pointSend, LatencyMs: int(chaos.MaxLatency / time.Millisecond)})
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		err := ti.Hit(ctx, pointSend)
		if got := time.Since(start); got != 2*time.Second {
			t.Errorf("Hit returned after %v, want 2s, when its context ended", got)
		}
		// A deadline that passed is a timeout, not an injected error.
		if _, isApp := errors.AsType[*apperr.Error](err); isApp || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Hit = %v, want context.DeadlineExceeded and no *apperr.Error", err)
		}
	})
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ti := newTestInjector(t)
		ti.mustSet(t, chaos.Rule{Route: pointCommit, ErrorRate: 1, Until: time.Now().Add(time.Minute)})
		ti.mustSet(t, chaos.Rule{Route: routeGet, LatencyMs: 5}) // no until: stays
		if code := chaosCode(t, ti.Hit(t.Context(), pointCommit)); code != "chaos" {
			t.Fatalf("Hit before the rule expires = %q, want chaos", code)
		}
		time.Sleep(time.Minute)
		if err := ti.Hit(t.Context(), pointCommit); err != nil {
			t.Errorf("Hit once the rule expired = %v, want nil", err)
		}
		if got := ti.Rules(t.Context()); len(got) != 1 || got[0].Route != routeGet {
			t.Errorf("Rules() = %+v, want only the rule without until", got)
		}
		if recs := ti.logs.Records(t, "chaos rule expired"); len(recs) != 1 || recs[0]["route"] != pointCommit || recs[0]["level"] != "WARN" {
			t.Errorf("expiry log = %v, want one warn line for %s", recs, pointCommit)
		}
	})
}

func TestSetValidates(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(time.Hour)
	for _, tt := range []struct {
		name       string
		rule       chaos.Rule
		wantFields []string
	}{
		{"latency", chaos.Rule{Route: routeGet, LatencyMs: 800}, nil},
		{"every route", chaos.Rule{Route: chaos.AllRoutes, ErrorRate: 0.5, Until: future}, nil},
		{"crash at a point", chaos.Rule{Route: pointCommit, ErrorRate: 1, Crash: true}, nil},
		{"largest latency", chaos.Rule{Route: routeGet, LatencyMs: 60000}, nil},
		{"no route", chaos.Rule{LatencyMs: 1}, []string{"route"}},
		{"unknown route", chaos.Rule{Route: "GET /items/{name}", LatencyMs: 1}, []string{"route"}},
		{"unknown point", chaos.Rule{Route: "items.after_comit", ErrorRate: 1}, []string{"route"}},
		{"negative latency", chaos.Rule{Route: routeGet, LatencyMs: -1, ErrorRate: 1}, []string{"latencyMs"}},
		{"latency too long", chaos.Rule{Route: routeGet, LatencyMs: 60001}, []string{"latencyMs"}},
		{"rate above 1", chaos.Rule{Route: routeGet, ErrorRate: 1.5}, []string{"errorRate"}},
		{"negative rate", chaos.Rule{Route: routeGet, ErrorRate: -0.1, LatencyMs: 1}, []string{"errorRate"}},
		{"crash at rate 0", chaos.Rule{Route: pointCommit, Crash: true, LatencyMs: 1}, []string{"errorRate"}},
		{"injects nothing", chaos.Rule{Route: routeGet}, []string{"errorRate"}},
		{"until past", chaos.Rule{Route: routeGet, LatencyMs: 1, Until: time.Now().Add(-time.Second)}, []string{"until"}},
		{"everything wrong", chaos.Rule{Route: "nope", LatencyMs: -5, ErrorRate: 2, Until: time.Unix(0, 0)},
			[]string{"route", "latencyMs", "errorRate", "until"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ti := newTestInjector(t)
			err := ti.Set(t.Context(), tt.rule)
			if tt.wantFields == nil {
				if err != nil {
					t.Fatalf("Set(%+v) = %v, want nil", tt.rule, err)
				}
				if got := ti.Rules(t.Context()); len(got) != 1 || got[0] != tt.rule {
					t.Errorf("Rules() = %+v, want [%+v]", got, tt.rule)
				}
				return
			}
			e, ok := errors.AsType[*apperr.Error](err)
			if !ok || e.Kind != apperr.BadRequest || e.Code != "invalid_rule" {
				t.Fatalf("Set(%+v) = %v, want BadRequest invalid_rule", tt.rule, err)
			}
			var fields []string
			for _, f := range e.Fields {
				fields = append(fields, f.Field)
			}
			if !slices.Equal(fields, tt.wantFields) {
				t.Errorf("Set(%+v) fields = %v, want %v", tt.rule, e.Fields, tt.wantFields)
			}
			if got := ti.Rules(t.Context()); len(got) != 0 {
				t.Errorf("Rules() after a rejected Set = %+v, want none", got)
			}
		})
	}
}

// TestUnknownRouteNamesTheRoutes: the refusal lists what the service has,
// so a typo is fixed from the answer alone.
func TestUnknownRouteNamesTheRoutes(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	err := ti.Set(t.Context(), chaos.Rule{Route: "items.after_comit", ErrorRate: 1})
	e, ok := errors.AsType[*apperr.Error](err)
	if !ok || len(e.Fields) != 1 {
		t.Fatalf("Set = %v, want one field error", err)
	}
	for _, r := range []string{"*", routeGet, routePost, pointCommit, pointSend} {
		if !strings.Contains(e.Fields[0].Message, r) {
			t.Errorf("message %q does not name route %q", e.Fields[0].Message, r)
		}
	}
	want := []string{"*", routeGet, routePost, pointCommit, pointSend}
	if got := ti.Routes(); !slices.Equal(got, want) {
		t.Errorf("Routes() = %q, want %q", got, want)
	}
}

func TestClear(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	ti.mustSet(t, chaos.Rule{Route: routeGet, LatencyMs: 1})
	ti.mustSet(t, chaos.Rule{Route: pointSend, ErrorRate: 1})
	ti.mustSet(t, chaos.Rule{Route: pointSend, ErrorRate: 0.25}) // replaces
	if got := ti.Rules(t.Context()); len(got) != 2 || got[1].ErrorRate != 0.25 {
		t.Fatalf("Rules() = %+v, want 2 rules, %s's replaced", got, pointSend)
	}
	if err := ti.Clear(t.Context(), pointSend); err != nil {
		t.Fatalf("Clear(%s) = %v", pointSend, err)
	}
	if err := ti.Clear(t.Context(), pointSend); !apperr.Is(err, apperr.NotFound) {
		t.Errorf("second Clear(%s) = %v, want NotFound", pointSend, err)
	}
	if err := ti.Clear(t.Context(), "items.nope"); !apperr.Is(err, apperr.BadRequest) {
		t.Errorf("Clear(unknown route) = %v, want BadRequest", err)
	}
	ti.ClearAll(t.Context())
	if got := ti.Rules(t.Context()); len(got) != 0 {
		t.Errorf("Rules() after ClearAll = %+v, want none", got)
	}
	for _, msg := range []string{"chaos rule set", "chaos rule cleared", "chaos rules cleared"} {
		recs := ti.logs.Records(t, msg)
		if len(recs) == 0 {
			t.Errorf("no %q log line", msg)
		}
		for _, rec := range recs {
			if rec["level"] != "WARN" {
				t.Errorf("%q logged at %v, want WARN", msg, rec["level"])
			}
		}
	}
	if recs := ti.logs.Records(t, "chaos rule set"); len(recs) != 3 || recs[0]["route"] != routeGet {
		t.Errorf("set log = %v, want 3 lines, the first for %s", recs, routeGet)
	}
}

// TestAllRoutesIsNotAFaultPoint: "*" covers HTTP routes only; a crash or an
// error at a point in the code is only ever asked for by name.
func TestAllRoutesIsNotAFaultPoint(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	ti.mustSet(t, chaos.Rule{Route: chaos.AllRoutes, ErrorRate: 1})
	if err := ti.Hit(t.Context(), pointCommit); err != nil {
		t.Errorf("Hit(%s) with only a * rule = %v, want nil", pointCommit, err)
	}
}
