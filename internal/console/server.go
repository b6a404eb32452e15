package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Config is what a console serves.
type Config struct {
	Store *Store
	// Faults are the fault injectors of the services in this process, by
	// service; without them the faults page says how to turn them on.
	Faults map[string]*chaos.Injector
	// DeadLetters reaches the dead-letter stream; nil when the console has
	// no NATS connection.
	DeadLetters *notifications.DeadLetters
	Logger      *slog.Logger
	Now         func() time.Time
}

// NewHandler serves the console's pages and its OTLP/HTTP receiver. Forms
// that change something (a fault, a replay) are refused when another site
// sends them (http.CrossOriginProtection), so a page on the web cannot
// drive a console on a developer's loopback.
func NewHandler(cfg Config) (http.Handler, error) {
	pages, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	c := &console{cfg: cfg, pages: pages}
	rc := receiver{store: cfg.Store}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", rc.traces)
	mux.HandleFunc("POST /v1/metrics", rc.metrics)
	mux.HandleFunc("POST /v1/logs", rc.logs)
	mux.HandleFunc("GET /static/{name}", serveStatic(static))
	mux.HandleFunc("GET /{$}", c.architecture)
	mux.HandleFunc("GET /traces", c.traceList)
	mux.HandleFunc("GET /traces/{id}", c.trace)
	mux.HandleFunc("GET /events", c.events)
	mux.HandleFunc("POST /events/replay", c.replay)
	mux.HandleFunc("GET /faults", c.faults)
	mux.HandleFunc("POST /faults", c.setFault)
	mux.HandleFunc("POST /faults/clear", c.clearFault)
	return http.NewCrossOriginProtection().Handler(mux), nil
}

// serveStatic serves the embedded stylesheet and script whole. Not
// http.FileServer: two small files need no Range requests, whose parsing
// is where FileServer's known CPU exhaustion lies (GO-2026-6609).
func serveStatic(files fs.FS) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		data, err := fs.ReadFile(files, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(data)
	}
}

type console struct {
	cfg   Config
	pages *template.Template
}

// page is what every template receives.
type page struct {
	Title string
	Nav   string // which tab is current
	Data  any
	// Error is shown above the page: an action that failed.
	Error string
}

// render writes the page whole, or a 500 when its template fails: never
// half a page.
func (c *console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	var buf bytes.Buffer
	if err := c.pages.ExecuteTemplate(&buf, name, p); err != nil {
		c.cfg.Logger.WarnContext(r.Context(), "console page failed", "page", name, "error", err.Error())
		http.Error(w, "the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// Everything is served from here: no inline script, no other origin.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

func (c *console) architecture(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "architecture.html", page{Title: "Architecture", Nav: "architecture", Data: c.cfg.Store.Architecture(c.cfg.Now())})
}

func (c *console) traceList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Route: q.Get("route"), Status: q.Get("status"), Service: q.Get("service")}
	f.MinMs, _ = strconv.Atoi(q.Get("min_ms"))
	all := c.cfg.Store.Summaries()
	var shown []Summary
	var services, routes []string
	for _, s := range all {
		for _, sv := range s.Services {
			if !slices.Contains(services, sv) {
				services = append(services, sv)
			}
		}
		if s.Route != "" && !slices.Contains(routes, s.Route) {
			routes = append(routes, s.Route)
		}
		if f.Match(s) && len(shown) < 200 {
			shown = append(shown, s)
		}
	}
	slices.Sort(services)
	slices.Sort(routes)
	c.render(w, r, http.StatusOK, "traces.html", page{Title: "Traces", Nav: "traces", Data: struct {
		Filter           Filter
		Traces           []Summary
		Kept             int
		Services, Routes []string
	}{f, shown, len(all), services, routes}})
}

func (c *console) trace(w http.ResponseWriter, r *http.Request) {
	t, ok := c.cfg.Store.Trace(r.PathValue("id"))
	if !ok {
		c.render(w, r, http.StatusNotFound, "trace.html", page{Title: "Trace not found", Nav: "traces",
			Error: "No trace " + r.PathValue("id") + " is kept: it was never received, or older traces replaced it."})
		return
	}
	rows, start, total := Waterfall(t)
	type logLine struct {
		LogRecord
		At time.Duration
	}
	logs := make([]logLine, 0, len(t.Logs))
	for _, l := range t.Logs {
		logs = append(logs, logLine{LogRecord: l, At: l.Time.Sub(start)})
	}
	c.render(w, r, http.StatusOK, "trace.html", page{Title: "Trace " + t.ID, Nav: "traces", Data: struct {
		Trace    Trace
		Rows     []Row
		Logs     []logLine
		Start    time.Time
		Duration time.Duration
	}{t, rows, logs, start, total}})
}

// eventMetrics are the event flow's metrics, in the order the page shows
// them, with what each says.
var eventMetrics = []struct{ Name, Help string }{
	{"blueprint.outbox.pending", "events committed with their orders, not yet published"},
	{"blueprint.outbox.oldest_pending_age", "seconds the oldest of them has waited"},
	{"blueprint.outbox.lag", "seconds from commit to the stream's ack (mean over the last export)"},
	{"blueprint.consumer.pending", "events in the stream not yet delivered to the worker"},
	{"blueprint.consumer.ack_pending", "events delivered, not yet acknowledged"},
	{"blueprint.consumer.redelivered", "events delivered more than once, not yet acknowledged"},
	{"blueprint.notifications.sent", "notifications delivered and recorded"},
	{"blueprint.notifications.failed", "attempts that failed and will be retried"},
	{"blueprint.notifications.dead_lettered", "events given up on"},
}

