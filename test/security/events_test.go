//go:build security

package security

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/test/harness"
)

var _ = addClass("events", attackEvents)

// attackEvents puts malformed events in the stream, as someone who reached
// NATS could: each must become a dead letter at once, and the worker must
// go on notifying real orders. Where NATS has users, a stranger cannot even
// connect, and the events are published as the operators' admin user.
func attackEvents(t *testing.T, s *system) {
	seed := ""
	if s.mode != "embedded" {
		seed = filepath.Join(s.keys, "nats-admin.nk")
		start := time.Now()
		_, err := harness.ConnectNATS(s.natsURL, "")
		record(t, s, "a NATS connection without a user", "refused", fmt.Sprint(err), time.Since(start))
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("connecting to NATS with no user: %v, want an authorization violation", err)
		}
	}
	nc, err := harness.ConnectNATS(s.natsURL, seed)
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deadBefore := streamMessages(ctx, t, js, notifications.DeadLetterStream)

	poison := map[string]string{
		"not JSON":                   "\x00\xff not json",
		"JSON without the fields":    `{"specversion":"1.0"}`,
		"a NUL in the order id":      `{"specversion":"1.0","id":"e-nul","source":"x","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o\u0000","userId":"u","sku":"S","qty":1}}`,
		"an escape in the user id":   `{"specversion":"1.0","id":"e-esc","source":"x","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o","userId":"\u001b[2J","sku":"S","qty":1}}`,
		"a payload of 1 MB":          `{"specversion":"1.0","id":"e-big","pad":"` + strings.Repeat("x", 1<<20-200) + `"}`,
		"a user that does not exist": fmt.Sprintf(`{"specversion":"1.0","id":"e-ghost-%d","source":"x","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o-ghost","userId":"00000000-0000-7000-8000-000000000000","sku":"S","qty":1}}`, time.Now().UnixNano()),
	}
	for name, body := range poison {
		msg := nats.NewMsg(events.OrderCreated)
		msg.Data = []byte(body)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publish %s: %v", name, err)
		}
	}
	start := time.Now()
	for streamMessages(ctx, t, js, notifications.DeadLetterStream) < deadBefore+len(poison) {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("dead letters: %d new after 20 s, want %d", streamMessages(ctx, t, js, notifications.DeadLetterStream)-deadBefore, len(poison))
		}
		time.Sleep(100 * time.Millisecond)
	}
	record(t, s, fmt.Sprintf("%d malformed events in the stream", len(poison)), "dead-lettered, the worker unharmed",
		fmt.Sprintf("%d dead letters", streamMessages(ctx, t, js, notifications.DeadLetterStream)-deadBefore), time.Since(start))

	// The worker still notifies a real order.
	c := newClient(t, s)
	c.signUp("events password 1")
	id := c.order("after-poison")
	for deadline := time.Now().Add(20 * time.Second); ; {
		a := c.send("GET", "/notifications", "")
		if a.status == http.StatusOK && strings.Contains(string(a.body), id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification of a real order within 20 s of the poison: %v %s", a, a.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func streamMessages(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) int {
	t.Helper()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return 0 // not declared yet
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return int(info.State.Msgs)
}

// jwtLike matches a compact JWS: base64url JSON header, payload and signature.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)

// logsHoldNoSecret searches every line every process logged during the
// attacks for the passwords and tokens the suite used, the deployment's
// private keys and NATS seeds, and anything shaped like a token.
func logsHoldNoSecret(t *testing.T, s *system) {
	logs, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	if len(logs) == 0 {
		t.Fatalf("no process logs in %s", s.dir)
	}
	secrets.Lock()
	values := append([]string(nil), secrets.values...)
	secrets.Unlock()
	keyFiles, _ := filepath.Glob(filepath.Join(s.keys, "*"))
	for _, f := range keyFiles {
		if strings.HasSuffix(f, ".json") || strings.HasSuffix(f, ".conf") {
			continue // public keys
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if len(line) > 20 && !strings.HasPrefix(line, "-----") {
				values = append(values, line)
			}
		}
	}
	lines := 0
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		lines += strings.Count(text, "\n")
		for _, v := range values {
			if v != "" && strings.Contains(text, v) {
				t.Errorf("%s holds a secret the suite used (%.12s…)", filepath.Base(f), v)
			}
		}
		if m := jwtLike.FindString(text); m != "" {
			t.Errorf("%s holds something shaped like a token: %.20s…", filepath.Base(f), m)
		}
	}
	record(t, s, "every log line of every process", "no password, token, key or seed",
		fmt.Sprintf("%d lines, %d secrets looked for, none found", lines, len(values)), 0)
}
