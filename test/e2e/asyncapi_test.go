package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// asyncAPIFile is the event contract this test holds the system to.
const asyncAPIFile = "../../api/asyncapi.yaml"

// TestAsyncAPIContract reads the messages the running system really stores
// in its streams and validates each one's headers and payload against
// api/asyncapi.yaml. The schemas there are strict, so a field the code
// publishes and the document leaves out fails, as does a required one the
// code stops sending; and every header the document declares must show up
// in some message, so the document cannot promise one that is never sent.
func TestAsyncAPIContract(t *testing.T) {
	t.Parallel()
	doc, contracts := loadAsyncAPI(t, asyncAPIFile)
	for _, name := range []string{"orderCreated", "orderCreatedReplay", "deadLetter"} {
		if _, ok := contracts[name]; !ok {
			t.Fatalf("%s has no message %s", asyncAPIFile, name)
		}
	}

	// A webhook receiver that refuses every notification: a 400 is
	// permanent, so the worker dead-letters each event at its first
	// attempt, and every order yields a dead letter at once.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(refuse.Close)
	sys := startInProcess(t, t.TempDir(), map[string]string{
		"NOTIFY_WEBHOOK_URL":    refuse.URL + "/hooks",
		"NOTIFY_WEBHOOK_SECRET": "asyncapi-contract-test-webhook-secret",
	}, "--nats-embedded-addr", "127.0.0.1:0") // a TCP port, for the test's own connection

	c := newClient(t, sys.url("gateway"))
	c.signUp(uniqueEmail("asyncapi"), "asyncapi-password")
	// The first order carries vendor trace state and baggage, which the
	// trace context propagates into the event's headers: the optional
	// headers the document declares are then really published.
	var traced order
	c.do("POST", "/orders", map[string]any{"sku": "BLUEPRINT-MUG", "qty": 2},
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate", "blueprint=contract", "baggage", "suite=asyncapi").
		expect(t, http.StatusCreated).json(t, &traced)
	for _, sku := range []string{"BLUEPRINT-TEE", "BOOK-42"} {
		c.do("POST", "/orders", map[string]any{"sku": sku, "qty": 1}).expect(t, http.StatusCreated)
	}

	nc, err := nats.Connect(sys.url("nats"), nats.Timeout(5*time.Second)) // the embedded server has no users
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// A poison message, as anyone who reaches NATS could publish: not
	// JSON, no headers. It is dead-lettered without an event id.
	poison, err := js.Publish(ctx, events.OrderCreated, []byte("not json"))
	if err != nil {
		t.Fatalf("publish poison: %v", err)
	}
	waitLastSeq(ctx, t, js, notifications.DeadLetterStream, 4) // three orders and the poison

	// Replay the traced order's dead letter, as `blueprint dlq replay`
	// does: the replay is a message of its own on orders.created, and the
	// receiver still refuses it, so it becomes a dead letter of a replay.
	var tracedDead uint64
	for _, m := range storedMessages(ctx, t, js, notifications.DeadLetterStream) {
		if ev, err := events.ParseOrderCreated(m.Data); err == nil && ev.Data.OrderID == traced.ID {
			tracedDead = m.Sequence
		}
	}
	if tracedDead == 0 {
		t.Fatalf("no dead letter of order %s", traced.ID)
	}
	if _, err := notifications.NewDeadLetters(js).Replay(ctx, tracedDead); err != nil {
		t.Fatalf("replay dead letter %d: %v", tracedDead, err)
	}
	waitLastSeq(ctx, t, js, notifications.DeadLetterStream, 5)

	// Every message in ORDERS but our poison is a contract message: the
	// relay's events, and the replay (told apart by Blueprint-Replay-Of).
	seen := map[string][]nats.Header{}
	bodies := map[string][]byte{} // by event id, to compare dead letters with
	for _, m := range storedMessages(ctx, t, js, events.Stream) {
		if m.Sequence == poison.Sequence {
			continue
		}
		name, id := "orderCreated", m.Header.Get(nats.MsgIdHdr)
		if m.Header.Get("Blueprint-Replay-Of") != "" {
			name, id = "orderCreatedReplay", m.Header.Get("Blueprint-Event-Id")
		}
		contracts[name].check(t, m, true)
		seen[name] = append(seen[name], m.Header)
		bodies[id] = m.Data
	}
	for _, m := range storedMessages(ctx, t, js, notifications.DeadLetterStream) {
		// The payload schema of a dead letter accepts anything, since a
		// poison message is kept as it came: what holds it to the
		// contract is that its body is, byte for byte, the delivery's.
		contracts["deadLetter"].check(t, m, false)
		seen["deadLetter"] = append(seen["deadLetter"], m.Header)
		want := []byte("not json")
		if id := m.Header.Get("Blueprint-Event-Id"); id != "" {
			want = bodies[id]
		}
		if !bytes.Equal(m.Data, want) {
			t.Errorf("DLQ #%d body = %q, want the delivery's %q", m.Sequence, m.Data, want)
		}
	}
	for name, want := range map[string]int{"orderCreated": 3, "orderCreatedReplay": 1, "deadLetter": 4} {
		if got := len(seen[name]); got != want {
			t.Errorf("%d %s messages in the streams, want %d", got, name, want)
		}
		declared := declaredHeaders(t, doc, name)
		for _, h := range seen[name] {
			for k := range h {
				delete(declared, k)
			}
		}
		if len(declared) > 0 {
			t.Errorf("%s: headers %v are declared in %s but were in no message", name, slices.Sorted(maps.Keys(declared)), asyncAPIFile)
		}
	}
}

// messageContract is the compiled headers and payload schemas of one
// message of the document.
type messageContract struct {
	name             string
	headers, payload *jsonschema.Schema
}

// check validates m's headers, and its payload when withPayload is set. A
// failure names the message and every way it broke the schema.
func (c messageContract) check(t *testing.T, m *jetstream.RawStreamMsg, withPayload bool) {
	t.Helper()
	// NATS headers may repeat; the contract has one value per header, so a
	// repeated one becomes an array and fails its "type: string".
	hdr := map[string]any{}
	for k, vs := range m.Header {
		if len(vs) == 1 {
			hdr[k] = vs[0]
			continue
		}
		hdr[k] = make([]any, len(vs))
		for i, v := range vs {
			hdr[k].([]any)[i] = v
		}
	}
	if err := c.headers.Validate(hdr); err != nil {
		t.Errorf("%s #%d (%s) headers %v break the %s headers schema: %v", m.Subject, m.Sequence, c.name, m.Header, c.name, err)
	}
	if !withPayload {
		return
	}
	body, err := jsonschema.UnmarshalJSON(bytes.NewReader(m.Data))
	if err != nil {
		t.Errorf("%s #%d (%s) body is not JSON: %v\n%s", m.Subject, m.Sequence, c.name, err, m.Data)
		return
	}
	if err := c.payload.Validate(body); err != nil {
		t.Errorf("%s #%d (%s) payload breaks the %s payload schema: %v\n%s", m.Subject, m.Sequence, c.name, c.name, err, m.Data)
	}
}

// loadAsyncAPI parses the document and compiles the headers and payload of
// each of its messages. It returns the document, as JSON values, too.
func loadAsyncAPI(t *testing.T, file string) (map[string]any, map[string]messageContract) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var parsed any
	if err := yaml.Unmarshal(raw, &parsed); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	// Round-trip through JSON: the validator wants JSON values (json.Number,
	// map[string]any), not YAML's ints and timestamps.
	asJSON, err := json.Marshal(parsed)
	if err != nil {
		t.Fatalf("%s as JSON: %v", file, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(asJSON))
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	comp := jsonschema.NewCompiler()
	// AsyncAPI 3.0's default schema format is a superset of JSON Schema
	// draft 07; the keywords it adds (discriminator, externalDocs) are
	// unused here.
	comp.DefaultDraft(jsonschema.Draft7)
	// By default "format" only annotates; here uuid and date-time are part
	// of the contract.
	comp.AssertFormat()
	// The whole document is one resource: a schema compiled from inside it
	// resolves its "$ref": "#/components/schemas/…" against the document.
	if err := comp.AddResource(abs, doc); err != nil {
		t.Fatal(err)
	}
	messages, _ := docLookup(doc, "components", "messages").(map[string]any)
	if len(messages) == 0 {
		t.Fatalf("%s: no components/messages", file)
	}
	contracts := map[string]messageContract{}
	for name := range messages {
		mc := messageContract{name: name}
		for part, dst := range map[string]**jsonschema.Schema{"headers": &mc.headers, "payload": &mc.payload} {
			if *dst, err = comp.Compile(abs + "#/components/messages/" + name + "/" + part); err != nil {
				t.Fatalf("%s: message %s %s: %v", file, name, part, err)
			}
		}
		contracts[name] = mc
	}
	return doc.(map[string]any), contracts
}

// declaredHeaders returns the headers the document declares for a message,
// following the $refs of its headers schema.
func declaredHeaders(t *testing.T, doc map[string]any, message string) map[string]bool {
	t.Helper()
	schema := docDeref(doc, docLookup(doc, "components", "messages", message, "headers"))
	props, ok := docDeref(doc, docLookup(schema, "properties")).(map[string]any)
	if !ok {
		t.Fatalf("message %s: headers schema has no properties", message)
	}
	names := map[string]bool{}
	for k := range props {
		names[k] = true
	}
	return names
}

// docLookup walks maps by key; nil when a key is missing.
func docLookup(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// docDeref follows local "$ref": "#/a/b" pointers (the only kind the document
// uses) until it reaches a schema that is not a reference.
func docDeref(doc map[string]any, v any) any {
	for {
		ref, ok := docLookup(v, "$ref").(string)
		if !ok {
			return v
		}
		v = docLookup(doc, strings.Split(strings.TrimPrefix(ref, "#/"), "/")...)
	}
}

// waitLastSeq waits until the stream's last sequence reaches last.
func waitLastSeq(ctx context.Context, t *testing.T, js jetstream.JetStream, name string, last uint64) {
	t.Helper()
	testwait.For(t, 20*time.Second, fmt.Sprintf("%s to reach sequence %d", name, last), func() bool {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.LastSeq >= last
	})
}

// storedMessages returns every message the stream holds, getting each
// sequence in turn: what is stored, headers included, and no consumer left
// behind.
func storedMessages(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted: a dead letter that was replayed
		}
		if err != nil {
			t.Fatalf("%s #%d: %v", name, seq, err)
		}
		out = append(out, m)
	}
	return out
}
