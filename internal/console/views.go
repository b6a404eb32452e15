package console

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Filter selects traces for the list, from the page's query.
type Filter struct {
	Route   string // a root's http.route or span name contains it
	Status  string // "", "error" (any failed span or 5xx), "ok", or an HTTP status such as 404
	MinMs   int    // at least this long
	Service string // a span of this service is in the trace
}

// Match reports whether the trace summarized by s passes f.
func (f Filter) Match(s Summary) bool {
	switch {
	case f.Route != "" && !strings.Contains(s.Route, f.Route) && !strings.Contains(s.Root, f.Route):
		return false
	case f.MinMs > 0 && s.Duration < time.Duration(f.MinMs)*time.Millisecond:
		return false
	case f.Service != "" && !slices.Contains(s.Services, f.Service):
		return false
	}
	switch f.Status {
	case "":
		return true
	case "error":
		return s.Error || s.Status >= 500
	case "ok":
		return !s.Error && s.Status < 400
	}
	return strconv.Itoa(s.Status) == f.Status
}

// Row is one span in a waterfall: where its bar starts and how wide it is,
// in percent of the trace's duration, and how deep it sits in the tree.
type Row struct {
	Span
	Depth         int
	Offset, Width float64
	// At is the span's start after the trace's, Took its duration.
	At, Took time.Duration
}

