package harness

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// StartDaemon runs a server the tests use (Prometheus, a collector): bin
// with args, its output in dir/name.log (printed if the test fails). It
// returns once readyURL answers 200, and stops the server with SIGTERM
// when the test ends.
func StartDaemon(t testing.TB, name, dir, readyURL, bin string, args ...string) *exec.Cmd {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }() // ends when the daemon exits, at cleanup at the latest
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("--- %s.log\n%s", name, b)
			}
		}
	})

	client := &http.Client{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := client.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		select {
		case <-waited:
			t.Fatalf("%s exited at start; see %s", name, logf.Name())
		case <-ctx.Done():
			t.Fatalf("%s not ready after 30 s (%s)", name, readyURL)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
