package notifications

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

func TestWorkerNotifiesOnOrderCreated(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com", "user-2": "bob@example.com"})
	ch := &fakeChannel{}
	cfg := env.workerConfig(t, dir, ch)
	// A clock with nanoseconds: what is stored and shown is the microsecond instant.
	now := time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)
	cfg.Now = func() time.Time { return now }
	runWorker(t, newTestWorker(t, cfg))

	ev := newEvent("user-1")
	publishEvent(t, env.js, ev)

	testwait.For(t, 10*time.Second, "one notification row", func() bool { return rowCount(t, env.db) == 1 })
	testwait.For(t, 10*time.Second, "the event to be acked", func() bool { return settled(t, env.js) })

	if got := consumerInfo(t, env.js).Delivered.Consumer; got != 1 {
		t.Errorf("deliveries of the event = %d, want 1", got)
	}
	if got, want := dir.Calls(), []string{"user-1"}; !slices.Equal(got, want) {
		t.Errorf("Directory.Email calls = %v, want %v", got, want)
	}
	delivered := ch.Delivered()
	if len(delivered) != 1 {
		t.Fatalf("Channel deliveries = %d (%+v), want 1", len(delivered), delivered)
	}
	m := delivered[0]
	if m.EventID != ev.ID || m.To != "ada@example.com" || m.OrderID != ev.Data.OrderID || m.UserID != "user-1" {
		t.Errorf("delivered %+v, want event %s to ada@example.com for order %s of user-1", m, ev.ID, ev.Data.OrderID)
	}
	if !strings.Contains(m.Subject, ev.Data.OrderID) {
		t.Errorf("Subject = %q, want it to name order %s", m.Subject, ev.Data.OrderID)
	}
	if !strings.Contains(m.Body, "2 × SKU-1") {
		t.Errorf("Body = %q, want the sku and qty", m.Body)
	}

	got := rows(t, env.db)
	wantTime := now.Truncate(time.Microsecond)
	r := got[0]
	if r.EventID != ev.ID || r.OrderID != ev.Data.OrderID || r.UserID != "user-1" ||
		r.Channel != fakeChannelName || r.Status != "sent" {
		t.Errorf("row = %+v, want event %s, order %s, user-1, channel %q, status sent",
			r, ev.ID, ev.Data.OrderID, fakeChannelName)
	}
	if !r.CreatedAt.Equal(wantTime) {
		t.Errorf("createdAt = %v, want %v", r.CreatedAt, wantTime)
	}
	if r.SentAt == nil || !r.SentAt.Equal(wantTime) {
		t.Errorf("sentAt = %v, want %v", r.SentAt, wantTime)
	}
	if _, err := uuid.Parse(r.ID); err != nil {
		t.Errorf("id = %q, want a UUID: %v", r.ID, err)
	}
	if got := counter(t, env.tel, metricSent); got != 1 {
		t.Errorf("%s = %v, want 1", metricSent, got)
	}
}

func TestWorkerNotifiesOnceForARepublishedEvent(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com"})
	ch := &fakeChannel{}
	cfg := env.workerConfig(t, dir, ch)
	cfg.Concurrency = 1 // one at a time: the second copy must find the first's row
	runWorker(t, newTestWorker(t, cfg))

	// The same event under two message ids gets past JetStream's
	// de-duplication (as after a relay restart outside the window): only
	// the event id in the payload can stop the second notification.
	ev := newEvent("user-1")
	data := mustJSON(t, ev)
	publish(t, env.js, data, ev.ID+"-first", nil)
	publish(t, env.js, data, ev.ID+"-second", nil)

	stream, err := env.js.Stream(t.Context(), events.Stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2 (both copies kept)", info.State.Msgs)
	}

	testwait.For(t, 10*time.Second, "both copies to be acked", func() bool {
		i := consumerInfo(t, env.js)
		return i.AckFloor.Stream == 2 && i.NumAckPending == 0
	})
	if got := rows(t, env.db); len(got) != 1 || got[0].EventID != ev.ID {
		t.Errorf("rows = %s\nwant one row for event %s", fmtRows(got), ev.ID)
	}
	if got := ch.Delivered(); len(got) != 1 {
		t.Errorf("deliveries = %v, want one for %s", eventIDs(got), ev.ID)
	}
	if got, want := len(deadLetters(t, env.js)), 0; got != want {
		t.Errorf("dead letters = %d, want %d", got, want)
	}
}

func TestWorkerRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	// Each case fails the first two attempts: the worker naks with the
	// production back-off (1 s, then 5 s), so the event is notified on the
	// third delivery, about 6 s after it was published.
	tests := []struct {
		name             string
		dirFailures      int
		chanFailures     int
		wantDirCalls     int
		wantDeliverCalls int
	}{
		{name: "directory fails twice", dirFailures: 2, wantDirCalls: 3, wantDeliverCalls: 1},
		{name: "channel fails twice", chanFailures: 2, wantDirCalls: 3, wantDeliverCalls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com"})
			dir.failures = tt.dirFailures
			ch := &fakeChannel{failures: tt.chanFailures}
			runWorker(t, newTestWorker(t, env.workerConfig(t, dir, ch)))

			ev := newEvent("user-1")
			publishEvent(t, env.js, ev)

			testwait.For(t, 15*time.Second, "the notification after two retries", func() bool {
				return rowCount(t, env.db) == 1
			})
			testwait.For(t, 10*time.Second, "the event to be acked", func() bool { return settled(t, env.js) })
			if got := len(dir.Calls()); got != tt.wantDirCalls {
				t.Errorf("Directory.Email calls = %d, want %d", got, tt.wantDirCalls)
			}
			if got := len(ch.Attempts()); got != tt.wantDeliverCalls {
				t.Errorf("Channel.Deliver calls = %d, want %d", got, tt.wantDeliverCalls)
			}
			if got := ch.Delivered(); len(got) != 1 || got[0].EventID != ev.ID {
				t.Errorf("successful deliveries = %v, want [%s]", eventIDs(got), ev.ID)
			}
			if got := counter(t, env.tel, metricFailed); got != 2 {
				t.Errorf("%s = %v, want 2", metricFailed, got)
			}
			if got := counter(t, env.tel, metricSent); got != 1 {
				t.Errorf("%s = %v, want 1", metricSent, got)
			}
			if got := consumerInfo(t, env.js).Delivered.Consumer; got != 3 {
				t.Errorf("deliveries of the event = %d, want 3", got)
			}
			if got := len(deadLetters(t, env.js)); got != 0 {
				t.Errorf("dead letters = %d, want 0", got)
			}
		})
	}
}

