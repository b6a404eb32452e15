package e2e

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// startBinary runs `blueprint run` from the built binary, every listener on
// a free loopback port, and waits for its ready line.
func startBinary(t *testing.T, bin, dataDir string, args ...string) (*process, map[string]any) {
	t.Helper()
	p := &process{name: "blueprint", logs: newLogSink(), done: make(chan error, 1)}
	all := []string{"run", "--data-dir", dataDir, "--log-format", "json"}
	for _, s := range serviceNames {
		all = append(all, "--"+s+"-addr", "127.0.0.1:0", "--"+s+"-ops-addr", "127.0.0.1:0")
	}
	all = append(all, "--console-addr", "127.0.0.1:0")
	p.cmd = exec.Command(bin, append(all, args...)...)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }() // ends when the process exits
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p, p.logs.waitReady(t, 30*time.Second)
}

// TestCrashBetweenCommitAndPublish kills the process, with a chaos rule,
// right after an order and its event commit and before the relay is woken:
// the process dies of SIGKILL at that point, and once restarted the order is
// there and notified exactly once.
func TestCrashBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	p, ready := startBinary(t, bin, dataDir, "--chaos")

	c := newClient(t, ready["gateway"].(string))
	email, password := uniqueEmail("crash"), "crash-password"
	c.signUp(email, password)
	out, err := exec.Command(bin, "chaos", "set", "--ops", ready["orders_ops"].(string),
		"--route", "orders.after_commit", "--crash").CombinedOutput()
	if err != nil {
		t.Fatalf("blueprint chaos set: %v\n%s", err, out)
	}

	req, err := http.NewRequest("POST", c.base+"/orders", bytes.NewReader([]byte(`{"sku":"CRASH-1","qty":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	if resp, err := c.http.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			t.Fatalf("POST /orders = 201 with a crash rule at orders.after_commit")
		}
	}
	select {
	case err := <-p.done:
		var ws syscall.WaitStatus
		if exit, ok := errors.AsType[*exec.ExitError](err); ok {
			ws, _ = exit.Sys().(syscall.WaitStatus)
		}
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("process ended with %v, want killed by SIGKILL; log:\n%s", err, p.logs.text())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("process still running 30s after hitting the crash rule; log:\n%s", p.logs.text())
	}
	crashes := p.logs.records("chaos crash: killing the process")
	if len(crashes) != 1 || crashes[0]["route"] != "orders.after_commit" || crashes[0]["service"] != "orders" || crashes[0]["level"] != "WARN" {
		t.Errorf("crash log lines = %v, want one warn line from orders naming orders.after_commit", crashes)
	}
	if len(p.logs.records("stopped")) != 0 || len(p.logs.records("shutting down")) != 0 {
		t.Errorf("the killed process shut down cleanly; log:\n%s", p.logs.text())
	}

	// The same data, no chaos: the relay finds the committed event.
	p, ready = startBinary(t, bin, dataDir)
	c = newClient(t, ready["gateway"].(string))
	c.logIn(email, password)
	var orders page[order]
	c.do("GET", "/orders", nil).expect(t, http.StatusOK).json(t, &orders)
	if len(orders.Items) != 1 || orders.Items[0].SKU != "CRASH-1" {
		t.Fatalf("orders after the restart = %+v, want the one committed before the crash", orders.Items)
	}
	if n := c.notificationsFor(orders.Items[0].ID, 20*time.Second); len(n) != 1 {
		t.Errorf("notifications of the order = %d, want 1", len(n))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-p.done; err != nil {
		t.Errorf("restarted process exited with %v after SIGTERM, want 0", err)
	}
	if n := len(p.logs.records("fault injection is on: never expose this ops listener")); n != 0 {
		t.Errorf("the restarted process, without --chaos, has fault injection on in %d services", n)
	}
}
