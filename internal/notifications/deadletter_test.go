package notifications

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

const testTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// TestDeadLettersListAndReplay dead-letters a poison event and a spent one
// through the real worker, lists them, and replays each: the spent event is
// notified and leaves the DLQ; the poison, still poison, comes back as a
// new dead letter.
func TestDeadLettersListAndReplay(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	// The channel fails the spent event's two attempts, then works.
	ch := &fakeChannel{failures: 2}
	cfg := env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)
	cfg.Concurrency = 1 // the poison first
	cfg.MaxDeliver = 2
	runWorker(t, newTestWorker(t, cfg))

	poison := []byte(`{"id": "poison-1", "data": {`)
	publish(t, env.js, poison, "poison-1", nats.Header{"traceparent": {testTraceparent}})
	spent := newEvent("user-1")
	publishEvent(t, env.js, spent)
	testwait.For(t, 15*time.Second, "two dead letters", func() bool { return len(deadLetters(t, env.js)) == 2 })

	dlq := NewDeadLetters(env.js)
	got, err := dlq.List(t.Context())
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("List = %+v, want 2 entries", got)
	}
	for i, want := range []DeadLetter{
		{Seq: 1, EventID: "poison-1", Subject: events.OrderCreated, Attempts: 1, Reason: "malformed event"},
		{Seq: 2, EventID: spent.ID, OrderID: spent.Data.OrderID, Subject: events.OrderCreated, Attempts: 2, Reason: "channel is down"},
	} {
		g := got[i]
		if g.Seq != want.Seq || g.EventID != want.EventID || g.OrderID != want.OrderID ||
			g.Subject != want.Subject || g.Attempts != want.Attempts || !strings.Contains(g.Reason, want.Reason) {
			t.Errorf("List()[%d] = %+v, want %+v (reason containing %q)", i, g, want, want.Reason)
		}
		if g.Time.IsZero() {
			t.Errorf("List()[%d].Time is zero, want when it was dead-lettered", i)
		}
	}

	// The spent event: replayed, notified, gone from the DLQ.
	r, err := dlq.Replay(t.Context(), 2)
	if err != nil {
		t.Fatalf("Replay(2) = %v", err)
	}
	if r.EventID != spent.ID || r.StreamSeq != 3 || r.Duplicate {
		t.Errorf("Replay(2) = %+v, want event %s at ORDERS #3, not a duplicate", r, spent.ID)
	}
	testwait.For(t, 10*time.Second, "the replayed event's notification", func() bool { return rowCount(t, env.db) == 1 })
	testwait.For(t, 10*time.Second, "the replayed event to be acked", func() bool { return settled(t, env.js) })
	if rs := rows(t, env.db); rs[0].EventID != spent.ID || rs[0].OrderID != spent.Data.OrderID {
		t.Errorf("row = %+v, want event %s of order %s", rs[0], spent.ID, spent.Data.OrderID)
	}
	if got := ch.Delivered(); len(got) != 1 || got[0].EventID != spent.ID {
		t.Errorf("deliveries = %v, want [%s]", eventIDs(got), spent.ID)
	}
	copied := streamMsg(t, env.js, events.Stream, 3)
	if copied.Subject != events.OrderCreated || string(copied.Data) != string(mustJSON(t, spent)) {
		t.Errorf("ORDERS #3 = %s %s, want the event on %s", copied.Subject, copied.Data, events.OrderCreated)
	}
	for header, want := range map[string]string{
		nats.MsgIdHdr:      "replay-2-" + spent.ID,
		hdrEventID:         spent.ID,
		hdrReplayOf:        "2",
		hdrReason:          "",
		hdrAttempts:        "",
		hdrOriginalSubject: "",
	} {
		if got := copied.Header.Get(header); got != want {
			t.Errorf("replayed copy's %s = %q, want %q", header, got, want)
		}
	}
	if _, err := dlq.Replay(t.Context(), 2); !errors.Is(err, ErrNoDeadLetter) {
		t.Errorf("Replay(2) again = %v, want ErrNoDeadLetter", err)
	}

	// The poison: replayed, dead-lettered again as a new entry, its event id
	// and trace kept, not dropped as a duplicate of its first dead letter.
	if _, err := dlq.Replay(t.Context(), 1); err != nil {
		t.Fatalf("Replay(1) = %v", err)
	}
	testwait.For(t, 10*time.Second, "the poison to be dead-lettered again", func() bool {
		dls, err := dlq.List(t.Context())
		if err != nil {
			t.Fatalf("List = %v", err)
		}
		return len(dls) == 1 && dls[0].Seq == 3
	})
	again := streamMsg(t, env.js, DeadLetterStream, 3)
	for header, want := range map[string]string{hdrEventID: "poison-1", hdrReplayOf: "1", "traceparent": testTraceparent} {
		if got := again.Header.Get(header); got != want {
			t.Errorf("second dead letter's %s = %q, want %q", header, got, want)
		}
	}
	if string(again.Data) != string(poison) {
		t.Errorf("second dead letter = %q, want the poison %q", again.Data, poison)
	}
	if got := counter(t, env.tel, metricDeadLettered); got != 3 {
		t.Errorf("%s = %v, want 3", metricDeadLettered, got)
	}
	if got := counter(t, env.tel, metricSent); got != 1 {
		t.Errorf("%s = %v, want 1", metricSent, got)
	}
}

