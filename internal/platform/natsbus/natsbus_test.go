package natsbus_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// waitTimeout bounds every wait for a connection to change state. The
// client reconnects every 0.5 s plus up to 1 s of jitter, so this leaves
// room for several rounds under -race.
const waitTimeout = 15 * time.Second

var discard = slog.New(slog.DiscardHandler)

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

// startEmbedded starts a server for the test. The returned stop may be
// called early (to make an outage); the test's cleanup calls it anyway.
func startEmbedded(t *testing.T, cfg natsbus.EmbeddedConfig) (*natsbus.Embedded, func()) {
	t.Helper()
	srv, err := natsbus.StartEmbedded(cfg, discard)
	if err != nil {
		t.Fatalf("StartEmbedded(%+v) error = %v, want nil", cfg, err)
	}
	var once sync.Once
	stop := func() { once.Do(srv.Stop) }
	t.Cleanup(stop)
	return srv, stop
}

// connect opens a connection with Connect, closed when the test ends.
func connect(t *testing.T, cfg natsbus.ConnConfig) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = t.Name()
	}
	nc, err := natsbus.Connect(cfg, discard)
	if err != nil {
		t.Fatalf("Connect(%+v) error = %v, want nil", cfg, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() error = %v", err)
	}
	return nc, js
}

// roundTrip checks that nc reaches a server: a request on a fresh subject is
// answered by a subscriber on the same connection.
func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatalf("Subscribe(echo) error = %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	resp, err := nc.Request("echo", []byte("ping"), 5*time.Second)
	if err != nil {
		t.Fatalf("Request(echo) error = %v, want an answer", err)
	}
	if got := string(resp.Data); got != "ping" {
		t.Errorf("Request(echo) answer = %q, want %q", got, "ping")
	}
}

// testCtx bounds a test's calls to the server.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ready calls Ready with a bounded context, for polling.
func ready(js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return natsbus.Ready(ctx, js)
}

func TestStartEmbeddedServes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		listen func(t *testing.T) string
		// wantURL checks ClientURL; nil means it must be "".
		wantURL func(t *testing.T, listen, got string)
	}{
		{
			name:   "no listen address serves in-process connections only",
			listen: func(*testing.T) string { return "" },
		},
		{
			name:   "a listen address also serves TCP clients there",
			listen: freeAddr,
			wantURL: func(t *testing.T, listen, got string) {
				if want := "nats://" + listen; got != want {
					t.Errorf("ClientURL() = %q, want %q", got, want)
				}
			},
		},
		{
			// Port 0 means "any free port" for every other Blueprint
			// listener (port 0 works for tests). nats-server
			// reads Port 0 as its default 4222 and only -1 as random, so
			// two processes given NATS_EMBEDDED_ADDR=127.0.0.1:0 collide.
			name:   "port 0 listens on a free port the kernel picks",
			listen: func(*testing.T) string { return "127.0.0.1:0" },
			wantURL: func(t *testing.T, _, got string) {
				u, err := url.Parse(got)
				if err != nil || u.Hostname() != "127.0.0.1" {
					t.Fatalf("ClientURL() = %q, want nats://127.0.0.1:<port>", got)
				}
				if p := u.Port(); p == "0" || p == "4222" {
					t.Errorf("ClientURL() = %q, want a kernel-chosen port, not 0 or nats-server's default 4222", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			listen := tt.listen(t)
			srv, _ := startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: listen})

			inproc, _ := connect(t, natsbus.ConnConfig{Embedded: srv})
			roundTrip(t, inproc)

			got := srv.ClientURL()
			if tt.wantURL == nil {
				if got != "" {
					t.Errorf("ClientURL() = %q, want \"\" (no TCP listener)", got)
				}
				return
			}
			tt.wantURL(t, listen, got)
			if got == "" || t.Failed() {
				return
			}
			// A plain client, such as the nats CLI, reaches it over TCP.
			nc, err := nats.Connect(got, nats.Name(t.Name()))
			if err != nil {
				t.Fatalf("nats.Connect(%q) error = %v, want nil", got, err)
			}
			defer nc.Close()
			roundTrip(t, nc)
		})
	}
}

func TestStartEmbeddedRejectsAnAddressInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	addr := l.Addr().String()

	// A port in use is a configuration mistake: start-up should fail with
	// an error that says which address, not a bare "not ready".
	srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: addr}, discard)
	if err == nil {
		srv.Stop()
		t.Fatalf("StartEmbedded(Listen: %s) with the port in use = nil error, want an error", addr)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("StartEmbedded(Listen: %s) with the port in use error = %q, want it to name %s", addr, err, addr)
	}
}

