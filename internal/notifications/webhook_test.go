package notifications

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// testWebhookSecret is the Standard Webhooks specification's example secret.
const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// verifyWebhook checks a request the way a receiver does, following the
// Standard Webhooks specification rather than this package's code: the key
// is the base64 after whsec_, and any v1 signature in the space-separated
// list may match.
func verifyWebhook(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "."))
	mac.Write(body)
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if version, value, ok := strings.Cut(sig, ","); ok && version == "v1" && hmac.Equal([]byte(value), []byte(want)) {
			return true
		}
	}
	return false
}

// sinkRequest is one request a sink received.
type sinkRequest struct {
	Header http.Header
	Body   []byte
}

// sink is a webhook receiver. It answers each request with the next of its
// statuses (200 once they run out); the first `hang` requests get no
// answer at all until the sender gives up.
type sink struct {
	URL string

	mu       sync.Mutex
	statuses []int
	hang     int
	requests []sinkRequest
}

func newSink(t *testing.T, hang int, statuses ...int) *sink {
	t.Helper()
	s := &sink{statuses: statuses, hang: hang}
	// release ends a hanging handler if the sender never hangs up, so the
	// server's Close does not wait forever.
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("sink: read body: %v", err)
		}
		s.mu.Lock()
		n := len(s.requests)
		s.requests = append(s.requests, sinkRequest{Header: r.Header.Clone(), Body: body})
		status := http.StatusOK
		if i := n - s.hang; i >= 0 && i < len(s.statuses) {
			status = s.statuses[i]
		}
		s.mu.Unlock()
		if n < s.hang {
			select {
			case <-r.Context().Done(): // the sender timed out and hung up
			case <-release:
			}
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	s.URL = srv.URL + "/hooks/blueprint"
	return s
}

// Requests returns what the sink received so far.
func (s *sink) Requests() []sinkRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkRequest(nil), s.requests...)
}

func newTestTelemetry(t *testing.T) *telemetry.Providers {
	t.Helper()
	tel, err := telemetry.New(t.Context(), Name, "test", func(string) string { return "" })
	if err != nil {
		t.Fatalf("telemetry.New: %v", err)
	}
	return tel
}

func newTestWebhook(t *testing.T, tel *telemetry.Providers, url string, timeout time.Duration) *WebhookChannel {
	t.Helper()
	ch, err := NewWebhookChannel(WebhookConfig{
		URL: url, Secret: testWebhookSecret, Timeout: timeout, UserAgent: "blueprint-test/1",
		Logger: testLogger(t), Tracer: tel.Tracer, Meter: tel.Meter, Propagator: tel.Propagator,
		Now: time.Now,
	})
	if err != nil {
		t.Fatalf("NewWebhookChannel(%q) = %v", url, err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	return ch
}

func testMessage() Message {
	return Message{
		EventID: "evt-1", UserID: "user-1", OrderID: "ord-1", To: "ada@example.com",
		Subject: "Your order ord-1 was received", Body: "We received your order of 2 × SKU-1.",
		OccurredAt: time.Date(2025, 3, 1, 12, 30, 0, 123456000, time.UTC),
	}
}

// TestSignWebhookMatchesTheSpecification: the specification's published
// example, so any Standard Webhooks library verifies what Blueprint sends.
func TestSignWebhookMatchesTheSpecification(t *testing.T) {
	t.Parallel()
	key, err := ParseWebhookSecret(testWebhookSecret)
	if err != nil {
		t.Fatalf("ParseWebhookSecret = %v", err)
	}
	got := signWebhook(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("signWebhook = %q, want %q", got, want)
	}
}

func TestParseWebhookSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secret  string
		wantKey string // "" when an error is wanted
	}{
		{"whsec form", testWebhookSecret, "31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0"},
		{"raw 32 bytes", strings.Repeat("k", 32), strings.Repeat("6b", 32)},
		{"raw 31 bytes", strings.Repeat("k", 31), ""},
		{"empty", "", ""},
		{"whsec not base64", "whsec_not base64!", ""},
		{"whsec too short", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)), ""},
		{"whsec too long", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := ParseWebhookSecret(tt.secret)
			if tt.wantKey == "" {
				if err == nil {
					t.Fatalf("ParseWebhookSecret(%q) = %x, want an error", tt.secret, key)
				}
				if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
					t.Errorf("error %q repeats the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWebhookSecret(%q) = %v, want a key", tt.secret, err)
			}
			if got := hex.EncodeToString(key); got != tt.wantKey {
				t.Errorf("ParseWebhookSecret(%q) = %s, want %s", tt.secret, got, tt.wantKey)
			}
		})
	}
}

func TestCheckWebhookURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		url            string
		allowLinkLocal bool
		wantErr        string // "" when the URL is allowed
	}{
		{"https name", "https://hooks.example.com/blueprint", false, ""},
		{"loopback", "http://127.0.0.1:8080/hook", false, ""},
		{"loopback name", "http://localhost:8080/hook", false, ""},
		{"IPv6 loopback", "http://[::1]:8080/hook", false, ""},
		{"private", "http://10.0.12.7/hook", false, ""},
		{"in-cluster name", "http://receiver.default.svc:8080/hook", false, ""},
		{"link-local", "http://169.254.10.1/hook", false, "link-local"},
		{"IPv6 link-local", "http://[fe80::1]/hook", false, "link-local"},
		{"IPv6 link-local with zone", "http://[fe80::1%25eth0]/hook", false, "link-local"},
		{"link-local allowed", "http://169.254.10.1/hook", true, ""},
		{"IPv6 link-local allowed", "http://[fe80::1]/hook", true, ""},
		{"metadata", "http://169.254.169.254/latest/meta-data/", false, "metadata"},
		{"metadata despite allow flag", "http://169.254.169.254/latest/meta-data/", true, "metadata"},
		{"metadata IPv4-mapped", "http://[::ffff:169.254.169.254]/", true, "metadata"},
		{"AWS IPv6 metadata", "http://[fd00:ec2::254]/latest/", true, "metadata"},
		{"Alibaba metadata", "http://100.100.100.200/latest/meta-data/", false, "metadata"},
		{"GCP metadata name", "http://metadata.google.internal/computeMetadata/v1/", true, "metadata"},
		{"metadata name, upper case and rooted", "http://Metadata.Google.Internal./", false, "metadata"},
		{"unspecified", "http://0.0.0.0:8080/", false, "unspecified"},
		{"IPv6 unspecified", "http://[::]:8080/", false, "unspecified"},
		{"multicast", "http://239.1.2.3/", false, "multicast"},
		{"broadcast", "http://255.255.255.255/", false, "broadcast"},
		{"ftp", "ftp://hooks.example.com/blueprint", false, "scheme"},
		{"no scheme", "hooks.example.com/blueprint", false, "scheme"},
		{"no host", "http:///blueprint", false, "no host"},
		{"opaque", "http:hooks.example.com", false, "no host"},
		{"not a URL", "http://[::1", false, "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := CheckWebhookURL(tt.url, tt.allowLinkLocal)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckWebhookURL(%q, %v) = %v, want nil", tt.url, tt.allowLinkLocal, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("CheckWebhookURL(%q, %v) = %v, want an error about %q", tt.url, tt.allowLinkLocal, err, tt.wantErr)
			}
		})
	}
}