// TestReplayIsIdempotentPerEntry: a replay that published but did not get
// to delete its entry (it crashed, or someone else replayed the same entry)
// is not published twice when it is run again.
func TestReplayIsIdempotentPerEntry(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dir := newFakeDirectory(map[string]string{})
	ch := &fakeChannel{}
	runWorker(t, newTestWorker(t, env.workerConfig(t, dir, ch)))

	// The user is not there yet: dead-lettered at once.
	ev := newEvent("user-late")
	publishEvent(t, env.js, ev)
	testwait.For(t, 10*time.Second, "the dead letter", func() bool { return len(deadLetters(t, env.js)) == 1 })
	dir.mu.Lock()
	dir.emails["user-late"] = "late@example.com"
	dir.mu.Unlock()

	// The first replay's publish, as it went out before the crash.
	dl := deadLetters(t, env.js)[0]
	first := nats.NewMsg(events.OrderCreated)
	first.Data = dl.Data
	first.Header.Set(hdrEventID, ev.ID)
	ack, err := env.js.PublishMsg(t.Context(), first, jetstream.WithMsgID(replayMsgID(dl.Sequence, ev.ID)))
	if err != nil {
		t.Fatalf("publish the first replay: %v", err)
	}

	dlq := NewDeadLetters(env.js)
	r, err := dlq.Replay(t.Context(), dl.Sequence)
	if err != nil {
		t.Fatalf("Replay(%d) = %v", dl.Sequence, err)
	}
	if !r.Duplicate || r.StreamSeq != ack.Sequence {
		t.Errorf("Replay(%d) = %+v, want a duplicate of ORDERS #%d", dl.Sequence, r, ack.Sequence)
	}
	if left, err := dlq.List(t.Context()); err != nil || len(left) != 0 {
		t.Errorf("List after replay = %+v, %v; want empty", left, err)
	}
	testwait.For(t, 10*time.Second, "the notification", func() bool { return rowCount(t, env.db) == 1 })
	testwait.For(t, 10*time.Second, "every event to be settled", func() bool { return settled(t, env.js) })
	s, err := env.js.Stream(t.Context(), events.Stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("ORDERS holds %d messages, want 2 (the event and one replay)", info.State.Msgs)
	}
	if got := ch.Delivered(); len(got) != 1 || got[0].EventID != ev.ID {
		t.Errorf("deliveries = %v, want [%s]", eventIDs(got), ev.ID)
	}
	if _, err := dlq.Replay(t.Context(), dl.Sequence); !errors.Is(err, ErrNoDeadLetter) {
		t.Errorf("Replay(%d) once more = %v, want ErrNoDeadLetter", dl.Sequence, err)
	}
}