func TestEmbeddedKeepsJetStreamDataAcrossRestarts(t *testing.T) {
	t.Parallel()
	storeDir := t.TempDir()
	const subject, data = "keep.one", "kept across restarts"

	srv, stop := startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: storeDir})
	nc, js := connect(t, natsbus.ConnConfig{Embedded: srv})
	ctx := testCtx(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}}); err != nil {
		t.Fatalf("CreateStream(KEEP) error = %v", err)
	}
	if _, err := js.Publish(ctx, subject, []byte(data)); err != nil {
		t.Fatalf("Publish(%s) error = %v", subject, err)
	}
	nc.Close()
	stop()

	srv, _ = startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: storeDir})
	_, js = connect(t, natsbus.ConnConfig{Embedded: srv})
	stream, err := js.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatalf("Stream(KEEP) after restart error = %v, want the stream", err)
	}
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("GetMsg(1) after restart error = %v, want the message", err)
	}
	if msg.Subject != subject || string(msg.Data) != data {
		t.Errorf("GetMsg(1) after restart = %s %q, want %s %q", msg.Subject, msg.Data, subject, data)
	}
}

func TestConnectWaitsForAServerThatIsNotUpYet(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	nc, js := connect(t, natsbus.ConnConfig{URL: "nats://" + addr})

	// Connect returned a connection although nobody listens: a service
	// starts before its broker and becomes ready when the broker does.
	if st := nc.Status(); st == nats.CONNECTED {
		t.Fatalf("Status() with no server = %v, want not CONNECTED", st)
	}
	if err := ready(js); err == nil {
		t.Errorf("Ready() with no server = nil, want an error")
	}
	if err := nc.Publish("orders.created", []byte("{}")); err == nil {
		t.Errorf("Publish() with no server = nil, want an error rather than a buffered message")
	}

	startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: addr})
	testwait.For(t, waitTimeout, "the connection to reach the new server", func() bool { return nc.Status() == nats.CONNECTED })
	testwait.For(t, waitTimeout, "Ready() to be nil", func() bool { return ready(js) == nil })
}

func TestConnectFailFast(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	nc, err := natsbus.Connect(natsbus.ConnConfig{Name: t.Name(), URL: "nats://" + addr, FailFast: true}, discard)
	if err == nil {
		nc.Close()
		t.Fatalf("Connect(FailFast) with no server = nil error, want the connection error")
	}
	if !errors.Is(err, nats.ErrNoServers) {
		t.Errorf("Connect(FailFast) with no server = %v, want it to wrap nats.ErrNoServers", err)
	}

	startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: addr})
	nc, js := connect(t, natsbus.ConnConfig{URL: "nats://" + addr, FailFast: true})
	if st := nc.Status(); st != nats.CONNECTED {
		t.Errorf("Status() after Connect(FailFast) = %v, want CONNECTED", st)
	}
	if err := ready(js); err != nil {
		t.Errorf("Ready() = %v, want nil", err)
	}
}

func TestConnectReconnectsAfterAnOutage(t *testing.T) {
	t.Parallel()
	addr, storeDir := freeAddr(t), t.TempDir()
	_, stop := startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: storeDir, Listen: addr})
	nc, js := connect(t, natsbus.ConnConfig{URL: "nats://" + addr})
	testwait.For(t, waitTimeout, "the first connection", func() bool { return nc.Status() == nats.CONNECTED })
	if err := ready(js); err != nil {
		t.Fatalf("Ready() while connected = %v, want nil", err)
	}

	stop()
	testwait.For(t, waitTimeout, "the connection to notice the outage", func() bool { return nc.Status() != nats.CONNECTED })
	if err := ready(js); err == nil {
		t.Errorf("Ready() during the outage = nil, want an error")
	}

	// ReconnectBufSize(-1): nothing is buffered blind during an outage. The
	// caller learns at once that the message did not leave (the outbox keeps
	// it) instead of waiting for an ack that a buffered message never gets.
	publishes := []struct {
		name    string
		publish func(ctx context.Context) error
	}{
		{
			name:    "core publish",
			publish: func(context.Context) error { return nc.Publish("keep.one", []byte("x")) },
		},
		{
			name: "jetstream publish",
			publish: func(ctx context.Context) error {
				_, err := js.Publish(ctx, "keep.one", []byte("x"))
				return err
			},
		},
	}
	for _, p := range publishes {
		t.Run(p.name, func(t *testing.T) {
			// A generous deadline only so a buffered publish cannot hang
			// the test: the check is on the error, not on the time.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := p.publish(ctx)
			if !errors.Is(err, nats.ErrReconnectBufExceeded) {
				t.Errorf("%s during the outage = %v, want %v", p.name, err, nats.ErrReconnectBufExceeded)
			}
		})
	}

	startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: storeDir, Listen: addr}) // same store, same address
	testwait.For(t, waitTimeout, "the connection to come back", func() bool { return nc.Status() == nats.CONNECTED })
	testwait.For(t, waitTimeout, "Ready() to be nil again", func() bool { return ready(js) == nil })
	if err := nc.Publish("keep.one", []byte("x")); err != nil {
		t.Errorf("Publish() after reconnecting = %v, want nil", err)
	}
}

