package console

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Limits bound what a Store keeps, so the console's memory does not grow
// with the traffic it watches.
type Limits struct {
	// Traces is how many traces are kept; the one received first is
	// forgotten first.
	Traces int
	// SpansPerTrace and LogsPerTrace cap one trace; what is past them is
	// counted, not kept.
	SpansPerTrace int
	LogsPerTrace  int
	// Logs is how many recent log records that belong to no trace are kept.
	Logs int
	// Series is how many metric series are kept; new ones past it are
	// dropped.
	Series int
}

// DefaultLimits keep the last 1,000 traces: a few megabytes.
var DefaultLimits = Limits{Traces: 1000, SpansPerTrace: 500, LogsPerTrace: 200, Logs: 500, Series: 5000}

// Attr is one attribute, its value as text.
type Attr struct{ Key, Value string }

// attr is the value of key in attrs, or "".
func attr(attrs []Attr, key string) string {
	for _, a := range attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// Span is one span as the console shows it.
type Span struct {
	TraceID, SpanID, ParentID string
	// Service and Instance come from the span's resource (service.name,
	// service.instance.id): which replica did the work.
	Service, Instance string
	Name              string
	// Kind is server, client, producer, consumer or internal.
	Kind          string
	Start, End    time.Time
	Error         bool
	StatusMessage string
	Attrs         []Attr
	Events        []Event
}

// Event is a span event, such as a recorded exception.
type Event struct {
	Time  time.Time
	Name  string
	Attrs []Attr
}

// LogRecord is one log record as the console shows it.
type LogRecord struct {
	Time            time.Time
	Service         string
	Severity        string
	Body            string
	TraceID, SpanID string
	Attrs           []Attr
}

// Trace is what the console holds of one trace: the spans and log records
// received for it so far, in no particular order.
type Trace struct {
	ID    string
	Spans []Span
	Logs  []LogRecord
	// DroppedSpans and DroppedLogs are what arrived past the limits.
	DroppedSpans, DroppedLogs int
}

// Store holds the recent telemetry the console shows. It is safe for
// concurrent use: the receiver writes while pages read.
type Store struct {
	limits Limits

	mu     sync.Mutex
	traces map[string]*Trace
	// ring holds the ids of the kept traces in the order they arrived; next
	// is the slot of the oldest, the one the next new trace replaces.
	ring []string
	next int
	// logs is a ring of recent records outside any trace, next to write at
	// logsNext.
	logs     []LogRecord
	logsNext int
	metrics  metricStore
	// strs shares the strings spans and log records repeat.
	strs *interner
}

// internedStrings bounds the interner: enough for the names, keys and
// values of every route's spans, small next to the traces that share them.
const internedStrings = 4096

// NewStore returns an empty store that keeps what limits allow.
func NewStore(limits Limits) *Store {
	return &Store{
		limits:  limits,
		traces:  make(map[string]*Trace, limits.Traces),
		ring:    make([]string, limits.Traces),
		metrics: metricStore{max: limits.Series, series: map[string]*Point{}},
		strs:    newInterner(internedStrings),
	}
}

// trace returns the trace with id, making room for it when it is new.
// s.mu is held.
func (s *Store) trace(id string) *Trace {
	if t, ok := s.traces[id]; ok {
		return t
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.traces, old)
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	t := &Trace{ID: id}
	s.traces[id] = t
	return t
}

// AddSpans keeps spans, each with its trace.
func (s *Store) AddSpans(spans []Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range spans {
		t := s.trace(sp.TraceID)
		if len(t.Spans) >= s.limits.SpansPerTrace {
			t.DroppedSpans++
			continue
		}
		sp.TraceID = t.ID // one copy of the id per trace, not per span
		s.strs.span(&sp)
		t.Spans = append(t.Spans, sp)
	}
}

// AddLogs keeps log records: those with a trace id with their trace, the
// others in the ring of recent records.
func (s *Store) AddLogs(records []LogRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		if r.TraceID == "" {
			s.strs.log(&r)
			if len(s.logs) < s.limits.Logs {
				s.logs = append(s.logs, r)
			} else if s.limits.Logs > 0 {
				s.logs[s.logsNext] = r
				s.logsNext = (s.logsNext + 1) % s.limits.Logs
			}
			continue
		}
		t := s.trace(r.TraceID)
		if len(t.Logs) >= s.limits.LogsPerTrace {
			t.DroppedLogs++
			continue
		}
		s.strs.log(&r)
		r.TraceID = t.ID
		t.Logs = append(t.Logs, r)
	}
}

// Trace returns a copy of the trace with id, its spans by start time and
// its logs by time.
func (s *Store) Trace(id string) (Trace, bool) {
	s.mu.Lock()
	t, ok := s.traces[id]
	var c Trace
	if ok {
		c = Trace{ID: t.ID, Spans: slices.Clone(t.Spans), Logs: slices.Clone(t.Logs),
			DroppedSpans: t.DroppedSpans, DroppedLogs: t.DroppedLogs}
	}
	s.mu.Unlock()
	slices.SortStableFunc(c.Spans, func(a, b Span) int { return a.Start.Compare(b.Start) })
	slices.SortStableFunc(c.Logs, func(a, b LogRecord) int { return a.Time.Compare(b.Time) })
	return c, ok
}

// Summaries returns a summary of every kept trace that has spans, newest
// first.
func (s *Store) Summaries() []Summary {
	s.mu.Lock()
	out := make([]Summary, 0, len(s.traces))
	for _, t := range s.traces {
		if len(t.Spans) > 0 {
			out = append(out, summarize(t))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Summary) int { return cmp.Or(b.Start.Compare(a.Start), cmp.Compare(a.ID, b.ID)) })
	return out
}

// RecentLogs returns the kept log records that belong to no trace, oldest
// first.
func (s *Store) RecentLogs() []LogRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.logs[s.logsNext:]), s.logs[:s.logsNext]...)
}

// Summary is one line of the trace list.
type Summary struct {
	ID string
	// Root is the name of the span that started the trace (or the earliest
	// one received while the root has not arrived).
	Root    string
	Service string
	// Route is the root's http.route, when it served an HTTP request.
	Route string
	// Status is the root's HTTP response status, 0 when it has none.
	Status   int
	Error    bool
	Start    time.Time
	Duration time.Duration
	Services []string
	Spans    int
}

func summarize(t *Trace) Summary {
	ids := make(map[string]bool, len(t.Spans))
	for _, sp := range t.Spans {
		ids[sp.SpanID] = true
	}
	// The root is the earliest span whose parent is not here: the one that
	// started the trace, or the earliest received while it has not arrived.
	var root *Span
	start, end := t.Spans[0].Start, t.Spans[0].End
	sum := Summary{ID: t.ID, Spans: len(t.Spans)}
	for i := range t.Spans {
		sp := &t.Spans[i]
		if !ids[sp.ParentID] && (root == nil || sp.Start.Before(root.Start)) {
			root = sp
		}
		start, end = minTime(start, sp.Start), maxTime(end, sp.End)
		sum.Error = sum.Error || sp.Error
		if !slices.Contains(sum.Services, sp.Service) {
			sum.Services = append(sum.Services, sp.Service)
		}
	}
	if root == nil { // every span's parent is here: a cycle, never from a real SDK
		root = &t.Spans[0]
	}
	sum.Root, sum.Service, sum.Route = root.Name, root.Service, attr(root.Attrs, "http.route")
	sum.Status = atoi(attr(root.Attrs, "http.response.status_code"))
	sum.Start, sum.Duration = start, end.Sub(start)
	slices.Sort(sum.Services)
	return sum
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