// TestReplayOfAnEventWithoutID: a message published with no Nats-Msg-Id
// (`nats pub`) has no event id; dead-lettered again after a replay, it still
// has none, rather than the replay's own message id.
func TestReplayOfAnEventWithoutID(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	runWorker(t, newTestWorker(t, env.workerConfig(t, newFakeDirectory(nil), &fakeChannel{})))
	publish(t, env.js, []byte("not json"), "", nil)
	testwait.For(t, 10*time.Second, "the dead letter", func() bool { return len(deadLetters(t, env.js)) == 1 })

	dlq := NewDeadLetters(env.js)
	r, err := dlq.Replay(t.Context(), 1)
	if err != nil {
		t.Fatalf("Replay(1) = %v", err)
	}
	if r.EventID != "" {
		t.Errorf("Replay(1).EventID = %q, want none", r.EventID)
	}
	if got := streamMsg(t, env.js, events.Stream, r.StreamSeq).Header.Get(nats.MsgIdHdr); got != "replay-1" {
		t.Errorf("replayed copy's Nats-Msg-Id = %q, want replay-1", got)
	}
	testwait.For(t, 10*time.Second, "the second dead letter", func() bool { return len(deadLetters(t, env.js)) == 1 && deadLetters(t, env.js)[0].Sequence == 2 })
	got, err := dlq.List(t.Context())
	if err != nil || len(got) != 1 {
		t.Fatalf("List = %+v, %v; want one entry", got, err)
	}
	if got[0].EventID != "" {
		t.Errorf("second dead letter's event id = %q, want none", got[0].EventID)
	}
}

func TestReplayAll(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dir := newFakeDirectory(map[string]string{})
	runWorker(t, newTestWorker(t, env.workerConfig(t, dir, &fakeChannel{})))
	want := map[string]bool{}
	for _, user := range []string{"user-a", "user-b", "user-c"} {
		ev := newEvent(user)
		want[ev.ID] = true
		publishEvent(t, env.js, ev)
	}
	testwait.For(t, 10*time.Second, "three dead letters", func() bool { return len(deadLetters(t, env.js)) == 3 })
	dir.mu.Lock()
	for _, user := range []string{"user-a", "user-b", "user-c"} {
		dir.emails[user] = user + "@example.com"
	}
	dir.mu.Unlock()

	dlq := NewDeadLetters(env.js)
	replayed, err := dlq.ReplayAll(t.Context())
	if err != nil {
		t.Fatalf("ReplayAll = %v", err)
	}
	if len(replayed) != 3 {
		t.Fatalf("ReplayAll replayed %d, want 3: %+v", len(replayed), replayed)
	}
	for i, r := range replayed {
		if r.Seq != uint64(i+1) || !want[r.EventID] {
			t.Errorf("ReplayAll()[%d] = %+v, want DLQ #%d, one of the events", i, r, i+1)
		}
	}
	testwait.For(t, 10*time.Second, "three notifications", func() bool { return rowCount(t, env.db) == 3 })
	if left, err := dlq.List(t.Context()); err != nil || len(left) != 0 {
		t.Errorf("List after ReplayAll = %+v, %v; want empty", left, err)
	}
	if again, err := dlq.ReplayAll(t.Context()); err != nil || len(again) != 0 {
		t.Errorf("ReplayAll again = %+v, %v; want nothing to do", again, err)
	}
}

// TestDeadLettersBeforeAnyWorker: on a server where no worker ever ran there
// is no DLQ stream, and so nothing dead-lettered.
func TestDeadLettersBeforeAnyWorker(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	dlq := NewDeadLetters(env.js)
	if got, err := dlq.List(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("List = %+v, %v; want nothing", got, err)
	}
	if _, err := dlq.Replay(t.Context(), 1); !errors.Is(err, ErrNoDeadLetter) {
		t.Errorf("Replay(1) = %v, want ErrNoDeadLetter", err)
	}
	if got, err := dlq.ReplayAll(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("ReplayAll = %+v, %v; want nothing", got, err)
	}
}

// streamMsg reads the message at seq of a stream.
func streamMsg(t *testing.T, js jetstream.JetStream, stream string, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	m, err := s.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatalf("%s #%d: %v", stream, seq, err)
	}
	return m
}