func (c *console) events(w http.ResponseWriter, r *http.Request) {
	type metricRow struct {
		Name, Help string
		Points     []Point
	}
	since := c.cfg.Now().Add(-staleAfter)
	var rows []metricRow
	for _, m := range eventMetrics {
		rows = append(rows, metricRow{Name: m.Name, Help: m.Help, Points: c.cfg.Store.Points(m.Name, since)})
	}
	var (
		letters []notifications.DeadLetter
		err     error
	)
	if c.cfg.DeadLetters != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		letters, err = c.cfg.DeadLetters.List(ctx)
		cancel()
	}
	p := page{Title: "Events", Nav: "events", Data: struct {
		Metrics     []metricRow
		DeadLetters []notifications.DeadLetter
		HasDLQ      bool
		Replayed    string
	}{rows, letters, c.cfg.DeadLetters != nil, r.URL.Query().Get("replayed")}}
	if err != nil {
		p.Error = "The dead letters could not be read: " + err.Error()
	}
	c.render(w, r, http.StatusOK, "events.html", p)
}

func (c *console) replay(w http.ResponseWriter, r *http.Request) {
	if c.cfg.DeadLetters == nil {
		http.Error(w, "this console has no NATS connection", http.StatusNotFound)
		return
	}
	seq, err := strconv.ParseUint(r.FormValue("seq"), 10, 64)
	if err != nil {
		http.Error(w, "seq must be a dead letter's sequence number", http.StatusBadRequest)
		return
	}
	done, err := c.cfg.DeadLetters.Replay(r.Context(), seq)
	if err != nil {
		c.cfg.Logger.WarnContext(r.Context(), "console replay failed", "seq", seq, "error", err.Error())
		http.Redirect(w, r, "/events?replayed="+url.QueryEscape("failed: "+err.Error()), http.StatusSeeOther)
		return
	}
	c.cfg.Logger.InfoContext(r.Context(), "dead letter replayed from the console", "seq", seq, "event_id", done.EventID, "stream_seq", done.StreamSeq)
	http.Redirect(w, r, fmt.Sprintf("/events?replayed=%d", seq), http.StatusSeeOther)
}

// serviceFaults is one service's switches on the faults page.
type serviceFaults struct {
	Service string
	Routes  []string
	Rules   []chaos.Rule
}

func (c *console) faults(w http.ResponseWriter, r *http.Request) {
	var all []serviceFaults
	for name, in := range c.cfg.Faults {
		all = append(all, serviceFaults{Service: name, Routes: in.Routes(), Rules: in.Rules(r.Context())})
	}
	slices.SortFunc(all, func(a, b serviceFaults) int { return strings.Compare(a.Service, b.Service) })
	c.render(w, r, http.StatusOK, "faults.html", page{Title: "Faults", Nav: "faults", Data: all, Error: r.URL.Query().Get("error")})
}

func (c *console) injector(w http.ResponseWriter, r *http.Request) (*chaos.Injector, bool) {
	in, ok := c.cfg.Faults[r.FormValue("service")]
	if !ok {
		http.Error(w, "no fault switches for that service here", http.StatusNotFound)
	}
	return in, ok
}

func (c *console) setFault(w http.ResponseWriter, r *http.Request) {
	in, ok := c.injector(w, r)
	if !ok {
		return
	}
	rule := chaos.Rule{Route: r.FormValue("route"), Crash: r.FormValue("crash") == "on"}
	latency, lerr := strconv.Atoi(orZero(r.FormValue("latency_ms")))
	percent, perr := strconv.ParseFloat(orZero(r.FormValue("error_percent")), 64)
	err := errors.Join(lerr, perr)
	if err == nil {
		rule.LatencyMs, rule.ErrorRate = latency, math.Round(percent*100)/10000
		err = in.Set(r.Context(), rule)
	}
	if err != nil {
		http.Redirect(w, r, "/faults?error="+url.QueryEscape(err.Error()), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/faults", http.StatusSeeOther)
}

func (c *console) clearFault(w http.ResponseWriter, r *http.Request) {
	in, ok := c.injector(w, r)
	if !ok {
		return
	}
	if err := in.Clear(r.Context(), r.FormValue("route")); err != nil {
		http.Redirect(w, r, "/faults?error="+url.QueryEscape(err.Error()), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/faults", http.StatusSeeOther)
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

var funcs = template.FuncMap{
	// ms prints a duration in milliseconds, three significant figures.
	"ms": func(d time.Duration) string {
		v := float64(d) / float64(time.Millisecond)
		switch {
		case v >= 100:
			return fmt.Sprintf("%.0f ms", v)
		case v >= 10:
			return fmt.Sprintf("%.1f ms", v)
		}
		return fmt.Sprintf("%.2f ms", v)
	},
	"rate":  func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + "/s" },
	"num":   func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) },
	"clock": func(t time.Time) string { return t.Format("15:04:05.000") },
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
	"join": strings.Join,
	"percentOf": func(part float64) string {
		return strconv.FormatFloat(part*100, 'f', -1, 64)
	},
}
