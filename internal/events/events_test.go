package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
)

func validEvent() events.Envelope[events.OrderCreatedData] {
	return events.NewOrderCreated("evt-0190b5a2", events.OrderCreatedData{
		OrderID:   "ord-1",
		UserID:    "usr-1",
		SKU:       "BOOK-42",
		Qty:       3,
		CreatedAt: time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC),
	})
}

func TestParseOrderCreatedAcceptsNewOrderCreated(t *testing.T) {
	t.Parallel()
	want := validEvent()
	body, err := json.Marshal(want)
	if err != nil {
		t.Fatalf("Marshal(NewOrderCreated(...)) = %v", err)
	}
	got, err := events.ParseOrderCreated(body)
	if err != nil {
		t.Fatalf("ParseOrderCreated(%s) = %v, want nil", body, err)
	}
	if got.ID != want.ID || got.Type != events.TypeOrderCreated || got.Source != events.SourceOrders ||
		got.SpecVersion != "1.0" || got.Subject != want.Data.OrderID || !got.Time.Equal(want.Time) {
		t.Errorf("ParseOrderCreated(%s) envelope = %+v, want %+v", body, got, want)
	}
	if got.Data.OrderID != want.Data.OrderID || got.Data.UserID != want.Data.UserID || got.Data.SKU != want.Data.SKU ||
		got.Data.Qty != want.Data.Qty || !got.Data.CreatedAt.Equal(want.Data.CreatedAt) {
		t.Errorf("ParseOrderCreated(%s) data = %+v, want %+v", body, got.Data, want.Data)
	}
}

