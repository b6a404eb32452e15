package bench

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A soak is a long run that watches what the system holds rather than how
// fast it answers: every SoakOptions.Every it samples, from an ops
// listener's /metrics, the resident memory, open files, Go heap and
// goroutines of the process behind it, and the sizes of the data directory
// and the log file. At the
// end it says which of memory, heap, goroutines and open files still grew
// after the first third of the run: a cache without a bound, a leak, a
// connection never closed. The data directory and the log are expected to
// grow with the orders written; they are reported per request instead.

// SoakOptions turns a run into a soak.
type SoakOptions struct {
	// Every is the time between samples.
	Every time.Duration
	// OpsURL is an ops listener of the system: its /metrics describes the
	// process behind it (all of the system, in one process).
	OpsURL string
	// DataDir and LogFile are measured when set.
	DataDir, LogFile string
}

// Sample is what a soak saw at one moment.
type Sample struct {
	// At is the time since the measured window began, in seconds.
	At        float64 `json:"atSeconds"`
	Requests  uint64  `json:"requests"`
	RSS       int64   `json:"rssBytes"`
	OpenFiles int64   `json:"openFiles"`
	Heap      int64   `json:"heapInuseBytes"`
	// HeapGoal is the size at which the next collection starts: the live
	// heap of the last one times (1 + GOGC/100). It moves with what the
	// heap keeps, not with the garbage made since the last collection.
	HeapGoal   int64 `json:"heapGoalBytes"`
	Goroutines int64 `json:"goroutines"`
	Data       int64 `json:"dataBytes"`
	Log        int64 `json:"logBytes"`
}

// Soak is a soak's samples and its verdict.
type Soak struct {
	Samples []Sample `json:"samples"`
	// Growing names what kept growing after the first third of the run.
	Growing []string `json:"growing,omitempty"`
}

// soaker samples in the background from start until stop.
type soaker struct {
	opts     SoakOptions
	http     *http.Client
	requests *atomic.Uint64

	began   time.Time
	mu      sync.Mutex
	samples []Sample
	done    chan struct{}
	stopped chan struct{}
}

func newSoaker(o SoakOptions, requests *atomic.Uint64) *soaker {
	return &soaker{opts: o, requests: requests, http: &http.Client{Timeout: 5 * time.Second},
		done: make(chan struct{}), stopped: make(chan struct{})}
}

func (s *soaker) start(ctx context.Context) {
	s.began = time.Now()
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(s.opts.Every)
		defer t.Stop()
		for {
			s.sample(ctx)
			select {
			case <-s.done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// stop takes a last sample and returns the soak.
func (s *soaker) stop(ctx context.Context) *Soak {
	close(s.done)
	<-s.stopped
	s.sample(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Soak{Samples: s.samples, Growing: growing(s.samples)}
}

func (s *soaker) sample(ctx context.Context) {
	x := Sample{At: time.Since(s.began).Seconds(), Requests: s.requests.Load()}
	if s.opts.OpsURL != "" {
		s.readMetrics(ctx, &x)
	}
	if s.opts.DataDir != "" {
		x.Data = treeBytes(s.opts.DataDir)
	}
	if s.opts.LogFile != "" {
		if fi, err := os.Stat(s.opts.LogFile); err == nil {
			x.Log = fi.Size()
		}
	}
	s.mu.Lock()
	s.samples = append(s.samples, x)
	s.mu.Unlock()
}

// readMetrics fills x from the ops listener's /metrics: the process
// collector's resident memory and open files, the Go collector's heap in
// use and goal, and goroutines. A sample it cannot read keeps zeros.
func (s *soaker) readMetrics(ctx context.Context, x *Sample) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.opts.OpsURL, "/")+"/metrics", nil)
	if err != nil {
		return
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			x.RSS = parseMetric(value)
		case "process_open_fds":
			x.OpenFiles = parseMetric(value)
		case "go_memstats_heap_inuse_bytes":
			x.Heap = parseMetric(value)
		case "go_memstats_next_gc_bytes":
			x.HeapGoal = parseMetric(value)
		case "go_goroutines":
			x.Goroutines = parseMetric(value)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
}

func parseMetric(v string) int64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0
	}
	return int64(f)
}

// treeBytes is the size of every file under dir.
func treeBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Growth a soak tolerates in the last third over the middle one: a
// collection that landed late, a burst of goroutines in flight.
var growthSlack = struct {
	share                        float64
	rss, heap, goroutines, files int64
}{share: 0.05, rss: 4 << 20, heap: 4 << 20, goroutines: 20, files: 5}

// growing names what still grew after the first third of the samples: the
// median of the last third above the middle third's by more than the slack.
// The first third is the system filling its caches and pools. Medians, not
// peaks: one sample caught in a burst of requests does not make a leak, and
// a leak moves every sample after it. The heap is judged by its goal; heap
// in use swings between collections.
func growing(samples []Sample) []string {
	if len(samples) < 6 {
		return nil
	}
	third := len(samples) / 3
	middle, last := samples[third:2*third], samples[2*third:]
	var out []string
	for _, c := range []struct {
		name  string
		of    func(Sample) int64
		slack int64
	}{
		{"resident memory", func(s Sample) int64 { return s.RSS }, growthSlack.rss},
		{"Go heap", func(s Sample) int64 { return s.HeapGoal }, growthSlack.heap},
		{"goroutines", func(s Sample) int64 { return s.Goroutines }, growthSlack.goroutines},
		{"open files", func(s Sample) int64 { return s.OpenFiles }, growthSlack.files},
	} {
		before, after := median(middle, c.of), median(last, c.of)
		if after > before+c.slack && float64(after) > float64(before)*(1+growthSlack.share) {
			out = append(out, c.name)
		}
	}
	return out
}

func median(samples []Sample, of func(Sample) int64) int64 {
	values := make([]int64, len(samples))
	for i, s := range samples {
		values[i] = of(s)
	}
	slices.Sort(values)
	return values[len(values)/2]
}
