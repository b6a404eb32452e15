package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteText prints the report for a reader.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "Blueprint bench: scenario %s, %s\n", r.Scenario, r.Model)
	fmt.Fprintf(w, "machine: %d CPUs, %s, load average %.2f before, %.2f after\n\n",
		r.Machine.CPUs, r.Machine.GoVersion, r.Machine.LoadAvgBefore[0], r.Machine.LoadAvgAfter[0])

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\t2xx/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\tCPU µs/req\t")
	for _, run := range r.Runs {
		cpu := "–"
		if run.CPU != nil {
			cpu = fmt.Sprintf("%.0f", run.CPU.Total)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n", run.Target, run.Throughput,
			run.Latency.P50, run.Latency.P90, run.Latency.P99, run.Latency.P999, run.Latency.Max, cpu)
	}
	_ = tw.Flush()

	for _, run := range r.Runs {
		fmt.Fprintf(w, "\n%s: %d requests in %.1f s; answers %s\n", run.Target, run.Requests, run.Seconds, counts(run.Statuses))
		for _, text := range slices.Sorted(maps.Keys(run.Errors)) {
			fmt.Fprintf(w, "  %d × %s\n", run.Errors[text], text)
		}
		if run.Statuses["429"] > 0 {
			fmt.Fprintln(w, "  429s are the gateway's rate limits: run the system with RATE_LIMITS_ENABLED=false to load it from one address")
		}
		if run.CPU != nil && len(run.CPU.ByProcess) > 1 {
			var parts []string
			for _, name := range slices.Sorted(maps.Keys(run.CPU.ByProcess)) {
				parts = append(parts, fmt.Sprintf("%s %.0f", name, run.CPU.ByProcess[name]))
			}
			fmt.Fprintf(w, "  CPU µs per request by process: %s\n", strings.Join(parts, ", "))
		}
		if n := run.Notifications; n != nil {
			fmt.Fprintf(w, "  notified %d of %d accepted orders (%d missing) after %.1f s of waiting;\n", n.Notified, n.Orders, n.Missing, n.Waited)
			fmt.Fprintf(w, "  order → notification ms: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
				n.Latency.P50, n.Latency.P90, n.Latency.P99, n.Latency.P999, n.Latency.Max)
		}
	}
	if r.ProfileOut != "" {
		fmt.Fprintf(w, "\nCPU profile of the measured window: %s (go tool pprof -top %s)\n", r.ProfileOut, r.ProfileOut)
	}
	if r.Soak != nil {
		r.Soak.writeText(w)
	}
	if len(r.Compared) > 0 {
		fmt.Fprintln(w)
	}
	for _, c := range r.Compared {
		line := fmt.Sprintf("blueprint vs %s: %.2f× its 2xx/s", c.Against, c.Throughput)
		if c.CPU > 0 {
			line += fmt.Sprintf(", %.2f× its CPU per request", c.CPU)
		}
		fmt.Fprintln(w, line)
	}
}

// counts is "200 ×12,000, 503 ×3", by status.
func counts(statuses map[string]int) string {
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(statuses)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", s, statuses[s]))
	}
	return strings.Join(parts, ", ")
}

// writeText prints a soak's samples, what the data directory and the log
// grew by per request, and the verdict.
func (s *Soak) writeText(w io.Writer) {
	fmt.Fprintln(w, "\nsoak: the process behind the ops listener, the data directory and the log")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "s\trequests\tRSS MB\theap MB\theap goal MB\tgoroutines\topen files\tdata MB\tlog MB\t")
	for _, x := range s.Samples {
		fmt.Fprintf(tw, "%.0f\t%d\t%.1f\t%.1f\t%.1f\t%d\t%d\t%.1f\t%.1f\t\n", x.At, x.Requests,
			mb(x.RSS), mb(x.Heap), mb(x.HeapGoal), x.Goroutines, x.OpenFiles, mb(x.Data), mb(x.Log))
	}
	_ = tw.Flush()
	if n := len(s.Samples); n > 1 {
		first, last := s.Samples[0], s.Samples[n-1]
		if reqs := float64(last.Requests - first.Requests); reqs > 0 {
			fmt.Fprintf(w, "per request: data directory %+.0f bytes, log %+.0f bytes\n",
				float64(last.Data-first.Data)/reqs, float64(last.Log-first.Log)/reqs)
		}
	}
	if len(s.Growing) > 0 {
		fmt.Fprintf(w, "STILL GROWING after the first third: %s\n", strings.Join(s.Growing, ", "))
	} else if len(s.Samples) >= 6 {
		fmt.Fprintln(w, "flat: memory, heap, goroutines and open files stopped growing after the first third")
	} else {
		fmt.Fprintln(w, "too few samples to judge growth (6 at least)")
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