// TestWebhookDialRefusesAddresses: a name checked at start may resolve to
// anything later (DNS rebinding); the channel's own dialer checks the
// address it is about to connect to. The refusal comes before any packet
// is sent.
func TestWebhookDialRefusesAddresses(t *testing.T) {
	t.Parallel()
	tel := newTestTelemetry(t)
	ch := newTestWebhook(t, tel, "http://receiver.example.com/hook", time.Second)
	for _, addr := range []string{"169.254.169.254:80", "169.254.10.1:80", "[fe80::1]:80", "[fd00:ec2::254]:80", "0.0.0.0:80"} {
		conn, err := ch.transport.DialContext(t.Context(), "tcp", addr)
		if err == nil {
			conn.Close()
			t.Errorf("dial %s = connected, want refused", addr)
			continue
		}
		if !errors.Is(err, ErrUndeliverable) {
			t.Errorf("dial %s = %v, want ErrUndeliverable", addr, err)
		}
	}
	// Allowed addresses get through the check: a loopback listener answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := ch.transport.DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial loopback %s = %v, want connected", ln.Addr(), err)
	}
	conn.Close()
}

// TestWebhookSendsASignedRequest looks at one request as a receiver sees it.
func TestWebhookSendsASignedRequest(t *testing.T) {
	t.Parallel()
	s := newSink(t, 0)
	ch := newTestWebhook(t, newTestTelemetry(t), s.URL, 5*time.Second)
	m := testMessage()
	if err := ch.Deliver(t.Context(), m); err != nil {
		t.Fatalf("Deliver = %v, want nil", err)
	}
	reqs := s.Requests()
	if len(reqs) != 1 {
		t.Fatalf("sink received %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	for header, want := range map[string]string{
		"Content-Type":    "application/json",
		"User-Agent":      "blueprint-test/1",
		"Idempotency-Key": m.EventID,
		"webhook-id":      m.EventID,
	} {
		if got := r.Header.Get(header); got != want {
			t.Errorf("header %s = %q, want %q", header, got, want)
		}
	}
	if _, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64); err != nil {
		t.Errorf("webhook-timestamp = %q, want unix seconds", r.Header.Get("webhook-timestamp"))
	}
	if !verifyWebhook(testWebhookSecret, r.Header, r.Body) {
		t.Errorf("signature %q does not verify with the secret", r.Header.Get("webhook-signature"))
	}
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret, another receiver"))
	if verifyWebhook(other, r.Header, r.Body) {
		t.Errorf("signature verifies with another secret")
	}
	if verifyWebhook(testWebhookSecret, r.Header, []byte(strings.Replace(string(r.Body), "ord-1", "ord-2", 1))) {
		t.Errorf("signature verifies an altered body")
	}

	var got map[string]any
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	want := map[string]any{
		"type":      "blueprint.notification.v1",
		"timestamp": "2025-03-01T12:30:00.123456Z",
		"data": map[string]any{
			"eventId": "evt-1", "orderId": "ord-1", "userId": "user-1", "to": "ada@example.com",
			"subject": m.Subject, "body": m.Body,
		},
	}
	if gotJSON, wantJSON := mustJSON(t, got), mustJSON(t, want); string(gotJSON) != string(wantJSON) {
		t.Errorf("body = %s, want %s", gotJSON, wantJSON)
	}
}

// TestWebhookRequestIsInTheTrace: the request is a client span under the
// caller's span, and carries its context to the receiver.
func TestWebhookRequestIsInTheTrace(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.WithoutCancel(t.Context())) })
	tel := newTestTelemetry(t)
	tel.Tracer, tel.Propagator = tp, propagation.TraceContext{}
	s := newSink(t, 0)
	ch := newTestWebhook(t, tel, s.URL, 5*time.Second)

	ctx, parent := tp.Tracer("test").Start(t.Context(), "deliver webhook")
	err := ch.Deliver(ctx, testMessage())
	parent.End()
	if err != nil {
		t.Fatalf("Deliver = %v, want nil", err)
	}
	var client sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.Name() == "POST webhook" {
			client = sp
		}
	}
	if client == nil {
		t.Fatalf("no span named %q among %d ended", "POST webhook", len(rec.Ended()))
	}
	if client.SpanKind() != trace.SpanKindClient || client.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("span %q kind %v parent %v, want a client span under %v",
			client.Name(), client.SpanKind(), client.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	sc := client.SpanContext()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got := s.Requests()[0].Header.Get("traceparent"); got != want {
		t.Errorf("traceparent = %q, want %q", got, want)
	}
}

