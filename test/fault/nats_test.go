//go:build fault

package fault

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// settleTimeout bounds the wait for a healed system to catch up.
const settleTimeout = 90 * time.Second

// Scenario 1: NATS killed for 5 s during 2,000 POSTs at a steady rate, then
// restarted on the same store. Orders keep being accepted (they wait in the
// outbox) and every one reaches its notification.
func TestNATSKilled(t *testing.T) {
	s := start(t, localcluster.Config{})
	ctx := t.Context()
	var accepted atomic.Int64
	var drained time.Duration
	done := afterAccepted(&accepted, 400, func() {
		n := s.Get("nats-1")
		if err := n.Kill(); err != nil {
			t.Errorf("kill nats: %v", err)
		}
		time.Sleep(5 * time.Second)
		if err := n.Restart(ctx); err != nil {
			t.Errorf("restart nats: %v", err)
		}
		var err error
		if drained, err = harness.WaitDrained(t, s.src.Orders, 30*time.Second); err != nil {
			t.Errorf("after healing: %v", err)
		}
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 150}, &accepted)
	<-done
	rep, _ := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	if ratio := float64(res.FirstTry) / 2000; ratio < 0.999 {
		t.Errorf("POST success on the first try = %.2f%%, want ≥ 99.9%%", 100*ratio)
	}
	record(t, row{Scenario: "1. NATS killed 5 s", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: drained,
		Note: "NATS restarted on its store; recovery = outbox empty after the restart"})
}

// Scenario 2: NATS paused (SIGSTOP) for 10 s under load. Publishes in flight
// time out with an unknown outcome and are re-sent with the same event id;
// the stream's duplicates window drops the copies.
func TestNATSPaused(t *testing.T) {
	s := start(t, localcluster.Config{})
	ctx := t.Context()
	var accepted atomic.Int64
	var drained time.Duration
	done := afterAccepted(&accepted, 300, func() {
		n := s.Get("nats-1")
		if err := n.Signal(syscall.SIGSTOP); err != nil {
			t.Errorf("stop nats: %v", err)
		}
		time.Sleep(10 * time.Second)
		if err := n.Signal(syscall.SIGCONT); err != nil {
			t.Errorf("continue nats: %v", err)
		}
		var err error
		if drained, err = harness.WaitDrained(t, s.src.Orders, 30*time.Second); err != nil {
			t.Errorf("after healing: %v", err)
		}
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 100}, &accepted)
	<-done
	rep, _ := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	if rep.StreamMessages != len(res.Accepted) {
		t.Errorf("stream messages = %d for %d orders, want one each", rep.StreamMessages, len(res.Accepted))
	}
	if rep.Resent == 0 {
		t.Errorf("no event was re-sent: the pause did not catch a publish in flight")
	}
	record(t, row{Scenario: "2. NATS paused 10 s", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: drained,
		Note: itoa(rep.Resent) + " events re-sent with their id; stream messages = accepted orders"})
}

// Scenario 3: NATS restarted twice (SIGTERM, start again) during 10,000
// events: every one delivered, none twice.
func TestNATSRestartedTwice(t *testing.T) {
	s := start(t, localcluster.Config{})
	ctx := t.Context()
	var accepted atomic.Int64
	const total = 10000
	restart := func() {
		n := s.Get("nats-1")
		if err := n.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("stop nats: %v", err)
		}
		for n.Running() {
			time.Sleep(10 * time.Millisecond)
		}
		if err := n.Restart(ctx); err != nil {
			t.Errorf("restart nats: %v", err)
		}
	}
	first := afterAccepted(&accepted, 3000, restart)
	second := afterAccepted(&accepted, 7000, func() { <-first; restart() })
	res := s.client.Run(ctx, t, harness.Load{Orders: total, Clients: 20}, &accepted)
	<-second
	rep, took := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	if rep.Notified != total {
		t.Errorf("notified %d orders, want %d", rep.Notified, total)
	}
	record(t, row{Scenario: "3. NATS restarted twice", Requests: total, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / total, Report: rep, Recovery: took,
		Note: "10,000 orders in " + res.Duration.Round(100*time.Millisecond).String() + "; recovery = settled after the last 201"})
}

// Scenario 11: the worker paused (SIGSTOP) for 30 s under load. What it
// holds stays bounded by the consumer's MaxAckPending, the rest waits in the
// stream, and all of it drains once the worker runs again.
func TestWorkerPaused(t *testing.T) {
	t.Parallel()
	s := start(t, localcluster.Config{})
	ctx := t.Context()
	var accepted atomic.Int64
	var maxAckPending, maxPending uint64
	var healed time.Time
	done := afterAccepted(&accepted, 100, func() {
		w := s.Get("notifications-1")
		if err := w.Signal(syscall.SIGSTOP); err != nil {
			t.Errorf("stop worker: %v", err)
		}
		until := time.Now().Add(30 * time.Second)
		for time.Now().Before(until) {
			if info := consumerInfo(t, s.NATSURL, s.NATSNKey); info != nil {
				maxAckPending = max(maxAckPending, uint64(info.NumAckPending))
				maxPending = max(maxPending, info.NumPending)
				if info.NumAckPending > info.Config.MaxAckPending {
					t.Errorf("ack pending %d > MaxAckPending %d", info.NumAckPending, info.Config.MaxAckPending)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err := w.Signal(syscall.SIGCONT); err != nil {
			t.Errorf("continue worker: %v", err)
		}
		healed = time.Now()
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 100}, &accepted)
	<-done
	rep, _ := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	recovery := time.Since(healed)
	if maxPending == 0 {
		t.Errorf("no event waited in the stream while the worker was paused")
	}
	record(t, row{Scenario: "11. worker paused 30 s", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: recovery,
		Note: "while paused: ack pending ≤ " + itoa(maxAckPending) + ", waiting in the stream ≤ " + itoa(maxPending)})
}

// consumerInfo reads the notifications consumer's state, or nil.
func consumerInfo(t *testing.T, url, seedFile string) *jetstream.ConsumerInfo {
	nc, err := harness.ConnectNATS(url, seedFile)
	if err != nil {
		t.Logf("nats: %v", err)
		return nil
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, "ORDERS", "notifications")
	if err != nil {
		t.Logf("consumer: %v", err)
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}
