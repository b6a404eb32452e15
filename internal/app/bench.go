package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/ds-blueprint/blueprint/internal/bench"
)

// benchCommand loads a running system through its gateway and reports what
// it measured (package bench). `bench baseline` serves the bare targets a
// --compare run measures beside the system, in a process of their own so
// that their CPU is counted apart from the load generator's.
func benchCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "baseline" {
		return bench.ServeBaseline(ctx, os.Stdin, stdout)
	}
	o := bench.Options{Progress: stderr, Terminal: isTerminal(stderr)}
	var asJSON bool
	var processes string
	f := newFlags("bench", getenv)
	f.String(&o.Gateway, "gateway", "BLUEPRINT_GATEWAY_URL", "http://127.0.0.1:3001", "base URL of the gateway")
	f.String(&o.Scenario, "scenario", "", "me", "me (GET /users/me), orders (POST /orders, then every notification awaited), mixed (7 profile reads, 2 orders, 1 order list in 10) or login")
	f.Int(&o.Rate, "rate", "", 0, "requests per second, an open-model run; 0 means a closed-model run on --connections")
	f.Int(&o.Connections, "connections", "", 50, "connections sending back to back (closed model)")
	f.Duration(&o.Duration, "duration", "", 20*time.Second, "how long to measure")
	f.Duration(&o.Warmup, "warmup", "", 5*time.Second, "how long to load first without measuring")
	f.Int(&o.Users, "users", "", 20, "accounts the load is spread over (registered first)")
	f.Duration(&o.NotifyWait, "notify-wait", "", time.Minute, "how long an orders run waits for its notifications")
	f.Duration(&o.Timeout, "timeout", "", 10*time.Second, "deadline of one request")
	f.Bool(&o.Compare, "compare", "", false, "also measure a bare Go server and a bare reverse-proxy hop with the same load, and report the ratios")
	f.String(&processes, "processes", "", "blueprint,nats-server,postgres", "local processes (by name) whose CPU is counted when the gateway is on this machine")
	f.String(&o.Profile, "profile", "", "", "ops listener URL of a service started with PPROF_ENABLED=true (e.g. http://127.0.0.1:9101): write a CPU profile of the measured window")
	f.String(&o.ProfileOut, "profile-out", "", "cpu.prof", "where --profile writes the profile")
	var soak bench.SoakOptions
	var soakFor time.Duration
	f.Duration(&soakFor, "soak", "", 0, "soak for this long instead of --duration: sample memory, heap, goroutines, open files, the data directory and the log, and fail if any of the first four keeps growing")
	f.Duration(&soak.Every, "soak-every", "", 0, "time between a soak's samples (0: a twentieth of the soak, at least 1s)")
	f.String(&soak.OpsURL, "ops", "", "http://127.0.0.1:9101", "an ops listener of the system: a soak samples the memory, open files, heap and goroutines of the process behind it")
	f.String(&soak.DataDir, "data-dir", "", "./.blueprint", "the system's data directory, whose size a soak samples")
	f.String(&soak.LogFile, "log-file", "", "", "a file the system's log goes to, whose size a soak samples")
	f.Bool(&asJSON, "json", "", false, "print the report as JSON")
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint bench [flags]\n       blueprint bench baseline\n\n"+
				"Loads a running system (start it with RATE_LIMITS_ENABLED=false) and reports\n"+
				"throughput, latency, answers by status and CPU per request.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	if loopbackURL(o.Gateway) {
		o.Processes = splitList(processes)
	}
	if soakFor > 0 {
		o.Duration = soakFor
		if soak.Every <= 0 {
			soak.Every = max(time.Second, soakFor/20)
		}
		o.Soak = &soak
	}
	if o.Compare {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		o.Baseline = []string{self, "bench", "baseline"}
	}
	report, err := bench.Run(ctx, o)
	if report == nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(report); werr != nil {
			return werr
		}
	} else {
		report.WriteText(stdout)
	}
	return err
}

// loopbackURL reports whether u names this machine, where the system's
// processes can be found.
func loopbackURL(u string) bool {
	parsed, err := url.Parse(u)
	if err != nil {
		return false
	}
	host := parsed.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
