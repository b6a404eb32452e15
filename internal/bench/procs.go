package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// cpuMeter counts the CPU time local processes spend during a run: those
// whose /proc/<pid>/comm is one of names, except this process (the load
// generator), and those in pids. A process that starts during the run is
// not counted; one that ends is not counted either.
type cpuMeter struct {
	names  []string
	pids   []int
	before map[int]proc
}

type proc struct {
	name string
	ns   uint64
}

func newCPUMeter(names []string) *cpuMeter { return &cpuMeter{names: names} }

func (c *cpuMeter) start() { c.before = c.read() }

// perRequest is the CPU spent since start, per request, in microseconds;
// nil when no process was counted (the system is not local, or not Linux).
func (c *cpuMeter) perRequest(requests uint64) *CPU {
	if len(c.before) == 0 || requests == 0 {
		return nil
	}
	after := c.read()
	cpu := &CPU{ByProcess: map[string]float64{}}
	for pid, b := range c.before {
		a, ok := after[pid]
		if !ok {
			continue
		}
		us := float64(a.ns-b.ns) / 1e3 / float64(requests)
		cpu.ByProcess[a.name] += us
		cpu.Total += us
	}
	return cpu
}

// read returns the CPU time of every counted process.
func (c *cpuMeter) read() map[int]proc {
	if len(c.names) == 0 && len(c.pids) == 0 {
		return nil
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	out := map[int]proc{}
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil || pid == self {
			continue
		}
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil || !slices.Contains(c.names, strings.TrimSpace(string(comm))) && !slices.Contains(c.pids, pid) {
			continue
		}
		if ns, ok := processCPU(dir); ok {
			out[pid] = proc{name: role(dir, strings.TrimSpace(string(comm))), ns: ns}
		}
	}
	return out
}

// role names a process for the report: its command, and for Blueprint's
// processes what they run (`blueprint orders`, `blueprint nats`), so that
// a run of one service per process tells which service the CPU went to.
// All in one, it stays `blueprint`.
func role(dir, comm string) string {
	raw, err := os.ReadFile(dir + "/cmdline")
	if comm != "blueprint" || err != nil {
		return comm
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	for i, a := range args {
		flag := strings.TrimLeft(a, "-") // -target and --target alike
		switch {
		case i == 1 && a == "nats":
			return comm + " nats"
		case flag != a && strings.HasPrefix(flag, "target="):
			return comm + " " + strings.TrimPrefix(flag, "target=")
		case flag != a && flag == "target" && i+1 < len(args):
			return comm + " " + args[i+1]
		}
	}
	return comm
}

// processCPU is the CPU time the process's threads have run, in
// nanoseconds: the sum of the first field of /proc/<pid>/task/*/schedstat,
// which the scheduler keeps in nanoseconds (the utime and stime of
// /proc/<pid>/stat count 10 ms ticks, too coarse for a short run of a
// cheap server). Go's threads live as long as the process.
func processCPU(dir string) (uint64, bool) {
	tasks, _ := filepath.Glob(dir + "/task/[0-9]*/schedstat")
	var total uint64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // the thread has just ended
		}
		ns, err := strconv.ParseUint(strings.Fields(string(raw) + " x")[0], 10, 64)
		if err != nil {
			return 0, false
		}
		total += ns
	}
	return total, len(tasks) > 0
}

func machine() Machine {
	return Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgBefore: loadAvg()}
}

// loadAvg is the 1, 5 and 15 minute load averages, zero where unknown: the
// figures a reader needs to judge a run on a shared machine.
func loadAvg() [3]float64 {
	var l [3]float64
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	for i, f := range strings.Fields(string(raw)) {
		if i == len(l) {
			break
		}
		l[i], _ = strconv.ParseFloat(f, 64)
	}
	return l
}

// distribution is the percentiles of a set of durations in milliseconds.
func distribution(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(q float64) float64 { return ms(d[int(q*float64(len(d)-1))]) }
	return Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999), Max: ms(d[len(d)-1])}
}
