package console

// interner keeps one copy of the strings telemetry repeats: service and
// span names, attribute keys, most attribute values. Each export is decoded
// into fresh strings, so without it every kept span holds its own copy of
// "http.request.method" and "GET"; with it the spans of a thousand traces
// share them. It forgets everything when it reaches max entries, so values
// that never repeat (ids, timestamps) cannot make it grow.
type interner struct {
	max  int
	seen map[string]string
}

func newInterner(max int) *interner {
	return &interner{max: max, seen: make(map[string]string, max)}
}

func (in *interner) str(s string) string {
	if c, ok := in.seen[s]; ok {
		return c
	}
	if len(in.seen) >= in.max {
		clear(in.seen)
	}
	in.seen[s] = s
	return s
}

// attrs interns the keys and values of attrs in place.
func (in *interner) attrs(attrs []Attr) {
	for i := range attrs {
		attrs[i] = Attr{Key: in.str(attrs[i].Key), Value: in.str(attrs[i].Value)}
	}
}

// span interns what a span shares with others.
func (in *interner) span(sp *Span) {
	sp.Service, sp.Instance, sp.Name = in.str(sp.Service), in.str(sp.Instance), in.str(sp.Name)
	sp.StatusMessage = in.str(sp.StatusMessage)
	in.attrs(sp.Attrs)
	for i := range sp.Events {
		sp.Events[i].Name = in.str(sp.Events[i].Name)
		in.attrs(sp.Events[i].Attrs)
	}
}

// log interns what a log record shares with others.
func (in *interner) log(r *LogRecord) {
	r.Service, r.Severity, r.Body = in.str(r.Service), in.str(r.Severity), in.str(r.Body)
	in.attrs(r.Attrs)
}
