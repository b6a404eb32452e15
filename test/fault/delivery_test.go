//go:build fault

package fault

import (
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Scenario 6: the webhook receiver fails 30 % of requests for 60 s, then
// all of them for 60 s, then heals. Failed attempts are retried on the
// back-off schedule; events that run out of attempts are dead-lettered, so
// delivered + dead-lettered = orders. Replaying the dead letters then
// delivers every one of them.
func TestWebhookFailing(t *testing.T) {
	t.Parallel() // mostly waiting: it runs beside the other light scenarios
	sink := newSink(t)
	s := start(t, localcluster.Config{ServiceEnv: map[string][]string{"notifications": sink.env()}})
	ctx := t.Context()
	sink.fail(0.3)
	go func() { // ends after the two phases
		time.Sleep(60 * time.Second)
		sink.fail(1)
		time.Sleep(60 * time.Second)
		sink.fail(0)
	}()
	const total = 600
	res := s.client.Run(ctx, t, harness.Load{Orders: total, Clients: 5, Rate: 5}, nil) // 120 s
	time.Sleep(time.Until(res.Started.Add(121 * time.Second)))
	rep, took := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	if rep.Notified+rep.DeadLettered != len(res.Accepted) {
		t.Errorf("delivered %d + dead-lettered %d ≠ %d orders", rep.Notified, rep.DeadLettered, len(res.Accepted))
	}
	if rep.DeadLettered == 0 {
		t.Errorf("nothing was dead-lettered although the receiver failed everything for 60 s")
	}
	deadBefore := rep.DeadLettered

	// Replay every dead letter: each is delivered and leaves the DLQ.
	out, err := exec.CommandContext(ctx, bin, "dlq", "replay", "--all", "--nats-url", s.NATSURL, "--nats-nkey", s.NATSNKey).CombinedOutput()
	if err != nil {
		t.Fatalf("blueprint dlq replay --all: %v\n%s", err, out)
	}
	start := time.Now()
	for {
		rep = harness.Measure(t, s.src, res.Accepted)
		if rep.Notified == len(res.Accepted) || time.Since(start) > time.Minute {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if rep.Notified != len(res.Accepted) || rep.DeadLettered != 0 {
		t.Errorf("after the replay: notified %d of %d, %d still dead-lettered", rep.Notified, len(res.Accepted), rep.DeadLettered)
	}
	keys, requests := sink.counts()
	if keys != len(res.Accepted) {
		t.Errorf("receiver saw %d distinct Idempotency-Keys for %d orders", keys, len(res.Accepted))
	}
	record(t, row{Scenario: "6. webhook failing 30 % for 60 s, then 100 % for 60 s", Requests: total, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / total, Report: rep, Recovery: took,
		Note: itoa(sink.failed.Load()) + " failed deliveries; " + itoa(deadBefore) + " dead-lettered, all replayed and delivered; receiver: " +
			itoa(requests) + " deliveries, " + itoa(keys) + " keys"})
}

// Scenario 7: a handler slower than AckWait. One of two workers is paused
// (SIGSTOP) in the middle of slow deliveries for three times the ack wait,
// so it cannot heartbeat: its events are redelivered to the other worker,
// which delivers and records them. When the paused worker resumes it
// finishes its deliveries, finds them recorded, and records nothing twice.
func TestSlowHandlerBeyondAckWait(t *testing.T) {
	t.Parallel()
	sink := newSink(t)
	const ackWait = 2 * time.Second
	s := start(t, localcluster.Config{Notifications: 2, ServiceEnv: map[string][]string{
		"notifications": append(sink.env(), "NOTIFICATIONS_ACK_WAIT="+ackWait.String()),
	}})
	ctx := t.Context()
	slow := s.Get("notifications-1")
	setFault(t, slow.OpsURL, map[string]any{"route": notifications.FaultDeliver, "latencyMs": 1000})
	var accepted atomic.Int64
	done := afterAccepted(&accepted, 100, func() {
		if err := slow.Signal(syscall.SIGSTOP); err != nil {
			t.Errorf("stop worker: %v", err)
		}
		time.Sleep(3 * ackWait)
		if err := slow.Signal(syscall.SIGCONT); err != nil {
			t.Errorf("continue worker: %v", err)
		}
	})
	const total = 400
	res := s.client.Run(ctx, t, harness.Load{Orders: total, Clients: 5, Rate: 20}, &accepted)
	<-done
	rep, took := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	keys, requests := sink.counts()
	if requests <= keys {
		t.Errorf("receiver got %d requests for %d keys: nothing was redelivered past the ack wait", requests, keys)
	}
	record(t, row{Scenario: "7. slow handler beyond AckWait (2 s)", Requests: total, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / total, Report: rep, Recovery: took,
		Note: "receiver: " + itoa(requests) + " deliveries for " + itoa(keys) + " keys, one notification each"})
}