func TestWorkerDeadLettersPoisonEvents(t *testing.T) {
	t.Parallel()
	valid := func(mod func(*events.Envelope[events.OrderCreatedData])) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			ev := newEvent("user-1")
			mod(&ev)
			return mustJSON(t, ev)
		}
	}
	tests := []struct {
		name       string
		data       func(t *testing.T) []byte
		wantReason string
		// wantLookup: the directory is asked (the event parsed) before the
		// failure.
		wantLookup bool
	}{
		{
			name:       "invalid JSON",
			data:       func(*testing.T) []byte { return []byte(`{"id": "evt-1", "data": {`) },
			wantReason: "malformed event",
		},
		{
			name:       "not JSON at all",
			data:       func(*testing.T) []byte { return []byte("hello") },
			wantReason: "malformed event",
		},
		{
			name:       "missing user id",
			data:       valid(func(e *events.Envelope[events.OrderCreatedData]) { e.Data.UserID = "" }),
			wantReason: "data.userId",
		},
		{
			name:       "missing event id",
			data:       valid(func(e *events.Envelope[events.OrderCreatedData]) { e.ID = "" }),
			wantReason: "missing [id]",
		},
		{
			name:       "qty 0",
			data:       valid(func(e *events.Envelope[events.OrderCreatedData]) { e.Data.Qty = 0 }),
			wantReason: "qty 0",
		},
		{
			name:       "wrong event type",
			data:       valid(func(e *events.Envelope[events.OrderCreatedData]) { e.Type = "dev.blueprint.orders.cancelled.v1" }),
			wantReason: "unexpected specversion",
		},
		{
			// Otherwise well formed: only the size cap rejects it.
			name:       "payload over 64 KiB",
			data:       valid(func(e *events.Envelope[events.OrderCreatedData]) { e.Data.SKU = strings.Repeat("A", 64<<10) }),
			wantReason: "malformed event",
		},
		{
			name:       "unknown user",
			data:       valid(func(e *events.Envelope[events.OrderCreatedData]) { e.Data.UserID = "user-gone" }),
			wantReason: "user_not_found",
			wantLookup: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			dir := newFakeDirectory(map[string]string{"user-1": "ada@example.com"})
			ch := &fakeChannel{}
			cfg := env.workerConfig(t, dir, ch)
			cfg.Concurrency = 1 // the poison first, then the good event
			runWorker(t, newTestWorker(t, cfg))

			poison := tt.data(t)
			hdr := nats.Header{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
			publish(t, env.js, poison, "poison-1", hdr)
			good := newEvent("user-1")
			publishEvent(t, env.js, good)

			testwait.For(t, 10*time.Second, "the good event after the poison", func() bool {
				return rowCount(t, env.db) == 1
			})
			testwait.For(t, 10*time.Second, "both events to be settled", func() bool { return settled(t, env.js) })

			if got := ch.Delivered(); len(got) != 1 || got[0].EventID != good.ID {
				t.Errorf("deliveries = %v, want only the good event %s", eventIDs(got), good.ID)
			}
			wantCalls := []string{"user-1"}
			if tt.wantLookup {
				wantCalls = []string{"user-gone", "user-1"}
			}
			if got := dir.Calls(); !slices.Equal(got, wantCalls) {
				t.Errorf("Directory.Email calls = %v, want %v (the poison looked up once at most)", got, wantCalls)
			}
			// Two deliveries in all (the consumer sequence counts redeliveries
			// too): the poison was terminated on its first, never redelivered.
			info := consumerInfo(t, env.js)
			if info.Delivered.Consumer != 2 || info.AckFloor.Stream != 2 {
				t.Errorf("consumer deliveries %d, ack floor %d; want 2 and 2 (poison terminated, not redelivered)",
					info.Delivered.Consumer, info.AckFloor.Stream)
			}

			dls := deadLetters(t, env.js)
			if len(dls) != 1 {
				t.Fatalf("dead letters = %d, want 1", len(dls))
			}
			dl := dls[0]
			if dl.Subject != DeadLetterSubject {
				t.Errorf("dead letter subject = %q, want %q", dl.Subject, DeadLetterSubject)
			}
			if !bytes.Equal(dl.Data, poison) {
				t.Errorf("dead letter data = %.80q (%d bytes), want the original %.80q (%d bytes)",
					dl.Data, len(dl.Data), poison, len(poison))
			}
			for header, want := range map[string]string{
				"Blueprint-Original-Subject": events.OrderCreated,
				"Blueprint-Attempts":         "1",
				"Blueprint-Event-Id":         "poison-1",
				"Traceparent":                hdr.Get("Traceparent"),
			} {
				if got := dl.Header.Get(header); got != want {
					t.Errorf("dead letter %s = %q, want %q", header, got, want)
				}
			}
			if got := dl.Header.Get("Blueprint-Dead-Letter-Reason"); !strings.Contains(got, tt.wantReason) {
				t.Errorf("dead letter reason = %q, want it to contain %q", got, tt.wantReason)
			}
			if got := counter(t, env.tel, metricDeadLettered); got != 1 {
				t.Errorf("%s = %v, want 1", metricDeadLettered, got)
			}
			if got := counter(t, env.tel, metricFailed); got != 0 {
				t.Errorf("%s = %v, want 0 (a poison is not retried)", metricFailed, got)
			}
		})
	}
}

