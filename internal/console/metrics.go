package console

import (
	"slices"
	"strings"
	"time"
)

// Point is the latest state of one metric series: a metric of one service
// replica with one set of attributes.
type Point struct {
	Service, Instance, Name string
	Attrs                   []Attr
	// Value is a gauge's value, a sum's total, or a histogram's count.
	Value float64
	// Sum is a histogram's sum of values.
	Sum float64
	At  time.Time
	// Rate is how fast Value grew per second over the last export
	// interval, and Mean the histogram's mean value over it (its sum's
	// growth over its count's); both 0 until a series has two points.
	Rate, Mean float64
}

// sample is one data point as it arrives: a cumulative total, or with
// delta true the increase since Start.
type sample struct {
	Point
	Start time.Time
	Delta bool
}

// metricStore keeps the latest point of each series, at most max of them.
type metricStore struct {
	max     int
	series  map[string]*Point
	dropped int
}

func seriesKey(p Point) string {
	var b strings.Builder
	b.WriteString(p.Service + "\x00" + p.Instance + "\x00" + p.Name)
	for _, a := range p.Attrs {
		b.WriteString("\x00" + a.Key + "=" + a.Value)
	}
	return b.String()
}

// addSamples records metric data points; their attributes must be sorted
// by key.
func (s *Store) addSamples(samples []sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := &s.metrics
	for _, in := range samples {
		key := seriesKey(in.Point)
		old, ok := m.series[key]
		if !ok {
			if len(m.series) >= m.max {
				m.dropped++
				continue
			}
			old = &Point{}
			m.series[key] = old
		}
		p := in.Point
		switch {
		case in.Delta:
			// A delta covers Start to At: its own interval.
			if secs := in.At.Sub(in.Start).Seconds(); secs > 0 {
				p.Rate = p.Value / secs
				if p.Value > 0 {
					p.Mean = p.Sum / p.Value
				}
			}
			p.Value += old.Value
			p.Sum += old.Sum
		case ok && in.At.After(old.At) && p.Value >= old.Value:
			// A cumulative total that fell has restarted: no rate yet.
			secs := in.At.Sub(old.At).Seconds()
			p.Rate = (p.Value - old.Value) / secs
			if n := p.Value - old.Value; n > 0 {
				p.Mean = (p.Sum - old.Sum) / n
			}
		}
		*old = p
	}
}

// Points returns the latest point of every series of the metric name
// updated since the given time, ordered by service, replica and attributes.
func (s *Store) Points(name string, since time.Time) []Point {
	s.mu.Lock()
	var keys []string
	for k, sr := range s.metrics.series {
		if sr.Name == name && !sr.At.Before(since) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]Point, len(keys))
	for i, k := range keys {
		out[i] = *s.metrics.series[k]
	}
	s.mu.Unlock()
	return out
}