// Waterfall lays out a trace's spans as a tree, each parent followed by its
// children by start time; spans whose parent has not arrived start trees of
// their own. It returns the rows and the trace's start and duration.
func Waterfall(t Trace) ([]Row, time.Time, time.Duration) {
	if len(t.Spans) == 0 {
		return nil, time.Time{}, 0
	}
	start, end := t.Spans[0].Start, t.Spans[0].End
	children := map[string][]Span{}
	present := map[string]bool{}
	for _, sp := range t.Spans {
		present[sp.SpanID] = true
		start, end = minTime(start, sp.Start), maxTime(end, sp.End)
	}
	var roots []Span
	for _, sp := range t.Spans { // sorted by start by Store.Trace
		if present[sp.ParentID] {
			children[sp.ParentID] = append(children[sp.ParentID], sp)
		} else {
			roots = append(roots, sp)
		}
	}
	total := end.Sub(start)
	rows := make([]Row, 0, len(t.Spans))
	var walk func(sp Span, depth int)
	walk = func(sp Span, depth int) {
		r := Row{Span: sp, Depth: depth, At: sp.Start.Sub(start), Took: sp.End.Sub(sp.Start)}
		if total > 0 {
			r.Offset = 100 * float64(r.At) / float64(total)
			r.Width = max(100*float64(r.Took)/float64(total), 0.2)
		} else {
			r.Width = 100
		}
		rows = append(rows, r)
		for _, c := range children[sp.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return rows, start, total
}

// staleAfter is how old a metric point may be and still show: a replica
// that stopped exporting leaves the picture after it.
const staleAfter = 30 * time.Second

// Graph is the live architecture: the services, who calls whom, and how
// each replica is doing.
type Graph struct {
	Nodes []Node
	Edges []Edge
	// Width and Height are the picture's size.
	Width, Height int
}

// Node is a service, or the NATS stream between services.
type Node struct {
	Name      string
	Replicas  []Replica
	X, Y      int // where the picture draws it
	IsBroker  bool
	ReqRate   float64 // requests/s served, all replicas
	ErrorRate float64 // of them, answered 5xx
	// Pending and Redelivered are the broker's: events in the stream not
	// yet delivered to a consumer, and delivered more than once but not
	// yet acknowledged.
	Pending, Redelivered float64
}

// Replica is one process of a service.
type Replica struct {
	Instance  string
	ReqRate   float64
	ErrorRate float64
	MeanMs    float64
	// Breakers are the replica's circuit breakers, one per upstream replica.
	Breakers []Breaker
}

// Breaker is a caller's circuit breaker for one upstream replica.
type Breaker struct {
	Upstream, Replica string
	State             string // closed, half-open or open
}

// Edge is a call path: HTTP between services, or a subject through NATS.
type Edge struct {
	From, To string
	Label    string
	// Open is true while a breaker on this path is open.
	Open bool
	// Path is the SVG path the picture draws, and LX, LY where its label
	// goes.
	Path   string
	LX, LY int
}

// brokerNode names NATS in the picture.
const brokerNode = "NATS JetStream"

var breakerStates = map[float64]string{0: "closed", 1: "half-open", 2: "open"}

// Architecture builds the graph from the store: edges from the kept traces
// (a span whose parent is in another service) and from the callers'
// breakers, rates and breaker states from the latest metrics.
func (s *Store) Architecture(now time.Time) Graph {
	since := now.Add(-staleAfter)
	nodes := map[string]*Node{}
	node := func(name string) *Node {
		if n, ok := nodes[name]; ok {
			return n
		}
		n := &Node{Name: name, IsBroker: name == brokerNode}
		nodes[name] = n
		return n
	}
	replica := func(n *Node, instance string) *Replica {
		for i := range n.Replicas {
			if n.Replicas[i].Instance == instance {
				return &n.Replicas[i]
			}
		}
		n.Replicas = append(n.Replicas, Replica{Instance: instance})
		return &n.Replicas[len(n.Replicas)-1]
	}
	edges := map[[3]string]*Edge{}
	edge := func(from, to, label string) *Edge {
		node(from)
		node(to)
		k := [3]string{from, to, label}
		if e, ok := edges[k]; ok {
			return e
		}
		e := &Edge{From: from, To: to, Label: label}
		edges[k] = e
		return e
	}

	for _, p := range s.Points("http.server.request.duration", since) {
		r := replica(node(p.Service), p.Instance)
		r.ReqRate += p.Rate
		if atoi(attr(p.Attrs, "http.response.status_code")) >= 500 {
			r.ErrorRate += p.Rate
		}
		if p.Rate > 0 { // weighted by the requests of each series
			r.MeanMs += 1000 * p.Mean * p.Rate
		}
	}
	for _, n := range nodes {
		for i := range n.Replicas {
			r := &n.Replicas[i]
			if r.ReqRate > 0 {
				r.MeanMs /= r.ReqRate
			}
			n.ReqRate += r.ReqRate
			n.ErrorRate += r.ErrorRate
		}
	}
	for _, p := range s.Points("blueprint.upstream.breaker.state", since) {
		up := attr(p.Attrs, "upstream")
		b := Breaker{Upstream: up, Replica: attr(p.Attrs, "replica"), State: breakerStates[p.Value]}
		r := replica(node(p.Service), p.Instance)
		r.Breakers = append(r.Breakers, b)
		e := edge(p.Service, up, "HTTP")
		e.Open = e.Open || b.State == "open"
	}
	for _, n := range nodes {
		for i := range n.Replicas {
			slices.SortFunc(n.Replicas[i].Breakers, func(a, b Breaker) int {
				return cmp.Or(cmp.Compare(a.Upstream, b.Upstream), cmp.Compare(a.Replica, b.Replica))
			})
		}
	}
	s.edgesFromTraces(edge)
	if broker, ok := nodes[brokerNode]; ok {
		for _, p := range s.Points("blueprint.consumer.pending", since) {
			broker.Pending += p.Value
		}
		for _, p := range s.Points("blueprint.consumer.redelivered", since) {
			broker.Redelivered += p.Value
		}
	}

	g := Graph{}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, *n)
	}
	for _, e := range edges {
		g.Edges = append(g.Edges, *e)
	}
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To), cmp.Compare(a.Label, b.Label))
	})
	layout(&g)
	return g
}

