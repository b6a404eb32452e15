package chaos

import (
	"net/http"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// HookRoute is an httpx.RouteHook: on a service's main listener (installed
// with httpx.WithRouteHook) it applies the rule of the request's route
// pattern, or else the AllRoutes rule, before the route's handler runs. An
// injected error answers 503 problem+json `urn:blueprint:problem:chaos`.
func (in *Injector) HookRoute(w http.ResponseWriter, r *http.Request) bool {
	rule, ok := in.rule(r.Context(), r.Pattern)
	if !ok {
		rule, ok = in.rule(r.Context(), AllRoutes)
	}
	if !ok {
		return true
	}
	if err := in.inject(r.Context(), r.Pattern, rule); err != nil {
		httpx.WriteError(w, r, in.logger, err)
		return false
	}
	return true
}

// NewHandler serves the rules of in, for a service's ops listener:
//
//	GET    /chaos             {"rules": [...], "routes": [...]}: the active
//	                          rules, and every route a rule may name
//	POST   /chaos             a Rule: adds it, or replaces its route's rule
//	DELETE /chaos             clears every rule
//	DELETE /chaos?route=R     clears R's rule
//
// A nil in means fault injection is off: every request is a 404 problem
// `urn:blueprint:problem:chaos_disabled`.
func NewHandler(in *Injector) http.Handler {
	if in == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteError(w, r, nil, apperr.New(apperr.NotFound, "chaos_disabled", "fault injection is off on this service"))
		})
	}
	rt := httpx.NewRouter()
	rt.Handle("GET /chaos", handleList(in))
	rt.Handle("POST /chaos", handleSet(in))
	rt.Handle("DELETE /chaos", handleClear(in))
	return rt
}

func handleList(in *Injector) http.Handler {
	type response struct {
		Rules  []Rule   `json:"rules"`
		Routes []string `json:"routes"`
	}
	return httpx.Handle(in.logger, func(w http.ResponseWriter, r *http.Request) error {
		rules := in.Rules(r.Context())
		if rules == nil {
			rules = []Rule{} // [] rather than null: a list, even when empty
		}
		return httpx.Encode(w, http.StatusOK, response{Rules: rules, Routes: in.Routes()})
	})
}

func handleSet(in *Injector) http.Handler {
	// until is a string here so a bad time is reported as that field, not as
	// unparsable JSON.
	type request struct {
		Route     string  `json:"route"`
		LatencyMs int     `json:"latencyMs"`
		ErrorRate float64 `json:"errorRate"`
		Crash     bool    `json:"crash"`
		Until     string  `json:"until"`
	}
	return httpx.Handle(in.logger, func(w http.ResponseWriter, r *http.Request) error {
		body, err := httpx.ReadBody(w, r)
		if err != nil {
			return err
		}
		var req request
		if err := httpx.Unmarshal(body, &req); err != nil {
			return err
		}
		rule := Rule{Route: req.Route, LatencyMs: req.LatencyMs, ErrorRate: req.ErrorRate, Crash: req.Crash}
		if req.Until != "" {
			if rule.Until, err = time.Parse(time.RFC3339, req.Until); err != nil {
				return &apperr.Error{Kind: apperr.BadRequest, Code: "invalid_rule", Detail: "the rule has invalid fields",
					Fields: []apperr.FieldError{{Field: "until", Message: "must be an RFC 3339 time such as 2026-03-01T12:00:00Z"}}}
			}
		}
		if err := in.Set(r.Context(), rule); err != nil {
			return err
		}
		return httpx.Encode(w, http.StatusOK, rule)
	})
}

func handleClear(in *Injector) http.Handler {
	return httpx.Handle(in.logger, func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Query().Has("route") {
			if err := in.Clear(r.Context(), r.URL.Query().Get("route")); err != nil {
				return err
			}
		} else {
			in.ClearAll(r.Context())
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
