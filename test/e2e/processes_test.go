package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// buildBinary compiles cmd/blueprint into a temp dir.
func buildBinary(t *testing.T) string {
	return harness.Build(t, t.TempDir())
}

// process is one `blueprint run --target=…` OS process.
type process struct {
	name string
	cmd  *exec.Cmd
	logs *logSink
	done chan error
}

// TestMicroservices runs the four services as four OS processes of the
// built binary, as a deployment does: keys from `blueprint keys generate`,
// service addresses from configuration, orders and notifications sharing one
// NATS server over TCP. The newcomer's flow passes through them, and each
// stops cleanly on SIGTERM.
func TestMicroservices(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	keysDir := filepath.Join(t.TempDir(), "keys")
	if out, err := exec.Command(bin, "keys", "generate", "--out", keysDir).CombinedOutput(); err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// The server admits only the keys' NATS users, as a deployment's does:
	// orders and notifications each connect with their own seed.
	nats, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{
		StoreDir: t.TempDir(), Listen: natsAddr, ConfigFile: filepath.Join(keysDir, "nats-auth.conf"),
	},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)

	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"BLUEPRINT_KEYS_DIR=" + keysDir,
		"NATS_URL=nats://" + natsAddr,
		"LOG_FORMAT=json",
	}
	urls := map[string]string{}
	for _, s := range serviceNames {
		up := strings.ToUpper(s)
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		urls[s] = "http://" + addr
		env = append(env, up+"_ADDR="+addr, fmt.Sprintf("%s_OPS_ADDR=127.0.0.1:%d", up, freePort(t)))
		if s != "gateway" {
			env = append(env, up+"_URL=http://"+addr)
		}
	}

	var procs []*process
	for _, s := range []string{"users", "orders", "notifications", "gateway"} {
		p := &process{name: s, logs: newLogSink(), done: make(chan error, 1)}
		p.cmd = exec.Command(bin, "run", "--target="+s, "--data-dir", filepath.Join(t.TempDir(), s))
		p.cmd.Env = env
		p.cmd.Stdout = p.logs
		p.cmd.Stderr = p.logs
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", s, err)
		}
		go func() { p.done <- p.cmd.Wait() }() // ends when the process exits
		t.Cleanup(func() {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		})
		procs = append(procs, p)
	}
	for _, p := range procs {
		p.logs.waitReady(t, 30*time.Second)
	}

	c := newClient(t, urls["gateway"])
	u := c.signUp(uniqueEmail("micro"), "micro-password")
	var me user
	c.do("GET", "/users/me", nil).expect(t, http.StatusOK).json(t, &me)
	if me.ID != u.ID {
		t.Fatalf("GET /users/me = %+v, want %+v", me, u)
	}
	var o order
	c.do("POST", "/orders", map[string]any{"sku": "MICRO", "qty": 1}).expect(t, http.StatusCreated).json(t, &o)
	if n := c.notificationsFor(o.ID, 20*time.Second); len(n) != 1 {
		t.Fatalf("notifications for %s = %d, want 1", o.ID, len(n))
	}

	// Stop in reverse order, as a rolling shutdown would.
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s exited with %v after SIGTERM, want status 0; log:\n%s", p.name, err, p.logs.text())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still running 30s after SIGTERM", p.name)
		}
		if len(p.logs.records("stopped")) != 1 {
			t.Errorf("%s did not log its clean stop", p.name)
		}
	}
}
