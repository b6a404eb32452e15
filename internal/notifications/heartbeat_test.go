package notifications

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// TestWorkerHeartbeatsKeepASlowDelivery: a delivery that takes longer than
// AckWait keeps its event while the worker heartbeats, so the server does
// not hand it to another replica (or back to this one).
func TestWorkerHeartbeatsKeepASlowDelivery(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)

	// The heartbeats as they reach the server: every settle call is a
	// message on the delivery's reply subject under $JS.ACK, and a
	// heartbeat's body is +WPI.
	beats := make(chan struct{}, 64)
	sub, err := env.js.Conn().Subscribe("$JS.ACK.>", func(m *nats.Msg) {
		if string(m.Data) == "+WPI" {
			select {
			case beats <- struct{}{}:
			default: // enough counted
			}
		}
	})
	if err != nil {
		t.Fatalf("subscribe to acks: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	release := make(chan struct{})
	ch := &fakeChannel{gate: release}
	cfg := env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)
	cfg.AckWait = time.Second
	runWorker(t, newTestWorker(t, cfg))

	ev := newEvent("user-1")
	publishEvent(t, env.js, ev)
	testwait.For(t, 10*time.Second, "the delivery to block in the channel", func() bool { return ch.InFlight() == 1 })

	// Heartbeats are a third of AckWait apart: after four, the delivery
	// has outlived AckWait.
	for i := range 4 {
		select {
		case <-beats:
		case <-time.After(10 * time.Second):
			t.Fatalf("heartbeats seen = %d, want 4 while the delivery is blocked", i)
		}
	}
	if info := consumerInfo(t, env.js); info.Delivered.Consumer != 1 || info.NumRedelivered != 0 || info.NumAckPending != 1 {
		t.Errorf("while blocked past AckWait: deliveries %d, redelivered %d, ack pending %d; want 1, 0, 1",
			info.Delivered.Consumer, info.NumRedelivered, info.NumAckPending)
	}

	close(release)
	testwait.For(t, 10*time.Second, "the notification", func() bool { return rowCount(t, env.db) == 1 })
	testwait.For(t, 10*time.Second, "the event to be acked", func() bool { return settled(t, env.js) })
	if got := len(ch.Attempts()); got != 1 {
		t.Errorf("Channel.Deliver calls = %d, want 1 (never redelivered)", got)
	}
	if got := consumerInfo(t, env.js).Delivered.Consumer; got != 1 {
		t.Errorf("deliveries of the event = %d, want 1", got)
	}
}

// silentMsg is a real delivery whose heartbeats never reach the server, as
// when the worker holding it is paused or cut off from NATS. Every other
// settle call goes to the server.
type silentMsg struct{ jetstream.Msg }

func (silentMsg) InProgress() error { return nil }

// TestStalledDeliveryIsRedeliveredAndRecordedOnce: a worker that stalls past
// AckWait without heartbeats loses the event to another replica, which
// notifies. When the stalled one wakes up and delivers too, the event id's
// unique key keeps the notification recorded once.
func TestStalledDeliveryIsRedeliveredAndRecordedOnce(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com"})

	// Replica A takes the event and blocks in its channel.
	release := make(chan struct{})
	stalled := &fakeChannel{gate: release}
	logsA := &logtest.Buffer{}
	cfgA := env.workerConfig(t, dir, stalled)
	cfgA.AckWait = 500 * time.Millisecond
	cfgA.Logger = slog.New(slog.NewTextHandler(logsA, nil))
	a := newTestWorker(t, cfgA)
	ev := newEvent("user-1")
	first := deliverOne(t, a, env.js, ev)
	doneA := make(chan struct{})
	go func() { // ends once release is closed
		defer close(doneA)
		a.handle(t.Context(), silentMsg{first})
	}()
	testwait.For(t, 10*time.Second, "replica A to block in its channel", func() bool { return stalled.InFlight() == 1 })

	// Replica B gets the event once AckWait passes with no word from A.
	healthy := &fakeChannel{}
	cfgB := env.workerConfig(t, dir, healthy)
	cfgB.AckWait = cfgA.AckWait
	cfgB.JS = natsbustest.Connect(t, env.srv)
	runWorker(t, newTestWorker(t, cfgB))
	testwait.For(t, 10*time.Second, "replica B to notify", func() bool { return rowCount(t, env.db) == 1 })
	testwait.For(t, 10*time.Second, "replica B's ack", func() bool { return settled(t, env.js) })

	// A wakes up: it delivers too (delivery is at least once; the channel
	// gets the event id to drop the repeat), but records nothing.
	close(release)
	select {
	case <-doneA:
	case <-time.After(30 * time.Second):
		t.Fatal("replica A's handle did not return after its channel was released")
	}

	if got := rows(t, env.db); len(got) != 1 || got[0].EventID != ev.ID {
		t.Errorf("rows = %s\nwant one for event %s", fmtRows(got), ev.ID)
	}
	for name, ch := range map[string]*fakeChannel{"A": stalled, "B": healthy} {
		if got := ch.Delivered(); len(got) != 1 || got[0].EventID != ev.ID {
			t.Errorf("replica %s deliveries = %v, want [%s]", name, eventIDs(got), ev.ID)
		}
	}
	if got := counter(t, env.tel, metricSent); got != 1 {
		t.Errorf("%s = %v, want 1 (one notification recorded)", metricSent, got)
	}
	if want := "event already recorded by another worker"; !strings.Contains(logsA.String(), want) {
		t.Errorf("replica A's log does not say %q:\n%s", want, logsA.String())
	}
	info := consumerInfo(t, env.js)
	if info.Delivered.Consumer != 2 || info.AckFloor.Stream != 1 || info.NumAckPending != 0 {
		t.Errorf("consumer deliveries %d, ack floor %d, ack pending %d; want 2, 1, 0",
			info.Delivered.Consumer, info.AckFloor.Stream, info.NumAckPending)
	}
	if got := len(deadLetters(t, env.js)); got != 0 {
		t.Errorf("dead letters = %d, want 0", got)
	}
}

func TestNewWorkerChecksAckWaitAndMaxDeliver(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	tests := []struct {
		name           string
		ackWait        time.Duration
		maxDeliver     int
		wantErr        string
		wantAckWait    time.Duration
		wantMaxDeliver int
	}{
		{name: "defaults", wantAckWait: DefaultAckWait, wantMaxDeliver: DefaultMaxDeliver},
		{name: "set", ackWait: 2 * time.Second, maxDeliver: 3, wantAckWait: 2 * time.Second, wantMaxDeliver: 3},
		{name: "ack wait too short", ackWait: time.Millisecond, wantErr: "ack wait"},
		{name: "negative max deliver", maxDeliver: -1, wantErr: "max deliver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := env.workerConfig(t, newFakeDirectory(nil), &fakeChannel{})
			cfg.AckWait, cfg.MaxDeliver = tt.ackWait, tt.maxDeliver
			w, err := NewWorker(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewWorker(AckWait %v, MaxDeliver %d) = %v, want an error about %s", tt.ackWait, tt.maxDeliver, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewWorker(AckWait %v, MaxDeliver %d) = %v", tt.ackWait, tt.maxDeliver, err)
			}
			got := w.consumerConfig()
			if got.AckWait != tt.wantAckWait || got.MaxDeliver != tt.wantMaxDeliver {
				t.Errorf("consumer AckWait %v, MaxDeliver %d; want %v, %d", got.AckWait, got.MaxDeliver, tt.wantAckWait, tt.wantMaxDeliver)
			}
		})
	}
}