// edgesFromTraces adds an edge for every span whose parent ran in another
// service: HTTP for a server span, and for a consumer span the subject it
// came on, through NATS.
func (s *Store) edgesFromTraces(edge func(from, to, label string) *Edge) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.traces {
		byID := make(map[string]*Span, len(t.Spans))
		for i := range t.Spans {
			byID[t.Spans[i].SpanID] = &t.Spans[i]
		}
		for _, sp := range t.Spans {
			parent, ok := byID[sp.ParentID]
			if !ok || parent.Service == sp.Service {
				continue
			}
			switch sp.Kind {
			case "server":
				edge(parent.Service, sp.Service, "HTTP")
			case "consumer":
				subject := attr(sp.Attrs, "messaging.destination.name")
				edge(parent.Service, brokerNode, subject)
				edge(brokerNode, sp.Service, subject)
			}
		}
	}
}

// layout places nodes in columns by how many calls they are from a node
// nobody calls (the gateway first), and routes the edges: a straight line
// to the next column, an arc over the nodes to a column further on, and an
// arc under them back to an earlier one.
func layout(g *Graph) {
	callers := map[string][]string{}
	for _, e := range g.Edges {
		callers[e.To] = append(callers[e.To], e.From)
	}
	depth := map[string]int{}
	var depthOf func(name string, seen map[string]bool) int
	depthOf = func(name string, seen map[string]bool) int {
		if d, ok := depth[name]; ok {
			return d
		}
		d := 0
		seen[name] = true
		for _, c := range callers[name] {
			if !seen[c] {
				d = max(d, depthOf(c, seen)+1)
			}
		}
		delete(seen, name)
		depth[name] = d
		return d
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	columns := 0
	for _, n := range g.Nodes {
		columns = max(columns, depthOf(n.Name, map[string]bool{})+1)
	}
	// Room above the nodes for the highest arc, whose peak is half its
	// control point's rise, and its label.
	top := arcRise*columns/2 + 24
	rows := map[int]int{}
	at := map[string]*Node{}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		d := depth[n.Name]
		n.X, n.Y = marginLeft+d*columnWidth, top+rows[d]*rowHeight
		rows[d]++
		at[n.Name] = n
		g.Width, g.Height = max(g.Width, n.X+nodeWidth+marginLeft), max(g.Height, n.Y+nodeHeight+marginLeft)
	}
	for i := range g.Edges {
		e := &g.Edges[i]
		from, to := at[e.From], at[e.To]
		span := depth[e.To] - depth[e.From]
		switch {
		case span == 1 && from.Y == to.Y:
			x1, y, x2 := from.X+nodeWidth, from.Y+nodeHeight/2, to.X
			e.Path = fmt.Sprintf("M %d %d L %d %d", x1, y, x2, y)
			e.LX, e.LY = (x1+x2)/2, y-6
		case span > 0:
			x1, y1, x2, y2 := from.X+nodeWidth/2, from.Y, to.X+nodeWidth/2, to.Y
			cy := min(y1, y2) - arcRise*span
			e.Path = fmt.Sprintf("M %d %d Q %d %d %d %d", x1, y1, (x1+x2)/2, cy, x2, y2)
			e.LX, e.LY = (x1+x2)/2, (y1+2*cy+y2)/4-4
		default:
			x1, y1, x2, y2 := from.X+nodeWidth/2, from.Y+nodeHeight, to.X+nodeWidth/2, to.Y+nodeHeight
			cy := max(y1, y2) + arcRise*(1-span)
			e.Path = fmt.Sprintf("M %d %d Q %d %d %d %d", x1, y1, (x1+x2)/2, cy, x2, y2)
			e.LX, e.LY = (x1+x2)/2, (y1+2*cy+y2)/4+14
			g.Height = max(g.Height, e.LY+marginLeft)
		}
	}
}

// The architecture picture's measures: a node's box, the space between
// columns and rows, and how much higher an arc rises for each column it
// spans.
const (
	nodeWidth, nodeHeight  = 170, 90
	columnWidth, rowHeight = 270, 130
	marginLeft, arcRise    = 20, 28
)