// TestWorkerDeclaresConsumerAndStreams starts the worker on an empty server
// and reads back from the server every setting of the streams and the
// consumer it declares.
func TestWorkerDeclaresConsumerAndStreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		ackWait        time.Duration
		maxDeliver     int
		wantAckWait    time.Duration
		wantMaxDeliver int
	}{
		{name: "defaults", wantAckWait: 30 * time.Second, wantMaxDeliver: 5},
		{name: "configured", ackWait: 2 * time.Second, maxDeliver: 3, wantAckWait: 2 * time.Second, wantMaxDeliver: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			// Nothing exists yet: the worker's setup declares the streams and the consumer.
			if _, err := env.js.Stream(t.Context(), events.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Fatalf("Stream(%s) before Run = %v, want ErrStreamNotFound", events.Stream, err)
			}
			cfg := env.workerConfig(t, newFakeDirectory(nil), &fakeChannel{})
			cfg.AckWait, cfg.MaxDeliver = tt.ackWait, tt.maxDeliver
			runWorker(t, newTestWorker(t, cfg))

			cons := consumerInfo(t, env.js).Config
			checkSettings(t, "consumer", []setting{
				{"Durable", cons.Durable, "notifications"},
				{"FilterSubject", cons.FilterSubject, "orders.created"},
				{"DeliverPolicy", cons.DeliverPolicy, jetstream.DeliverAllPolicy},
				{"AckPolicy", cons.AckPolicy, jetstream.AckExplicitPolicy},
				{"AckWait", cons.AckWait, tt.wantAckWait},
				{"MaxDeliver", cons.MaxDeliver, tt.wantMaxDeliver},
				{"MaxAckPending", cons.MaxAckPending, 1000},
				{"BackOff steps", len(cons.BackOff), 0},
				{"ReplayPolicy", cons.ReplayPolicy, jetstream.ReplayInstantPolicy},
				// A durable consumer is never removed for being idle.
				{"InactiveThreshold", cons.InactiveThreshold, time.Duration(0)},
			})

			for _, want := range []struct {
				name, subjects string
				maxAge         time.Duration
			}{
				{events.Stream, events.StreamSubject, 7 * 24 * time.Hour},
				{DeadLetterStream, "dlq.>", 30 * 24 * time.Hour},
			} {
				s, err := env.js.Stream(t.Context(), want.name)
				if err != nil {
					t.Fatalf("Stream(%s) = %v, want it declared", want.name, err)
				}
				info, err := s.Info(t.Context())
				if err != nil {
					t.Fatalf("stream %s info: %v", want.name, err)
				}
				got := info.Config
				checkSettings(t, "stream "+want.name, []setting{
					{"Subjects", strings.Join(got.Subjects, ","), want.subjects},
					{"Storage", got.Storage, jetstream.FileStorage},
					{"Retention", got.Retention, jetstream.LimitsPolicy},
					{"MaxAge", got.MaxAge, want.maxAge},
					{"MaxMsgs", got.MaxMsgs, int64(-1)},
					{"MaxBytes", got.MaxBytes, int64(-1)},
					{"MaxMsgSize", got.MaxMsgSize, int32(-1)},
					{"Discard", got.Discard, jetstream.DiscardOld},
					{"Duplicates", got.Duplicates, 2 * time.Minute},
					{"Replicas", got.Replicas, 1},
					{"PersistMode", got.PersistMode, jetstream.DefaultPersistMode},
				})
			}
		})
	}
}

// setting is one configuration value read back from the server.
type setting struct {
	name      string
	got, want any
}

func checkSettings(t *testing.T, what string, settings []setting) {
	t.Helper()
	for _, s := range settings {
		if s.got != s.want {
			t.Errorf("%s %s = %v, want %v", what, s.name, s.got, s.want)
		}
	}
}

