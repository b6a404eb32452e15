// Package bench loads a running Blueprint system through its public API and
// reports what it measured: throughput, latency percentiles, answers by
// status, the CPU the system's local processes spent per request, and for
// orders how long each took to be notified. `blueprint bench` is its
// command; docs/benchmarks.md shows how the published figures were made
// with it.
//
// The load comes from vegeta's attacker used as a library. A run is either
// open (a constant rate of arrivals, whatever the latency: --rate) or
// closed (a fixed number of connections, each sending its next request when
// the last is answered: --connections); a warm-up run of the same shape
// comes first and is not counted. With Compare, the same load is also sent
// to a bare Go server and to a bare reverse-proxy hop in front of it, in a
// child process, so a report says what Blueprint costs next to the least
// any Go service could cost on the same machine in the same minute.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Options is one bench run.
type Options struct {
	// Gateway is the base URL of the system's gateway.
	Gateway string
	// Scenario is me, orders, mixed or login.
	Scenario string
	// Rate > 0 is an open-model run at that many requests per second;
	// otherwise Connections closed-loop connections send back to back.
	Rate        int
	Connections int
	Duration    time.Duration
	Warmup      time.Duration
	// Users is how many accounts the load is spread over.
	Users int
	// NotifyWait bounds how long an orders run waits for its notifications.
	NotifyWait time.Duration
	// Timeout bounds one request.
	Timeout time.Duration
	// Compare also measures a bare server and a bare proxy hop; Baseline is
	// the command that serves them (this program's `bench baseline`).
	Compare  bool
	Baseline []string
	// Processes names the local processes whose CPU is counted (by their
	// /proc comm); empty counts none.
	Processes []string
	// Profile, when set, is an ops listener's base URL (PPROF_ENABLED on):
	// a CPU profile of the measured window is fetched from it and written
	// to ProfileOut.
	Profile, ProfileOut string
	// Progress receives a live line per second; nil prints nothing.
	Progress io.Writer
	// Terminal redraws the progress line in place instead of a line every
	// five seconds.
	Terminal bool
	// Soak, when set, samples the system's resources during the measured
	// window and reports whether any kept growing.
	Soak *SoakOptions
}

// Scenarios are the loads Run knows.
var Scenarios = []string{"me", "orders", "mixed", "login"}

// Report is what a bench run measured.
type Report struct {
	Scenario string    `json:"scenario"`
	Model    string    `json:"model"`
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Runs     []Result  `json:"runs"`
	// ProfileOut is where the CPU profile of the measured window went.
	ProfileOut string `json:"profile,omitempty"`
	// Compared holds Blueprint's figures as multiples of the bare runs';
	// empty without Compare.
	Compared []Ratio `json:"compared,omitempty"`
	// Soak is what a soak sampled; nil without Options.Soak.
	Soak *Soak `json:"soak,omitempty"`
}

// Machine is where the run happened.
type Machine struct {
	CPUs          int        `json:"cpus"`
	GoVersion     string     `json:"goVersion"`
	LoadAvgBefore [3]float64 `json:"loadAvgBefore"`
	LoadAvgAfter  [3]float64 `json:"loadAvgAfter"`
}

// Result is one measured load against one target.
type Result struct {
	Target   string  `json:"target"`
	Seconds  float64 `json:"seconds"`
	Requests uint64  `json:"requests"`
	// Throughput counts only successful (2xx) answers per second.
	Throughput float64        `json:"throughput"`
	Latency    Latency        `json:"latencyMs"`
	Statuses   map[string]int `json:"statuses"`
	// Errors are the answers that were not 2xx and the transport failures,
	// by their text.
	Errors map[string]int `json:"errors,omitempty"`
	// CPU is the CPU time the counted processes spent per request, in
	// microseconds, in all and by process name; absent when none counted.
	CPU           *CPU           `json:"cpuPerRequestUs,omitempty"`
	Notifications *Notifications `json:"notifications,omitempty"`
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
}

// CPU is CPU time per request.
type CPU struct {
	Total     float64            `json:"total"`
	ByProcess map[string]float64 `json:"byProcess"`
}

// Ratio compares Blueprint with a bare run of the same load.
type Ratio struct {
	Against string `json:"against"`
	// Throughput is Blueprint's successful req/s over the bare run's.
	Throughput float64 `json:"throughput"`
	// CPU is Blueprint's CPU per request over the bare run's; 0 when either
	// was not measured.
	CPU float64 `json:"cpu"`
}

// ErrNotNotified is returned, with the report, when an orders run saw an
// accepted order that was not notified within NotifyWait.
var ErrNotNotified = errors.New("accepted orders were not notified")

// ErrStillGrowing is returned, with the report, when a soak saw memory,
// goroutines or open files still growing after its first third.
var ErrStillGrowing = errors.New("still growing after the first third of the soak")

