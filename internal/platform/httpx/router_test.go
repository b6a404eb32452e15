package httpx_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// newTestRouter returns a Router with routes shaped like the orders API; each
// answers with a text naming itself.
func newTestRouter(t *testing.T) *httpx.Router {
	t.Helper()
	rt := httpx.NewRouter()
	reply := func(s string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, s)
		})
	}
	rt.Handle("GET /orders", reply("list"))
	rt.Handle("POST /orders", reply("create"))
	rt.Handle("GET /orders/me", reply("mine"))
	rt.Handle("GET /orders/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "order "+r.PathValue("id"))
	}))
	rt.Handle("DELETE /orders/{id}", reply("delete"))
	rt.Handle("GET /.well-known/jwks.json", reply("jwks"))
	return rt
}

var routerTests = []struct {
	name       string
	method     string
	target     string
	wantStatus int
	wantBody   string // for 2xx
	wantAllow  string // for 405
}{
	{name: "list", method: "GET", target: "/orders", wantStatus: 200, wantBody: "list"},
	{name: "list with query", method: "GET", target: "/orders?limit=5", wantStatus: 200, wantBody: "list"},
	{name: "create", method: "POST", target: "/orders", wantStatus: 200, wantBody: "create"},
	{name: "path value", method: "GET", target: "/orders/o-123", wantStatus: 200, wantBody: "order o-123"},
	{name: "escaped path value", method: "GET", target: "/orders/a%2Fb", wantStatus: 200, wantBody: "order a/b"},
	{name: "literal beats wildcard", method: "GET", target: "/orders/me", wantStatus: 200, wantBody: "mine"},
	{name: "dotted path", method: "GET", target: "/.well-known/jwks.json", wantStatus: 200, wantBody: "jwks"},

	{name: "unknown path", method: "GET", target: "/nope", wantStatus: 404},
	{name: "root", method: "GET", target: "/", wantStatus: 404},
	{name: "unknown path with POST", method: "POST", target: "/nope", wantStatus: 404},
	{name: "deeper than any route", method: "GET", target: "/orders/o-1/items", wantStatus: 404},
	{name: "case matters", method: "GET", target: "/Orders", wantStatus: 404},
	// A path value no id can be never reaches a handler (or its database).
	{name: "NUL in a path value", method: "GET", target: "/orders/o-1%00", wantStatus: 404},
	{name: "not UTF-8 in a path value", method: "GET", target: "/orders/o-%ff", wantStatus: 404},
	{name: "escape sequence in a path value", method: "GET", target: "/orders/%1b%5b31m", wantStatus: 404},
	{name: "non-ASCII path value", method: "GET", target: "/orders/%C3%A9t%C3%A9", wantStatus: 200, wantBody: "order été"},

	{name: "wrong method on collection", method: "DELETE", target: "/orders", wantStatus: 405, wantAllow: "GET, POST"},
	{name: "wrong method on item", method: "POST", target: "/orders/o-1", wantStatus: 405, wantAllow: "GET, DELETE"},
	{name: "PUT on collection", method: "PUT", target: "/orders", wantStatus: 405, wantAllow: "GET, POST"},
	{name: "PATCH on jwks", method: "PATCH", target: "/.well-known/jwks.json", wantStatus: 405, wantAllow: "GET"},

	{name: "double slash", method: "GET", target: "//orders", wantStatus: 404},
	{name: "trailing slash", method: "GET", target: "/orders/", wantStatus: 404},
	{name: "dot dot", method: "GET", target: "/orders/../x", wantStatus: 404},
	{name: "dot dot onto a real route", method: "GET", target: "/x/../orders", wantStatus: 404},
	{name: "escaped dot dot onto a real route", method: "GET", target: "/x/%2e%2e/orders", wantStatus: 404},
	{name: "dot segment", method: "GET", target: "/orders/./o-1", wantStatus: 404},
	{name: "double slash inside", method: "GET", target: "/orders//o-1", wantStatus: 404},
	{name: "trailing slash with wrong method", method: "POST", target: "/orders/o-1/", wantStatus: 404},
	{name: "trailing dot dot", method: "GET", target: "/orders/o-1/..", wantStatus: 404},
}