func TestHeaderCarriesTraceContext(t *testing.T) {
	t.Parallel()
	srv, _ := startEmbedded(t, natsbus.EmbeddedConfig{StoreDir: t.TempDir()})
	nc, _ := connect(t, natsbus.ConnConfig{Embedded: srv})

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatalf("ParseTraceState: %v", err)
	}
	tests := []struct {
		name     string
		sc       trace.SpanContext
		wantKeys []string
	}{
		{
			name:     "sampled span",
			sc:       trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}),
			wantKeys: []string{"traceparent"},
		},
		{
			name:     "unsampled span with trace state",
			sc:       trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceState: state}),
			wantKeys: []string{"traceparent", "tracestate"},
		},
	}
	prop := propagation.TraceContext{}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the subtests share one subscription's inbox.
			subject := "trace." + string(rune('a'+i))
			sub, err := nc.SubscribeSync(subject)
			if err != nil {
				t.Fatalf("SubscribeSync(%s) error = %v", subject, err)
			}
			defer func() { _ = sub.Unsubscribe() }()

			msg := nats.NewMsg(subject)
			prop.Inject(trace.ContextWithSpanContext(context.Background(), tt.sc), natsbus.Header(msg.Header))
			got := natsbus.Header(msg.Header).Keys()
			slices.Sort(got)
			if !slices.Equal(got, tt.wantKeys) {
				t.Errorf("Keys() after Inject = %v, want %v", got, tt.wantKeys)
			}
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatalf("PublishMsg(%s) error = %v", subject, err)
			}
			in, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("NextMsg(%s) error = %v", subject, err)
			}

			// The consumer's side: the context comes out of the delivered
			// message as it went in, marked remote.
			out := trace.SpanContextFromContext(prop.Extract(context.Background(), natsbus.Header(in.Header)))
			if out.TraceID() != tt.sc.TraceID() || out.SpanID() != tt.sc.SpanID() {
				t.Errorf("Extract() = trace %s span %s, want trace %s span %s",
					out.TraceID(), out.SpanID(), tt.sc.TraceID(), tt.sc.SpanID())
			}
			if out.TraceFlags() != tt.sc.TraceFlags() {
				t.Errorf("Extract() flags = %v, want %v", out.TraceFlags(), tt.sc.TraceFlags())
			}
			if got, want := out.TraceState().String(), tt.sc.TraceState().String(); got != want {
				t.Errorf("Extract() trace state = %q, want %q", got, want)
			}
			if !out.IsRemote() {
				t.Errorf("Extract().IsRemote() = false, want true")
			}
		})
	}
}

func TestHeaderGetSetKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		h        natsbus.Header
		set      [][2]string
		wantKeys []string
		wantGet  map[string]string
	}{
		{
			name:    "nil header reads as empty",
			h:       nil,
			wantGet: map[string]string{"traceparent": ""},
		},
		{
			name:     "set replaces a value and keys lists each name once",
			h:        natsbus.Header{"Nats-Msg-Id": {"evt-1"}},
			set:      [][2]string{{"traceparent", "a"}, {"traceparent", "b"}, {"baggage", "k=v"}},
			wantKeys: []string{"Nats-Msg-Id", "baggage", "traceparent"},
			wantGet:  map[string]string{"traceparent": "b", "baggage": "k=v", "Nats-Msg-Id": "evt-1", "missing": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, kv := range tt.set {
				tt.h.Set(kv[0], kv[1])
			}
			got := tt.h.Keys()
			slices.Sort(got)
			if len(got) != len(tt.wantKeys) || (len(got) > 0 && !slices.Equal(got, tt.wantKeys)) {
				t.Errorf("Keys() = %v, want %v", got, tt.wantKeys)
			}
			for k, want := range tt.wantGet {
				if got := tt.h.Get(k); got != want {
					t.Errorf("Get(%q) = %q, want %q", k, got, want)
				}
			}
		})
	}
}