func TestWorkersShareTheConsumer(t *testing.T) {
	t.Parallel()
	const n = 100
	env := newTestEnv(t)
	emails := map[string]string{}
	for i := range 10 {
		emails[fmt.Sprintf("user-%d", i)] = fmt.Sprintf("u%d@example.com", i)
	}

	// Every delivery waits until both workers hold one: without that, one
	// worker could drain all 100 events before the other's first pull, and
	// the split would depend on scheduling. A worker holds at most a few
	// events (Concurrency plus its pull batch), so the other gets the rest.
	gate := make(chan struct{})
	chans := []*fakeChannel{{gate: gate}, {gate: gate}}
	for _, ch := range chans {
		cfg := env.workerConfig(t, newFakeDirectory(emails), ch)
		cfg.JS = natsbustest.Connect(t, env.srv) // a replica: its own connection
		runWorker(t, newTestWorker(t, cfg))
	}

	want := map[string]bool{}
	for i := range n {
		ev := newEvent(fmt.Sprintf("user-%d", i%10))
		want[ev.ID] = true
		publishEvent(t, env.js, ev)
	}
	testwait.For(t, 10*time.Second, "both workers to hold an event", func() bool {
		return len(chans[0].Attempts()) > 0 && len(chans[1].Attempts()) > 0
	})
	close(gate)

	testwait.For(t, 20*time.Second, fmt.Sprintf("%d notifications", n), func() bool { return rowCount(t, env.db) == n })
	testwait.For(t, 10*time.Second, "every event to be acked", func() bool { return settled(t, env.js) })

	seen := map[string]int{}
	for i, ch := range chans {
		got := ch.Delivered()
		if len(got) == 0 {
			t.Errorf("worker %d delivered nothing, want a share of the events", i)
		}
		for _, m := range got {
			seen[m.EventID]++
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("event %s delivered %d times, want 1", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("distinct events delivered = %d, want %d", len(seen), n)
	}
	byEvent := map[string]int{}
	for _, r := range rows(t, env.db) {
		byEvent[r.EventID]++
	}
	for id := range want {
		if byEvent[id] != 1 {
			t.Errorf("event %s has %d rows, want 1", id, byEvent[id])
		}
	}
}

func TestWorkerStopFinishesInFlightDelivery(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	release := make(chan struct{})
	ch := &fakeChannel{gate: release}
	w := newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		err                   error
		deliveredBeforeReturn int
	}
	done := make(chan result, 1)
	go func() { // ends when Run returns, after cancel below
		err := w.Run(ctx)
		done <- result{err, len(ch.Delivered())}
	}()

	testwait.For(t, 10*time.Second, "the consumer", func() bool {
		_, err := env.js.Consumer(t.Context(), events.Stream, ConsumerName)
		return err == nil
	})
	ev := newEvent("user-1")
	publishEvent(t, env.js, ev)
	testwait.For(t, 10*time.Second, "a delivery blocked in the channel", func() bool { return ch.InFlight() == 1 })

	cancel()
	// Run must keep waiting for the delivery. A short look cannot prove it
	// never returns early; deliveredBeforeReturn below is what proves it.
	select {
	case r := <-done:
		t.Fatalf("Run returned (%v) while a delivery was in flight", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)

	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the in-flight delivery finished")
	}
	if r.err != nil {
		t.Errorf("Run = %v, want nil", r.err)
	}
	if r.deliveredBeforeReturn != 1 {
		t.Errorf("deliveries finished when Run returned = %d, want 1", r.deliveredBeforeReturn)
	}
	// Read right after Run returned: the ack was confirmed before it did.
	if info := consumerInfo(t, env.js); info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Errorf("after Run: NumAckPending %d, ack floor %d; want 0 and 1 (acked before return)",
			info.NumAckPending, info.AckFloor.Stream)
	}
	if got := rows(t, env.db); len(got) != 1 || got[0].EventID != ev.ID {
		t.Errorf("rows = %s\nwant one for %s", fmtRows(got), ev.ID)
	}
}

func TestWorkerRunReturnsPromptlyOnCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// prepare runs before the worker starts.
		prepare func(t *testing.T, env *testEnv)
		// wantSetupFails: Run is stuck retrying its setup when cancelled.
		wantSetupFails bool
	}{
		{name: "consuming", prepare: func(*testing.T, *testEnv) {}},
		{
			// A consumer of the worker's name that acks nothing cannot be
			// updated to the explicit acks the worker declares: setup
			// fails until cancel.
			name: "setup failing",
			prepare: func(t *testing.T, env *testEnv) {
				if _, err := env.js.CreateStream(t.Context(), events.StreamConfig(1)); err != nil {
					t.Fatalf("create stream: %v", err)
				}
				if _, err := env.js.CreateConsumer(t.Context(), events.Stream,
					jetstream.ConsumerConfig{Durable: ConsumerName, AckPolicy: jetstream.AckNonePolicy}); err != nil {
					t.Fatalf("create consumer: %v", err)
				}
			},
			wantSetupFails: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			tt.prepare(t, env)
			logs := &logtest.Buffer{}
			cfg := env.workerConfig(t, newFakeDirectory(nil), &fakeChannel{})
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			w := newTestWorker(t, cfg)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }() // ends on cancel below

			want := "consuming"
			if tt.wantSetupFails {
				want = "consumer setup failed; retrying"
			}
			testwait.For(t, 10*time.Second, "log "+want, func() bool { return strings.Contains(logs.String(), want) })
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of cancel")
			}
		})
	}
}