func TestRouter(t *testing.T) {
	t.Parallel()
	rt := newTestRouter(t)
	for _, tt := range routerTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			rt.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
			checkRouted(t, tt.method+" "+tt.target, rec.Code, rec.Header(), rec.Body.String(),
				tt.wantStatus, tt.wantBody, tt.wantAllow)
		})
	}
}

// TestRouterOverTheWire runs the same requests through a real server and
// client, which must not clean or redirect anything either.
func TestRouterOverTheWire(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newTestRouter(t))
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tt := range routerTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.target, nil)
			if err != nil {
				t.Fatalf("NewRequest(%s %s): %v", tt.method, tt.target, err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.target, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			checkRouted(t, tt.method+" "+tt.target, resp.StatusCode, resp.Header, string(body),
				tt.wantStatus, tt.wantBody, tt.wantAllow)
		})
	}
}

func checkRouted(t *testing.T, req string, status int, header http.Header, body string, wantStatus int, wantBody, wantAllow string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("%s status = %d (Location %q, body %q), want %d", req, status, header.Get("Location"), body, wantStatus)
	}
	if loc := header.Get("Location"); loc != "" {
		t.Errorf("%s Location = %q, want none: the router never redirects", req, loc)
	}
	if status < 300 {
		if body != wantBody {
			t.Errorf("%s body = %q, want %q", req, body, wantBody)
		}
		return
	}
	p := readProblem(t, status, header, []byte(body))
	wantCode := map[int]string{404: "not_found", 405: "method_not_allowed"}[status]
	if p.Code() != wantCode {
		t.Errorf("%s problem code = %q, want %q", req, p.Code(), wantCode)
	}
	if got := header.Get("Allow"); got != wantAllow {
		t.Errorf("%s Allow = %q, want %q", req, got, wantAllow)
	}
	if strings.Contains(body, "<") {
		t.Errorf("%s body = %q, want JSON, not the HTML of http.Error", req, body)
	}
}

func TestRouterRoutes(t *testing.T) {
	t.Parallel()
	got := newTestRouter(t).Routes()
	want := []string{"DELETE /orders/{id}", "GET /.well-known/jwks.json", "GET /orders", "GET /orders/me", "GET /orders/{id}", "POST /orders"}
	if !slices.Equal(got, want) {
		t.Errorf("Routes() = %q, want %q", got, want)
	}
}

// TestRouteHook: a hook installed outside Instrument sees the pattern the
// request was routed by, may answer in the handler's place, never sees a
// request no route matched, and leaves the access log its route.
func TestRouteHook(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, target string
		wantSeen             string // the pattern the hook saw; "" for none
		wantStatus           int
		wantBody             string
	}{
		{"routed", "GET", "/orders/o-1", "GET /orders/{id}", 200, "order o-1"},
		{"answered by the hook", "POST", "/orders", "POST /orders", http.StatusTeapot, "hook"},
		{"unknown path", "GET", "/nope", "", 404, ""},
		{"wrong method", "PUT", "/orders", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, logs := newTestLogger(t)
			var seen []string
			h := httpx.WithRouteHook(httpx.Instrument(newTestRouter(t), logger, newTestTelemetry(t), slog.LevelInfo),
				func(w http.ResponseWriter, r *http.Request) bool {
					seen = append(seen, r.Pattern)
					if r.Pattern == "POST /orders" {
						w.WriteHeader(http.StatusTeapot)
						_, _ = io.WriteString(w, "hook")
						return false
					}
					return true
				})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
			if rec.Code != tt.wantStatus {
				t.Fatalf("%s %s status = %d, want %d", tt.method, tt.target, rec.Code, tt.wantStatus)
			}
			if tt.wantBody != "" && rec.Body.String() != tt.wantBody {
				t.Errorf("%s %s body = %q, want %q", tt.method, tt.target, rec.Body, tt.wantBody)
			}
			var want []string
			if tt.wantSeen != "" {
				want = []string{tt.wantSeen}
			}
			if !slices.Equal(seen, want) {
				t.Errorf("hook saw %q, want %q", seen, want)
			}
			for _, rec := range logs.Records(t, "") {
				if rec["msg"] == "request" && tt.wantSeen != "" && rec["route"] != tt.wantSeen {
					t.Errorf("access log route = %v, want %q", rec["route"], tt.wantSeen)
				}
			}
		})
	}
}