// TestParseOrderCreatedIgnoresNewFields: payloads only gain fields, so a
// worker of the previous version must still accept a newer event.
func TestParseOrderCreatedIgnoresNewFields(t *testing.T) {
	t.Parallel()
	body := mutate(t, func(m map[string]any) {
		m["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		m["data"].(map[string]any)["currency"] = "EUR"
	})
	if _, err := events.ParseOrderCreated(body); err != nil {
		t.Errorf("ParseOrderCreated(%s) = %v, want nil", body, err)
	}
}

// mutate returns the JSON of a valid event changed by fn.
func mutate(t *testing.T, fn func(m map[string]any)) []byte {
	t.Helper()
	raw, err := json.Marshal(validEvent())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseOrderCreatedRejects(t *testing.T) {
	t.Parallel()
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	tests := []struct {
		name string
		body []byte
	}{
		{name: "empty", body: []byte(``)},
		{name: "not json", body: []byte(`order created!`)},
		{name: "truncated", body: []byte(`{"specversion":"1.0","id":"e1"`)},
		{name: "null", body: []byte(`null`)},
		{name: "array", body: []byte(`[]`)},
		{name: "empty object", body: []byte(`{}`)},
		{name: "missing id", body: mutate(t, func(m map[string]any) { delete(m, "id") })},
		{name: "empty id", body: mutate(t, func(m map[string]any) { m["id"] = "" })},
		{name: "missing type", body: mutate(t, func(m map[string]any) { delete(m, "type") })},
		{name: "wrong type", body: mutate(t, func(m map[string]any) { m["type"] = "dev.blueprint.orders.cancelled.v1" })},
		{name: "next version of the type", body: mutate(t, func(m map[string]any) { m["type"] = "dev.blueprint.orders.created.v2" })},
		{name: "missing specversion", body: mutate(t, func(m map[string]any) { delete(m, "specversion") })},
		{name: "wrong specversion", body: mutate(t, func(m map[string]any) { m["specversion"] = "0.3" })},
		{name: "missing data", body: mutate(t, func(m map[string]any) { delete(m, "data") })},
		{name: "data not an object", body: mutate(t, func(m map[string]any) { m["data"] = "ord-1" })},
		{name: "missing orderId", body: mutate(t, func(m map[string]any) { delete(data(m), "orderId") })},
		{name: "missing userId", body: mutate(t, func(m map[string]any) { delete(data(m), "userId") })},
		{name: "missing sku", body: mutate(t, func(m map[string]any) { delete(data(m), "sku") })},
		{name: "empty sku", body: mutate(t, func(m map[string]any) { data(m)["sku"] = "" })},
		{name: "missing qty", body: mutate(t, func(m map[string]any) { delete(data(m), "qty") })},
		{name: "zero qty", body: mutate(t, func(m map[string]any) { data(m)["qty"] = 0 })},
		{name: "negative qty", body: mutate(t, func(m map[string]any) { data(m)["qty"] = -1 })},
		{name: "qty as string", body: mutate(t, func(m map[string]any) { data(m)["qty"] = "3" })},
		{name: "fractional qty", body: mutate(t, func(m map[string]any) { data(m)["qty"] = 1.5 })},
		{name: "orderId as number", body: mutate(t, func(m map[string]any) { data(m)["orderId"] = 7 })},
		{name: "bad time", body: mutate(t, func(m map[string]any) { m["time"] = "yesterday" })},
		{name: "NUL in orderId", body: mutate(t, func(m map[string]any) { data(m)["orderId"] = "o\x00" })},
		{name: "escape sequence in userId", body: mutate(t, func(m map[string]any) { data(m)["userId"] = "\x1b[2Ju" })},
		{name: "newline in the event id", body: mutate(t, func(m map[string]any) { m["id"] = "e\nforged log line" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := events.ParseOrderCreated(tt.body)
			if !errors.Is(err, events.ErrMalformed) {
				t.Errorf("ParseOrderCreated(%s) = %v, want an error wrapping ErrMalformed", tt.body, err)
			}
		})
	}
}

func TestStreamConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		replicas int
		want     int
	}{
		{replicas: -1, want: 1},
		{replicas: 0, want: 1},
		{replicas: 1, want: 1},
		{replicas: 3, want: 3},
	}
	for _, tt := range tests {
		cfg := events.StreamConfig(tt.replicas)
		if cfg.Replicas != tt.want {
			t.Errorf("StreamConfig(%d).Replicas = %d, want %d", tt.replicas, cfg.Replicas, tt.want)
		}
		if cfg.Name != events.Stream || cfg.Duplicates <= 0 {
			t.Errorf("StreamConfig(%d) = name %q duplicates %v, want %q with a duplicates window", tt.replicas, cfg.Name, cfg.Duplicates, events.Stream)
		}
		// orders.created must land in the stream its consumers read.
		prefix, ok := strings.CutSuffix(cfg.Subjects[0], ">")
		if len(cfg.Subjects) != 1 || !ok || !strings.HasPrefix(events.OrderCreated, prefix) {
			t.Errorf("StreamConfig(%d).Subjects = %v, want a wildcard covering %q", tt.replicas, cfg.Subjects, events.OrderCreated)
		}
	}
}

// TestStreamConfigOnTheServer declares the stream on a real server and reads
// its configuration back: every setting is what the server keeps, not only
// what was asked for.
func TestStreamConfigOnTheServer(t *testing.T) {
	t.Parallel()
	_, js := natsbustest.Start(t)
	if _, err := js.CreateOrUpdateStream(t.Context(), events.StreamConfig(1)); err != nil {
		t.Fatalf("CreateOrUpdateStream: %v", err)
	}
	s, err := js.Stream(t.Context(), events.Stream)
	if err != nil {
		t.Fatalf("Stream(%s): %v", events.Stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	got := info.Config
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"Name", got.Name, "ORDERS"},
		{"Subjects", strings.Join(got.Subjects, ","), "orders.>"},
		{"Storage", got.Storage, jetstream.FileStorage},
		{"Retention", got.Retention, jetstream.LimitsPolicy},
		{"MaxAge", got.MaxAge, 7 * 24 * time.Hour},
		{"MaxMsgs", got.MaxMsgs, int64(-1)},
		{"MaxBytes", got.MaxBytes, int64(-1)},
		{"MaxMsgSize", got.MaxMsgSize, int32(-1)},
		{"Discard", got.Discard, jetstream.DiscardOld},
		{"Duplicates", got.Duplicates, 2 * time.Minute},
		{"Replicas", got.Replicas, 1},
		{"PersistMode", got.PersistMode, jetstream.DefaultPersistMode},
	} {
		if c.got != c.want {
			t.Errorf("stream %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestDeclareStream creates ORDERS, leaves it alone when it is already as
// StreamConfig says (no update, which would race a consumer being added),
// and brings a stream configured otherwise back to it. Updates are counted
// by the advisories the server publishes for them.
func TestDeclareStream(t *testing.T) {
	t.Parallel()
	_, js := natsbustest.Start(t)
	updates, err := js.Conn().SubscribeSync("$JS.EVENT.ADVISORY.STREAM.UPDATED." + events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for range 2 { // create, then find it as it should be
		if err := events.DeclareStream(ctx, js, 1); err != nil {
			t.Fatalf("DeclareStream() = %v", err)
		}
	}
	changed := events.StreamConfig(1)
	changed.MaxAge = time.Hour
	if _, err := js.UpdateStream(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if err := events.DeclareStream(ctx, js, 1); err != nil {
		t.Fatalf("DeclareStream() over a changed stream = %v", err)
	}
	s, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != events.StreamConfig(1).MaxAge {
		t.Errorf("MaxAge after DeclareStream = %v, want %v", got, events.StreamConfig(1).MaxAge)
	}
	// Two updates: the test's and the one undoing it; a third would be an
	// update of a stream that needed none.
	n := 0
	for ; ; n++ {
		if _, err := updates.NextMsg(time.Second); err != nil {
			break
		}
	}
	if n != 2 {
		t.Errorf("stream updates = %d, want 2 (the test's change and its correction)", n)
	}
}
