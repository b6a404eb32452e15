package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// TestDLQCommand runs the whole system the way docs/dead-letters.md says
// (all-in-one, NATS_EMBEDDED_ADDR set), makes two dead letters by
// publishing to orders.created as the nats CLI would, and drives
// `blueprint dlq` against it over TCP.
func TestDLQCommand(t *testing.T) {
	t.Parallel()
	natsURL := startSystem(t)
	js := connectTCP(t, natsURL)

	// A poison message, and a well-formed event for a user who does not
	// exist: both are dead-lettered on their first attempt.
	poison := nats.NewMsg(events.OrderCreated)
	poison.Data = []byte("not json")
	flagURL := "--nats-url=" + natsURL
	listJSON := func() []notifications.DeadLetter {
		t.Helper()
		out, err := run(t, nil, "dlq", "list", "--json", flagURL)
		if err != nil {
			t.Fatalf("dlq list --json = %v", err)
		}
		var got []notifications.DeadLetter
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("dlq list --json printed %q: %v", out, err)
		}
		return got
	}
	seqs := func(dls []notifications.DeadLetter) []uint64 {
		var out []uint64
		for _, dl := range dls {
			out = append(out, dl.Seq)
		}
		return out
	}
	// One after the other, so that their dead letters come in this order:
	// the worker handles events side by side.
	if _, err := js.PublishMsg(t.Context(), poison, jetstream.WithMsgID("poison-1")); err != nil {
		t.Fatalf("publish poison: %v", err)
	}
	testwait.For(t, 15*time.Second, "the first dead letter", func() bool { return len(listJSON()) == 1 })
	ev := events.NewOrderCreated("evt-gone-1", events.OrderCreatedData{
		OrderID: "ord-gone-1", UserID: "user-gone", SKU: "SKU-1", Qty: 1, CreatedAt: time.Now().UTC(),
	})
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), events.OrderCreated, data, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatalf("publish event: %v", err)
	}

	testwait.For(t, 15*time.Second, "two dead letters", func() bool { return len(listJSON()) == 2 })

	got := listJSON()
	if got[0].Seq != 1 || got[0].EventID != "poison-1" || got[0].Attempts != 1 || !strings.Contains(got[0].Reason, "malformed event") {
		t.Errorf("first dead letter = %+v, want #1, event poison-1, 1 attempt, malformed", got[0])
	}
	if got[1].Seq != 2 || got[1].EventID != ev.ID || got[1].OrderID != "ord-gone-1" || got[1].Subject != events.OrderCreated {
		t.Errorf("second dead letter = %+v, want #2, event %s, order ord-gone-1 on %s", got[1], ev.ID, events.OrderCreated)
	}

	// The table, reaching NATS through the variable this time.
	out, err := run(t, map[string]string{"NATS_URL": natsURL}, "dlq", "list")
	if err != nil {
		t.Fatalf("dlq list = %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") {
		t.Fatalf("dlq list printed:\n%s\nwant a header and one line per dead letter", out)
	}
	for i, want := range [][]string{{"1 ", "poison-1", "malformed event"}, {"2 ", ev.ID, "ord-gone-1"}} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("dlq list line %d = %q, want it to contain %q", i+1, lines[i+1], w)
			}
		}
	}

	// Replay the poison: published again, dead-lettered again as #3.
	out, err = run(t, nil, "dlq", "replay", "--seq", "1", flagURL)
	if err != nil {
		t.Fatalf("dlq replay --seq 1 = %v", err)
	}
	if want := "replayed DLQ #1 (event poison-1) to orders.created as ORDERS #3"; !strings.Contains(out, want) {
		t.Errorf("dlq replay --seq 1 printed:\n%s\nwant %q", out, want)
	}
	testwait.For(t, 15*time.Second, "the poison dead-lettered again", func() bool {
		s := seqs(listJSON())
		return len(s) == 2 && s[0] == 2 && s[1] == 3
	})
	_, err = run(t, nil, "dlq", "replay", "--seq", "1", flagURL)
	if !errors.Is(err, notifications.ErrNoDeadLetter) || ExitCode(err) != 1 || strings.Contains(err.Error(), "\n") {
		t.Errorf("dlq replay --seq 1 again = %v (exit %d), want no such dead letter, exit 1", err, ExitCode(err))
	}

	// Replay the rest.
	out, err = run(t, nil, "dlq", "replay", "--all", flagURL)
	if err != nil {
		t.Fatalf("dlq replay --all = %v", err)
	}
	if !strings.Contains(out, "replayed DLQ #2") || !strings.Contains(out, "replayed DLQ #3") || !strings.Contains(out, "2 replayed") {
		t.Errorf("dlq replay --all printed:\n%s\nwant #2 and #3 replayed", out)
	}
	testwait.For(t, 15*time.Second, "both dead-lettered again", func() bool {
		s := seqs(listJSON())
		return len(s) == 2 && s[0] == 4 && s[1] == 5
	})
}

// startSystem runs `blueprint run` with every service and the embedded NATS
// server listening on free loopback ports until the test ends, and returns
// the NATS URL from its ready line.
func startSystem(t *testing.T) string {
	t.Helper()
	args := []string{"run", "--data-dir", t.TempDir(), "--log-format", "json", "--nats-embedded-addr", "127.0.0.1:0"}
	for _, s := range services {
		args = append(args, "--"+s+"-addr", "127.0.0.1:0", "--"+s+"-ops-addr", "127.0.0.1:0")
	}
	args = append(args, "--console-addr", "127.0.0.1:0")
	logs := &readyWatcher{ready: make(chan map[string]any, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, func(string) string { return "" }, logs, io.Discard) }() // ends on cancel in the cleanup
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after shutdown = %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return 30s after cancel")
		}
	})
	select {
	case rec := <-logs.ready:
		url, _ := rec["nats"].(string)
		if url == "" {
			t.Fatalf("ready line has no nats URL: %v", rec)
		}
		return url
	case err := <-done:
		t.Fatalf("Run returned before ready: %v\nlog:\n%s", err, logs.text())
	case <-time.After(30 * time.Second):
		t.Fatalf("not ready after 30s; log:\n%s", logs.text())
	}
	return ""
}

// readyWatcher collects a process's JSON log and hands over its ready line.
type readyWatcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	all   strings.Builder
	ready chan map[string]any
	once  sync.Once
}

func (w *readyWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // incomplete: keep for the next write
			return len(p), nil
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "blueprint ready" {
			w.once.Do(func() { w.ready <- rec })
		}
	}
}

func (w *readyWatcher) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// connectTCP connects to NATS at url as an outside client would.
func connectTCP(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := natsbus.Connect(natsbus.ConnConfig{Name: t.Name(), URL: url, FailFast: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