// Run prepares accounts, warms up, measures and, for orders, waits for the
// notifications. The report is returned even with ErrNotNotified.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: o.Timeout}
	sys := &system{base: strings.TrimSuffix(o.Gateway, "/"), http: client}
	accounts, err := sys.accounts(ctx, o.Users, o.Scenario == "login")
	if err != nil {
		return nil, err
	}
	r := &Report{Scenario: o.Scenario, Model: o.model(), Started: time.Now().UTC(), Machine: machine()}

	var bare []Result
	if o.Compare {
		if bare, err = o.measureBaseline(ctx, accounts); err != nil {
			return nil, err
		}
	}

	load := newLoad(sys.base, o.Scenario, accounts)
	var measured atomic.Uint64 // requests sent in the measured window, for the soak's samples
	observe := func(res *vegeta.Result, inWindow bool) {
		if inWindow {
			measured.Add(1)
		}
		load.observe(res, inWindow)
	}
	var soak *soaker
	if o.Soak != nil {
		soak = newSoaker(*o.Soak, &measured)
	}
	profiled := func() error { return nil }
	run, err := o.measure(ctx, "blueprint", load.targeter(), observe, newCPUMeter(o.Processes), func() {
		if o.Profile != "" {
			profiled = o.startProfile(ctx, client)
		}
		if soak != nil {
			soak.start(ctx)
		}
	})
	if soak != nil && !soak.began.IsZero() { // started: stop its sampling, even after a failed run
		r.Soak = soak.stop(ctx)
	}
	if err != nil {
		return nil, err
	}
	if err := profiled(); err != nil {
		return nil, err
	}
	if o.Profile != "" {
		r.ProfileOut = o.ProfileOut
	}
	if load.placesOrders() {
		if run.Notifications, err = sys.awaitNotifications(ctx, accounts, load.measured, o.NotifyWait); err != nil {
			return nil, err
		}
	}
	r.Runs = append(bare, run)
	for _, b := range bare {
		r.Compared = append(r.Compared, compare(run, b))
	}
	r.Machine.LoadAvgAfter = loadAvg()
	if run.Notifications != nil && run.Notifications.Missing > 0 {
		return r, fmt.Errorf("%w: %d of %d after %s", ErrNotNotified,
			run.Notifications.Missing, run.Notifications.Orders, o.NotifyWait)
	}
	if r.Soak != nil && len(r.Soak.Growing) > 0 {
		return r, fmt.Errorf("%w: %s", ErrStillGrowing, strings.Join(r.Soak.Growing, ", "))
	}
	return r, nil
}

func (o *Options) check() error {
	switch {
	case !strings.HasPrefix(o.Gateway, "http://") && !strings.HasPrefix(o.Gateway, "https://"):
		return fmt.Errorf("gateway %q is not an http(s) URL", o.Gateway)
	case !slices.Contains(Scenarios, o.Scenario):
		return fmt.Errorf("scenario %q is not one of %s", o.Scenario, strings.Join(Scenarios, ", "))
	case o.Rate == 0 && o.Connections < 1:
		return errors.New("give a rate (open model) or at least one connection (closed model)")
	case o.Duration <= 0:
		return errors.New("duration must be positive")
	case o.Users < 1:
		return errors.New("users must be at least 1")
	case o.Soak != nil && o.Soak.Every <= 0:
		return errors.New("a soak needs a time between samples")
	}
	return nil
}

func (o *Options) model() string {
	if o.Rate > 0 {
		return fmt.Sprintf("open: %d req/s for %s", o.Rate, o.Duration)
	}
	return fmt.Sprintf("closed: %d connections for %s", o.Connections, o.Duration)
}

// observer sees every result of a load; measured is false in the warm-up.
type observer func(res *vegeta.Result, measured bool)

// measure warms up, then attacks for the duration and summarises;
// started is called when the measured window begins.
func (o *Options) measure(ctx context.Context, name string, tr vegeta.Targeter, observe observer, cpu *cpuMeter, started func()) (Result, error) {
	if o.Warmup > 0 {
		if _, err := o.attack(ctx, name+" warm-up", tr, o.Warmup, func(r *vegeta.Result) { observe(r, false) }); err != nil {
			return Result{}, err
		}
	}
	started()
	cpu.start()
	t, err := o.attack(ctx, name, tr, o.Duration, func(r *vegeta.Result) { observe(r, true) })
	if err != nil {
		return Result{}, err
	}
	run := t.summary(name)
	run.CPU = cpu.perRequest(t.metrics.Requests)
	return run, nil
}

// attack sends one load, giving every result to seen and to the tally.
func (o *Options) attack(ctx context.Context, name string, tr vegeta.Targeter, d time.Duration, seen func(*vegeta.Result)) (*tally, error) {
	opts := []func(*vegeta.Attacker){
		vegeta.Timeout(o.Timeout), vegeta.KeepAlive(true), vegeta.Redirects(vegeta.NoFollow),
		vegeta.MaxBody(1 << 16),
	}
	pacer := vegeta.Pacer(vegeta.ConstantPacer{Freq: o.Rate, Per: time.Second})
	if o.Rate > 0 {
		// Open model: enough connections for the rate, and more workers as
		// answers fall behind, so arrivals keep their schedule.
		opts = append(opts, vegeta.Connections(10000), vegeta.MaxConnections(10000))
	} else {
		// Closed model: exactly Connections workers, each waiting for its
		// answer; a zero pacer sends as fast as they come back.
		n := uint64(o.Connections)
		opts = append(opts, vegeta.Workers(n), vegeta.MaxWorkers(n),
			vegeta.Connections(o.Connections), vegeta.MaxConnections(o.Connections))
		pacer = vegeta.ConstantPacer{}
	}
	attacker := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { attacker.Stop() })
	defer stop()

	t := newTally()
	stopProgress := o.startProgress(name, d, t)
	for res := range attacker.Attack(tr, pacer, d, name) {
		seen(res)
		t.add(res)
	}
	stopProgress()
	t.close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

// compare is Blueprint's run as a multiple of a bare one.
func compare(bp, bare Result) Ratio {
	r := Ratio{Against: bare.Target}
	if bare.Throughput > 0 {
		r.Throughput = bp.Throughput / bare.Throughput
	}
	if bp.CPU != nil && bare.CPU != nil && bare.CPU.Total > 0 {
		r.CPU = bp.CPU.Total / bare.CPU.Total
	}
	return r
}