// TestWebhookClassifiesAnswers: what the receiver answers decides whether
// the worker retries (a plain error), gives up (ErrUndeliverable) or is done.
func TestWebhookClassifiesAnswers(t *testing.T) {
	t.Parallel()
	tel := newTestTelemetry(t)
	const (
		delivered = "delivered"
		transient = "transient"
		permanent = "permanent"
	)
	tests := []struct {
		status int
		want   string
	}{
		{200, delivered}, {202, delivered}, {204, delivered},
		{408, transient}, {425, transient}, {429, transient},
		{500, transient}, {502, transient}, {503, transient}, {504, transient},
		{301, permanent}, {400, permanent}, {401, permanent}, {403, permanent},
		{404, permanent}, {410, permanent}, {413, permanent}, {422, permanent},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			t.Parallel()
			s := newSink(t, 0, tt.status)
			err := newTestWebhook(t, tel, s.URL, 5*time.Second).Deliver(t.Context(), testMessage())
			got := delivered
			switch {
			case errors.Is(err, ErrUndeliverable):
				got = permanent
			case err != nil:
				got = transient
			}
			if got != tt.want {
				t.Errorf("Deliver to a sink answering %d = %v (%s), want %s", tt.status, err, got, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), strconv.Itoa(tt.status)) {
				t.Errorf("error %q does not name the status %d", err, tt.status)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		err = newTestWebhook(t, tel, "http://"+addr+"/hook", 5*time.Second).Deliver(t.Context(), testMessage())
		if err == nil || errors.Is(err, ErrUndeliverable) {
			t.Errorf("Deliver to a closed port = %v, want a transient error", err)
		}
	})
}

// TestWebhookTimeoutIsTransient: a receiver that does not answer within the
// timeout costs one attempt, and the attempt is retried.
func TestWebhookTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	s := newSink(t, 1)
	err := newTestWebhook(t, newTestTelemetry(t), s.URL, 200*time.Millisecond).Deliver(t.Context(), testMessage())
	if err == nil || errors.Is(err, ErrUndeliverable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deliver to a sink that never answers = %v, want a transient deadline error", err)
	}
	if strings.Contains(err.Error(), "hooks/blueprint") {
		t.Errorf("error %q repeats the URL", err)
	}
}

// The worker with a webhook channel, end to end: real JetStream, SQLite and
// an HTTP receiver.

func TestWorkerDeliversToWebhook(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	s := newSink(t, 0)
	ch := newTestWebhook(t, env.tel, s.URL, 5*time.Second)
	runWorker(t, newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)))

	ev := newEvent("user-1")
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	publish(t, env.js, mustJSON(t, ev), ev.ID, nats.Header{"traceparent": {"00-" + traceID + "-b7ad6b7169203331-01"}})
	testwait.For(t, 10*time.Second, "the notification", func() bool { return rowCount(t, env.db) == 1 })
	testwait.For(t, 10*time.Second, "the event to be acked", func() bool { return settled(t, env.js) })

	reqs := s.Requests()
	if len(reqs) != 1 {
		t.Fatalf("sink received %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if got := r.Header.Get("Idempotency-Key"); got != ev.ID {
		t.Errorf("Idempotency-Key = %q, want the event id %s", got, ev.ID)
	}
	if !verifyWebhook(testWebhookSecret, r.Header, r.Body) {
		t.Errorf("signature does not verify with the secret")
	}
	if got := r.Header.Get("Traceparent"); !strings.Contains(got, traceID) {
		t.Errorf("traceparent = %q, want the event's trace %s", got, traceID)
	}
	var p webhookPayload
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	if p.Data.EventID != ev.ID || p.Data.OrderID != ev.Data.OrderID || p.Data.UserID != "user-1" ||
		p.Data.To != "ada@example.com" || !p.Timestamp.Equal(ev.Time) {
		t.Errorf("payload = %+v, want event %s, order %s of user-1 to ada@example.com at %v",
			p, ev.ID, ev.Data.OrderID, ev.Time)
	}
	if got := rows(t, env.db); got[0].Channel != "webhook" || got[0].EventID != ev.ID {
		t.Errorf("row = %s, want event %s on channel webhook", fmtRows(got), ev.ID)
	}
	if got := counter(t, env.tel, metricSent); got != 1 {
		t.Errorf("%s = %v, want 1", metricSent, got)
	}
}

