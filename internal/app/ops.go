package app

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// opsHandler serves a module's operations endpoints. They live on their own
// listener so that none of them is ever reachable through the public API,
// and so a deployment can keep that port internal.
//
//	/healthz      the process is alive (liveness: restart me if not)
//	/readyz       the module can do its work: its database and NATS answer,
//	              and it is not shutting down (readiness: route to me)
//	/metrics      Prometheus / OpenMetrics
//	/debug/pprof/ Go profiles; 404 unless PPROF_ENABLED is on, because
//	              they show the command line and cost CPU to serve, and
//	              an ops port is reachable from inside a cluster
//	/chaos        fault injection rules (docs/chaos.md); 404 unless
//	              BLUEPRINT_CHAOS is on
func (m *module) opsHandler(s *system) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_ = httpx.Encode(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.stopping.Load() {
			_ = httpx.Encode(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := m.ready(ctx); err != nil {
			_ = httpx.Encode(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		_ = httpx.Encode(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	// Without BLUEPRINT_CHAOS a module may still have an injector, for the
	// console's switches; the ops listener does not serve it.
	served := m.chaos
	if !s.cfg.Chaos {
		served = nil
	}
	mux.Handle("/chaos", chaos.NewHandler(served))
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.tel.Registry, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	if s.cfg.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
