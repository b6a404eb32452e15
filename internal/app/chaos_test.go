package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyWriter collects a process's log and hands over its ready line.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan map[string]any
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for line := range strings.Lines(string(p)) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "blueprint ready" {
			w.once.Do(func() { w.ready <- rec })
		}
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startApp runs `blueprint run` inside the test, every listener on a free
// loopback port, until the test ends, and returns the URLs of its ready
// line by name ("gateway", "orders_ops", …).
func startApp(t *testing.T, args ...string) map[string]string {
	t.Helper()
	base := []string{"run", "--data-dir", t.TempDir(), "--log-format", "json"}
	for _, s := range services {
		base = append(base, "--"+s+"-addr", "127.0.0.1:0", "--"+s+"-ops-addr", "127.0.0.1:0")
	}
	base = append(base, "--console-addr", "127.0.0.1:0")
	logs := &readyWriter{ready: make(chan map[string]any, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, append(base, args...), func(string) string { return "" }, logs, io.Discard) }() // ends on cancel, in the cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	select {
	case rec := <-logs.ready:
		urls := map[string]string{}
		for k, v := range rec {
			if s, ok := v.(string); ok && strings.HasPrefix(s, "http://") {
				urls[k] = s
			}
		}
		return urls
	case err := <-done:
		t.Fatalf("Run returned before ready: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("not ready after 30s:\n%s", logs)
	}
	return nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestChaosCommand drives the ops listeners of a running system with
// `blueprint chaos`, and sees a rule act on the main listener.
func TestChaosCommand(t *testing.T) {
	t.Parallel()
	urls := startApp(t, "--chaos")
	chaos := func(args ...string) string {
		t.Helper()
		out, err := run(t, nil, append([]string{"chaos"}, args...)...)
		if err != nil {
			t.Fatalf("chaos %q = %v", args, err)
		}
		return out
	}
	mustContain := func(what, out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s output does not contain %q:\n%s", what, w, out)
			}
		}
	}
	const jwks = "GET /.well-known/jwks.json"

	mustContain("list orders", chaos("list", "--service", "orders", "--ops", urls["orders_ops"]),
		"orders at "+urls["orders_ops"]+": 0 active rules", "  *\n", "  POST /orders\n", "  orders.after_commit\n")
	mustContain("list notifications", chaos("list", "--service", "notifications", "--ops", urls["notifications_ops"]),
		"  notifications.deliver\n", "  notifications.after_delivery\n", "  GET /notifications\n")

	out := chaos("set", "--service", "gateway", "--ops", urls["gateway_ops"], "--route", jwks,
		"--latency", "5ms", "--error-rate", "1", "--for", "1m")
	mustContain("set", out, jwks+": latency 5ms, errors on 100% of hits, until ")
	if status, body := get(t, urls["gateway"]+"/.well-known/jwks.json"); status != 503 || !strings.Contains(body, "urn:blueprint:problem:chaos") {
		t.Errorf("GET /.well-known/jwks.json with an error rule = %d %s, want 503 chaos", status, body)
	}
	mustContain("list gateway", chaos("list", "--service", "gateway", "--ops", urls["gateway_ops"]),
		": 1 active rule\n  "+jwks+": latency 5ms, errors on 100% of hits, until ")
	mustContain("clear", chaos("clear", "--service", "gateway", "--ops", urls["gateway_ops"], "--route", jwks),
		"cleared the rule of "+jwks)
	if status, _ := get(t, urls["gateway"]+"/.well-known/jwks.json"); status != 200 {
		t.Errorf("GET /.well-known/jwks.json once cleared = %d, want 200", status)
	}

	// --crash alone means every hit; the rule is cleared before any order.
	mustContain("set crash", chaos("set", "--ops", urls["orders_ops"], "--route", "orders.after_commit", "--crash", "--for", "0"),
		"orders.after_commit: SIGKILL on 100% of hits, until cleared")
	mustContain("clear all", chaos("clear", "--ops", urls["orders_ops"]), "cleared every rule")

	_, err := run(t, nil, "chaos", "set", "--service", "users", "--ops", urls["users_ops"], "--route", "GET /users/{ID}", "--error-rate", "1")
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), `unknown route "GET /users/{ID}"`) ||
		!strings.Contains(err.Error(), "GET /users/{id}") {
		t.Errorf("set on an unknown route = %v, want the 400 naming the route and the real ones", err)
	}
	_, err = run(t, nil, "chaos", "set", "--service", "users", "--ops", urls["users_ops"], "--route", "*", "--error-rate", "1.5")
	if err == nil || !strings.Contains(err.Error(), "errorRate: must be from 0 to 1") {
		t.Errorf("set with a rate above 1 = %v, want the field error", err)
	}
}

// TestChaosCommandWhenOff: without BLUEPRINT_CHAOS the ops listener has no
// rules to give, and the command says how to turn them on.
func TestChaosCommandWhenOff(t *testing.T) {
	t.Parallel()
	urls := startApp(t)
	_, err := run(t, nil, "chaos", "list", "--service", "users", "--ops", urls["users_ops"])
	if err == nil || !strings.Contains(err.Error(), "BLUEPRINT_CHAOS=true") {
		t.Errorf("chaos list with chaos off = %v, want a hint to set BLUEPRINT_CHAOS=true", err)
	}
	if status, _ := get(t, urls["users_ops"]+"/chaos"); status != 404 {
		t.Errorf("GET /chaos with chaos off = %d, want 404", status)
	}
}

func TestChaosCommandUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"chaos"}, "set, list or clear"},
		{"unknown subcommand", []string{"chaos", "break"}, "break"},
		{"unknown service", []string{"chaos", "list", "--service", "billing"}, "--service"},
		{"set without route", []string{"chaos", "set", "--service", "users", "--error-rate", "1"}, "--route"},
		{"sub-millisecond latency", []string{"chaos", "set", "--service", "users", "--route", "*", "--latency", "1500us"}, "--latency"},
		{"flag of another subcommand", []string{"chaos", "list", "--service", "users", "--crash"}, "crash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := run(t, nil, tc.args...)
			if err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q = %v, want a usage error naming %s", tc.args, err, tc.want)
			}
		})
	}
}