// TestWorkerRetriesWebhook: a receiver that fails (500) or does not answer
// in time gets the event again after the back-off, with the same id.
func TestWorkerRetriesWebhook(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		hang     int
		statuses []int
	}{
		{name: "answers 500, then 200", statuses: []int{http.StatusInternalServerError}},
		{name: "slower than the timeout, then 200", hang: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			s := newSink(t, tt.hang, tt.statuses...)
			ch := newTestWebhook(t, env.tel, s.URL, time.Second)
			runWorker(t, newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)))

			ev := newEvent("user-1")
			publishEvent(t, env.js, ev)
			testwait.For(t, 15*time.Second, "the notification after a retry", func() bool { return rowCount(t, env.db) == 1 })
			testwait.For(t, 10*time.Second, "the event to be acked", func() bool { return settled(t, env.js) })

			reqs := s.Requests()
			if len(reqs) != 2 {
				t.Fatalf("sink received %d requests, want 2", len(reqs))
			}
			for i, r := range reqs {
				if got := r.Header.Get("Idempotency-Key"); got != ev.ID {
					t.Errorf("request %d Idempotency-Key = %q, want %s", i+1, got, ev.ID)
				}
				if !verifyWebhook(testWebhookSecret, r.Header, r.Body) {
					t.Errorf("request %d signature does not verify", i+1)
				}
			}
			if got := counter(t, env.tel, metricFailed); got != 1 {
				t.Errorf("%s = %v, want 1", metricFailed, got)
			}
			if got := counter(t, env.tel, metricSent); got != 1 {
				t.Errorf("%s = %v, want 1", metricSent, got)
			}
			if got := len(deadLetters(t, env.js)); got != 0 {
				t.Errorf("dead letters = %d, want 0", got)
			}
		})
	}
}

// TestWorkerDeadLettersWebhookRefusal: a 4xx other than 408, 425 and 429
// says the receiver will never take this event, so it is dead-lettered on
// the first attempt with the answer as the reason.
func TestWorkerDeadLettersWebhookRefusal(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	s := newSink(t, 0, http.StatusBadRequest)
	ch := newTestWebhook(t, env.tel, s.URL, 5*time.Second)
	runWorker(t, newTestWorker(t, env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)))

	ev := newEvent("user-1")
	publishEvent(t, env.js, ev)
	testwait.For(t, 10*time.Second, "the event to be settled", func() bool { return settled(t, env.js) })

	dls := deadLetters(t, env.js)
	if len(dls) != 1 {
		t.Fatalf("dead letters = %d, want 1", len(dls))
	}
	if got := dls[0].Header.Get("Blueprint-Attempts"); got != "1" {
		t.Errorf("dead letter attempts = %q, want 1", got)
	}
	if got, want := dls[0].Header.Get("Blueprint-Dead-Letter-Reason"), "webhook answered 400 Bad Request"; !strings.Contains(got, want) {
		t.Errorf("dead letter reason = %q, want it to contain %q", got, want)
	}
	if got := len(s.Requests()); got != 1 {
		t.Errorf("sink received %d requests, want 1", got)
	}
	if got := rowCount(t, env.db); got != 0 {
		t.Errorf("notification rows = %d, want 0", got)
	}
	if got := counter(t, env.tel, metricDeadLettered); got != 1 {
		t.Errorf("%s = %v, want 1", metricDeadLettered, got)
	}
	if got := counter(t, env.tel, metricFailed); got != 0 {
		t.Errorf("%s = %v, want 0 (a refusal is not retried)", metricFailed, got)
	}
}
