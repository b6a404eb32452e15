//go:build unix

package chaos_test

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
)

// crashChild names the environment variable that makes TestCrash, re-run in
// a child process, hit the crash point instead of watching.
const crashChild = "BLUEPRINT_TEST_CHAOS_CRASH_CHILD"

// TestCrash re-runs this test in a child process that hits a point with a
// crash rule, and checks the child died of SIGKILL at the point: after the
// warn line naming the route, before the code past the point ran.
func TestCrash(t *testing.T) {
	if os.Getenv(crashChild) == "1" {
		in, err := chaos.New(slog.New(slog.NewJSONHandler(os.Stdout, nil)), noop.NewMeterProvider(), pointCommit)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Set(t.Context(), chaos.Rule{Route: pointCommit, ErrorRate: 1, Crash: true}); err != nil {
			t.Fatal(err)
		}
		err = in.Hit(t.Context(), pointCommit)
		os.Stdout.WriteString("past the crash point\n")
		t.Fatalf("Hit returned %v; want the process dead", err)
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChild+"=1")
	out, err := cmd.CombinedOutput()
	exit, ok := errors.AsType[*exec.ExitError](err)
	if !ok {
		t.Fatalf("child = %v, want it killed; output:\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL; output:\n%s", exit, out)
	}
	if !strings.Contains(string(out), `"msg":"chaos crash: killing the process","route":"`+pointCommit+`"`) {
		t.Errorf("child output has no crash line naming %s:\n%s", pointCommit, out)
	}
	if strings.Contains(string(out), "past the crash point") {
		t.Errorf("code past the crash point ran:\n%s", out)
	}
}
