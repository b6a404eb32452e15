package httpx

import (
	"context"
	"net/http"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// Router is an http.ServeMux that answers every request it has no route for
// with problem+json: 404 for an unknown path, 405 (with Allow) for a known
// path and the wrong method. It never cleans or redirects a path: "//orders"
// or "/orders/" is simply not a route, so a client sees one clear answer.
type Router struct {
	mux      *http.ServeMux
	patterns []string
}

// NewRouter returns an empty Router.
func NewRouter() *Router {
	rt := &Router{mux: http.NewServeMux()}
	rt.mux.HandleFunc("/", rt.fallback)
	return rt
}

// Handle registers h for a ServeMux pattern such as "GET /orders/{id}".
func (rt *Router) Handle(pattern string, h http.Handler) {
	rt.patterns = append(rt.patterns, pattern)
	rt.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hook, ok := r.Context().Value(routeHookKey{}).(RouteHook); ok && !hook(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// Routes returns the patterns registered with Handle, sorted.
func (rt *Router) Routes() []string {
	return slices.Sorted(slices.Values(rt.patterns))
}

// A RouteHook runs once a Router has matched a request, with r.Pattern set,
// just before the route's handler. It returns false when it has answered the
// request itself; the handler is then skipped.
type RouteHook func(w http.ResponseWriter, r *http.Request) bool

type routeHookKey struct{}

// WithRouteHook makes every Router inside h run hook on each request it
// routes. Middleware that acts per route needs this: wrapped around a Router
// it runs before the route is matched, when r.Pattern is still empty. A
// request no route matches (a 404 or 405) never reaches the hook.
//
// Wrap it outside Instrument: it passes on a new *http.Request, and the
// access log must hold the same request the Router sets the pattern on.
func WithRouteHook(h http.Handler, hook RouteHook) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeHookKey{}, hook)))
	})
}

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != path.Clean(r.URL.Path) || !strings.HasPrefix(r.URL.Path, "/") || !printable(r.URL.Path) {
		notFound(w, r)
		return
	}
	rt.mux.ServeHTTP(w, r)
}

// printable reports whether a decoded path is valid UTF-8 without control
// characters. No route's path or id holds anything else; %00 or a stray
// byte in an id would otherwise reach the database, which refuses it with
// an error that is no fault of the service.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

// probeMethods are the methods tried to tell a 405 from a 404.
var probeMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// fallback answers what no route matched: 405 when the path has routes for
// other methods, else 404. It runs only on the error path, so probing the
// mux once per method to build the Allow header costs the hot path nothing.
func (rt *Router) fallback(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range probeMethods {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if _, pattern := rt.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		// 4xx problems are never logged, so no logger is needed.
		WriteError(w, r, nil, apperr.New(apperr.MethodNotAllowed, "method_not_allowed",
			r.Method+" is not allowed on "+r.URL.Path))
		return
	}
	notFound(w, r)
}

func notFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, r, nil, apperr.New(apperr.NotFound, "not_found", "no route for "+r.URL.Path))
}
