package bench

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// tally collects one attack's results: vegeta's metrics for throughput and
// latency, answers by status, failures by text, and counters the progress
// line reads while the attack runs.
type tally struct {
	metrics  vegeta.Metrics
	statuses map[string]int
	errors   map[string]int
	// read by the progress line from another goroutine
	sent, failed atomic.Uint64
}

func newTally() *tally {
	return &tally{statuses: map[string]int{}, errors: map[string]int{}}
}

func (t *tally) add(r *vegeta.Result) {
	t.metrics.Add(r)
	t.sent.Add(1)
	status := strconv.Itoa(int(r.Code))
	if r.Code == 0 {
		status = "no answer"
	}
	t.statuses[status]++
	if r.Code < 200 || r.Code > 299 {
		t.failed.Add(1)
		t.errors[r.Error]++
	}
}

func (t *tally) close() { t.metrics.Close() }

// summary is the tally as a Result. Throughput counts 2xx answers only, over
// the attack's whole length including the wait for its last answers.
func (t *tally) summary(target string) Result {
	m := &t.metrics
	ok := 0
	for code, n := range t.statuses {
		if len(code) == 3 && code[0] == '2' {
			ok += n
		}
	}
	elapsed := m.Duration + m.Wait
	run := Result{
		Target:   target,
		Seconds:  elapsed.Seconds(),
		Requests: m.Requests,
		Statuses: t.statuses,
		Latency: Latency{
			P50:  ms(m.Latencies.P50),
			P90:  ms(m.Latencies.P90),
			P99:  ms(m.Latencies.P99),
			P999: ms(m.Latencies.Quantile(0.999)),
			Max:  ms(m.Latencies.Max),
		},
	}
	if elapsed > 0 {
		run.Throughput = float64(ok) / elapsed.Seconds()
	}
	if len(t.errors) > 0 {
		run.Errors = t.errors
	}
	return run
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startProgress prints a line a second (a line every five when not on a
// terminal) until the returned stop is called.
func (o *Options) startProgress(name string, length time.Duration, t *tally) (stop func()) {
	if o.Progress == nil {
		return func() {}
	}
	finished, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		start, last, lastSent := time.Now(), time.Now(), uint64(0)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-finished:
				if o.Terminal {
					fmt.Fprintf(o.Progress, "\r%90s\r", "")
				}
				return
			case now := <-tick.C:
				sent := t.sent.Load()
				rate := float64(sent-lastSent) / now.Sub(last).Seconds()
				last, lastSent = now, sent
				line := fmt.Sprintf("%-20s %4.0fs of %-6s %9d requests %8.0f req/s %7d not 2xx",
					name, now.Sub(start).Seconds(), length, sent, rate, t.failed.Load())
				switch {
				case o.Terminal:
					fmt.Fprintf(o.Progress, "\r%s", line)
				case n%5 == 0:
					fmt.Fprintln(o.Progress, line)
				}
			}
		}
	}()
	return func() { close(finished); <-stopped }
}
