package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/bench"
)

// TestBench runs `blueprint bench` as a user does, against the built binary
// on its embedded defaults with the rate limits off: an orders run must see
// every accepted order notified, count the system's CPU and bring back a
// CPU profile of its window; an open-model run must send at its rate;
// --compare must measure the bare targets too; a soak must sample the
// process, its Go runtime and its data directory.
func TestBench(t *testing.T) {
	bin := buildBinary(t)
	dataDir := t.TempDir()
	_, ready := startBinary(t, bin, dataDir, "--rate-limits=false", "--pprof")
	gateway := ready["gateway"].(string)
	profile := filepath.Join(t.TempDir(), "cpu.prof")

	run := func(args ...string) bench.Report {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"bench", "--gateway", gateway, "--json", "--users", "3"}, args...)...).Output()
		if err != nil {
			t.Fatalf("bench %v: %v\n%s", args, err, out)
		}
		var r bench.Report
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("bench %v printed %s: %v", args, out, err)
		}
		return r
	}

	orders := run("--scenario", "orders", "--connections", "4", "--duration", "2s", "--warmup", "500ms",
		"--profile", ready["gateway_ops"].(string), "--profile-out", profile)
	if len(orders.Runs) != 1 {
		t.Fatalf("runs = %+v, want one", orders.Runs)
	}
	o := orders.Runs[0]
	accepted := o.Statuses["201"]
	if accepted == 0 || uint64(accepted) != o.Requests {
		t.Errorf("statuses = %v of %d requests, want every one 201", o.Statuses, o.Requests)
	}
	if n := o.Notifications; n == nil || n.Orders != accepted || n.Notified != accepted || n.Missing != 0 || n.Latency.Max <= 0 {
		t.Errorf("notifications = %+v, want all %d accepted orders notified with their latency", n, accepted)
	}
	if o.CPU == nil || o.CPU.ByProcess["blueprint"] <= 0 {
		t.Errorf("CPU = %+v, want the blueprint process counted", o.CPU)
	}
	// A pprof profile is gzipped protobuf.
	if b, err := os.ReadFile(profile); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b || orders.ProfileOut != profile {
		t.Errorf("profile %s: %d bytes, %v, reported as %q; want a gzipped pprof profile", profile, len(b), err, orders.ProfileOut)
	}

	me := run("--scenario", "me", "--rate", "100", "--duration", "2s", "--warmup", "0s", "--compare")
	if len(me.Runs) != 3 || len(me.Compared) != 2 {
		t.Fatalf("runs = %+v, compared = %+v; want two bare runs and blueprint, and two ratios", me.Runs, me.Compared)
	}
	for _, r := range me.Runs {
		if r.Requests < 180 || r.Requests > 220 || r.Statuses["200"] != int(r.Requests) {
			t.Errorf("%s: %d requests, statuses %v; want about 200 at 100/s for 2 s, all 200", r.Target, r.Requests, r.Statuses)
		}
		if r.CPU == nil || r.CPU.Total <= 0 {
			t.Errorf("%s: CPU = %+v, want it counted", r.Target, r.CPU)
		}
	}
	for _, c := range me.Compared {
		if c.Throughput <= 0 || c.CPU <= 0 {
			t.Errorf("compared = %+v, want both ratios", c)
		}
	}

	// Whether a six-second soak is still growing is for TestGrowing to
	// judge: here it may exit with that verdict, but must have sampled.
	out, err := exec.Command(bin, "bench", "--gateway", gateway, "--json", "--users", "3", "--scenario", "me",
		"--connections", "2", "--warmup", "0s", "--soak", "6s", "--soak-every", "1s",
		"--ops", ready["gateway_ops"].(string), "--data-dir", dataDir).Output()
	var soaked bench.Report
	if jerr := json.Unmarshal(out, &soaked); jerr != nil || soaked.Soak == nil {
		t.Fatalf("bench --soak: %v, printed %s", err, out)
	}
	if err != nil && len(soaked.Soak.Growing) == 0 {
		t.Fatalf("bench --soak failed with nothing growing: %v", err)
	}
	samples := soaked.Soak.Samples
	if len(samples) < 6 || samples[len(samples)-1].Requests == 0 {
		t.Fatalf("soak samples = %+v, want at least 6, the last after some requests", samples)
	}
	for _, x := range samples {
		if x.RSS <= 0 || x.Heap <= 0 || x.HeapGoal <= 0 || x.Goroutines <= 0 || x.OpenFiles <= 0 || x.Data <= 0 {
			t.Errorf("soak sample %+v: want resident memory, heap, goroutines, open files and data all measured", x)
		}
	}
}
