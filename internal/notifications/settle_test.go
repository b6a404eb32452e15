package notifications

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// attemptMsg is a real JetStream message, fetched from the real server,
// that claims a different delivery count. It exists only for
// TestHandleSettles: reaching the fifth delivery for real takes the
// production back-off of 1+5+15+30 s. Every settle call (Ack, Term,
// NakWithDelay, …) still goes to the real message and so to the server;
// NakWithDelay also records the delay it was given.
type attemptMsg struct {
	jetstream.Msg
	attempt  uint64
	nakDelay time.Duration // zero when NakWithDelay was not called
}

func (m *attemptMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := m.Msg.Metadata()
	if err != nil {
		return nil, err
	}
	out := *md
	out.NumDelivered = m.attempt
	return &out, nil
}

func (m *attemptMsg) NakWithDelay(d time.Duration) error {
	m.nakDelay = d
	return m.Msg.NakWithDelay(d)
}

// TestHandleSettles checks how one delivery is settled, given its attempt
// number and whether processing succeeds: ack, nak on the back-off
// schedule, or dead letter and term once the attempts are spent.
func TestHandleSettles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		attempt     uint64
		channelDown bool
		// wantNak is the back-off asked for; 0 means no nak.
		wantNak        time.Duration
		wantDeadLetter bool
		wantRow        bool
	}{
		{name: "first attempt fails", attempt: 1, channelDown: true, wantNak: time.Second},
		{name: "second attempt fails", attempt: 2, channelDown: true, wantNak: 5 * time.Second},
		{name: "third attempt fails", attempt: 3, channelDown: true, wantNak: 15 * time.Second},
		{name: "fourth attempt fails", attempt: 4, channelDown: true, wantNak: 30 * time.Second},
		{name: "last attempt fails", attempt: DefaultMaxDeliver, channelDown: true, wantDeadLetter: true},
		{name: "last attempt succeeds", attempt: DefaultMaxDeliver, wantRow: true},
		{name: "first attempt succeeds", attempt: 1, wantRow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			ch := &fakeChannel{}
			if tt.channelDown {
				ch.failures = 1 << 30
			}
			w := newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch))
			ev := newEvent("user-1")
			real := deliverOne(t, w, env.js, ev)
			m := &attemptMsg{Msg: real, attempt: tt.attempt}

			w.handle(t.Context(), m)

			if m.nakDelay != tt.wantNak {
				t.Errorf("NakWithDelay(%v), want %v (0: no nak)", m.nakDelay, tt.wantNak)
			}
			if tt.wantNak != 0 {
				// Neither acked nor terminated: still pending, for its redelivery.
				if info := consumerInfo(t, env.js); info.NumAckPending != 1 || info.AckFloor.Stream != 0 {
					t.Errorf("after nak: NumAckPending %d, ack floor %d; want 1 and 0",
						info.NumAckPending, info.AckFloor.Stream)
				}
			} else {
				// Acked or terminated (Term is not confirmed, so poll): never redelivered.
				testwait.For(t, 5*time.Second, "the event to be settled", func() bool {
					info := consumerInfo(t, env.js)
					return info.NumAckPending == 0 && info.AckFloor.Stream == 1
				})
			}
			dls := deadLetters(t, env.js)
			if tt.wantDeadLetter {
				if len(dls) != 1 {
					t.Fatalf("dead letters = %d, want 1", len(dls))
				}
				h := dls[0].Header
				if got, want := h.Get("Blueprint-Attempts"), "5"; got != want {
					t.Errorf("Blueprint-Attempts = %q, want %q", got, want)
				}
				if got := h.Get("Blueprint-Dead-Letter-Reason"); !strings.Contains(got, "channel is down") {
					t.Errorf("Blueprint-Dead-Letter-Reason = %q, want the channel's error", got)
				}
				if got := h.Get("Blueprint-Event-Id"); got != ev.ID {
					t.Errorf("Blueprint-Event-Id = %q, want %q", got, ev.ID)
				}
				if got := string(dls[0].Data); got != string(mustJSON(t, ev)) {
					t.Errorf("dead letter data = %s, want the event", got)
				}
			} else if len(dls) != 0 {
				t.Errorf("dead letters = %d, want 0", len(dls))
			}
			if got := rowCount(t, env.db); (got == 1) != tt.wantRow || got > 1 {
				t.Errorf("rows = %d, want row recorded: %v", got, tt.wantRow)
			}

			wantFailed, wantDead := 0.0, 0.0
			if tt.wantNak != 0 {
				wantFailed = 1
			}
			if tt.wantDeadLetter {
				wantDead = 1
			}
			if got := counter(t, env.tel, metricFailed); got != wantFailed {
				t.Errorf("%s = %v, want %v", metricFailed, got, wantFailed)
			}
			if got := counter(t, env.tel, metricDeadLettered); got != wantDead {
				t.Errorf("%s = %v, want %v", metricDeadLettered, got, wantDead)
			}
		})
	}
}

// TestHandleDeadLettersAnAttemptThatRanOutOfTime: the last attempt ends
// because its deadline passed, and the dead-letter copy is still made. (The
// deadline here is the caller's, standing in for handleTimeout.)
func TestHandleDeadLettersAnAttemptThatRanOutOfTime(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ch := &fakeChannel{gate: make(chan struct{})} // never opens
	w := newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch))
	ev := newEvent("user-1")
	real := deliverOne(t, w, env.js, ev)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	w.handle(ctx, &attemptMsg{Msg: real, attempt: DefaultMaxDeliver})

	dls := deadLetters(t, env.js)
	if len(dls) != 1 {
		t.Fatalf("dead letters = %d, want 1", len(dls))
	}
	if got := dls[0].Header.Get("Blueprint-Dead-Letter-Reason"); !strings.Contains(got, "deadline exceeded") {
		t.Errorf("Blueprint-Dead-Letter-Reason = %q, want the deadline", got)
	}
	testwait.For(t, 5*time.Second, "the event to be terminated", func() bool {
		info := consumerInfo(t, env.js)
		return info.NumAckPending == 0 && info.AckFloor.Stream == 1
	})
}
