package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
)

// natsWithUsers makes a deployment's keys and starts a NATS server that
// admits only their users, as `blueprint nats --config nats-auth.conf` does.
func natsWithUsers(t *testing.T) (keys, url string) {
	t.Helper()
	keys = filepath.Join(t.TempDir(), "keys")
	if _, err := run(t, nil, "keys", "generate", "--out", keys); err != nil {
		t.Fatalf("keys generate: %v", err)
	}
	srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{
		StoreDir: t.TempDir(), Listen: "127.0.0.1:0", ConfigFile: filepath.Join(keys, natsAuthFile),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start nats with %s: %v", natsAuthFile, err)
	}
	t.Cleanup(srv.Stop)
	return keys, srv.ClientURL()
}

// natsUserConn is one user's connection and what the server said about it.
type natsUserConn struct {
	js   jetstream.JetStream
	logs *logtest.Buffer
}

func connectAs(t *testing.T, url, seedFile string) (*natsUserConn, error) {
	t.Helper()
	logs := &logtest.Buffer{}
	nc, err := natsbus.Connect(natsbus.ConnConfig{Name: "test", URL: url, NKeyFile: seedFile, FailFast: true},
		slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &natsUserConn{js: js, logs: logs}, nil
}

// violation waits for the server's permissions violation naming subject
// (publish or subscribe), which the connection logs.
func (c *natsUserConn) violation(t *testing.T, subject string) bool {
	t.Helper()
	_ = c.js.Conn().Flush()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, line := range c.logs.Records(t, "nats error") {
			if msg, _ := line["error"].(string); strings.Contains(msg, "Permissions Violation") && strings.Contains(msg, fmt.Sprintf("%q", subject)) {
				return true
			}
		}
	}
	return false
}

// TestNATSRefusesStrangers: a deployed NATS admits only the users of its
// nats-auth.conf, each with its own seed.
func TestNATSRefusesStrangers(t *testing.T) {
	t.Parallel()
	_, url := natsWithUsers(t)

	if _, err := connectAs(t, url, ""); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("connect with no key: err = %v, want an authorization violation", err)
	}
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := stranger.Seed()
	file := filepath.Join(t.TempDir(), "stranger.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := connectAs(t, url, file); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("connect with an unknown key: err = %v, want an authorization violation", err)
	}
}

// TestOnlyOrdersPublishesOrderEvents: each NATS user can do its work and
// nothing else; above all, no one but orders (and the operators' admin
// user, replaying dead letters) can put an orders.created in the stream.
func TestOnlyOrdersPublishesOrderEvents(t *testing.T) {
	t.Parallel()
	keys, url := natsWithUsers(t)
	ctx := t.Context()
	as := map[string]*natsUserConn{}
	for _, u := range natsUsers {
		c, err := connectAs(t, url, filepath.Join(keys, natsSeedFile(u.name)))
		if err != nil {
			t.Fatalf("connect as %s: %v", u.name, err)
		}
		as[u.name] = c
	}
	ordersJS, notifJS := as["orders"].js, as["notifications"].js

	// orders' work: declare ORDERS, publish an event with its ack.
	must(t, "orders declares "+events.Stream, func() error {
		_, err := ordersJS.CreateOrUpdateStream(ctx, events.StreamConfig(1))
		return err
	})
	must(t, "orders publishes "+events.OrderCreated, func() error {
		_, err := ordersJS.Publish(ctx, events.OrderCreated, []byte(`{}`))
		return err
	})
	// notifications' work: its consumer, a pull, an ack, a dead letter.
	must(t, "notifications declares "+notifications.DeadLetterStream, func() error {
		_, err := notifJS.CreateOrUpdateStream(ctx, notifications.DeadLetterStreamConfig(1))
		return err
	})
	var cons jetstream.Consumer
	must(t, "notifications creates its consumer", func() (err error) {
		cons, err = notifJS.CreateOrUpdateConsumer(ctx, events.Stream, jetstream.ConsumerConfig{
			Durable: notifications.ConsumerName, FilterSubject: events.OrderCreated, AckPolicy: jetstream.AckExplicitPolicy,
		})
		return err
	})
	must(t, "notifications pulls and acks", func() error {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		for msg := range batch.Messages() {
			return msg.DoubleAck(ctx)
		}
		return errors.Join(batch.Error(), errors.New("no message"))
	})
	must(t, "notifications dead-letters", func() error {
		_, err := notifJS.Publish(ctx, notifications.DeadLetterSubject, []byte(`{}`))
		return err
	})
	must(t, "admin reads the dead letters", func() error {
		_, err := notifications.NewDeadLetters(as["admin"].js).List(ctx)
		return err
	})

	// What each must not do. A JetStream request the server refuses never
	// gets its answer: a short deadline, then the server's own word.
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 500*time.Millisecond) }
	for _, tc := range []struct {
		user, subject string
		try           func(context.Context, jetstream.JetStream) error
	}{
		{"notifications", events.OrderCreated, func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, events.OrderCreated, []byte(`{"forged":true}`))
			return err
		}},
		{"notifications", "$JS.API.STREAM.UPDATE." + events.Stream, func(ctx context.Context, js jetstream.JetStream) error {
			cfg := events.StreamConfig(1)
			cfg.Sources = []*jetstream.StreamSource{{Name: notifications.DeadLetterStream}}
			_, err := js.UpdateStream(ctx, cfg)
			return err
		}},
		{"notifications", "$JS.API.STREAM.DELETE." + events.Stream, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, events.Stream)
		}},
		{"orders", "$JS.API.CONSUMER.CREATE." + events.Stream + ".spy", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.CreateConsumer(ctx, events.Stream, jetstream.ConsumerConfig{Name: "spy"})
			return err
		}},
		{"orders", notifications.DeadLetterSubject, func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, notifications.DeadLetterSubject, []byte(`{}`))
			return err
		}},
	} {
		ctx, cancel := short()
		err := tc.try(ctx, as[tc.user].js)
		cancel()
		if err == nil || !as[tc.user].violation(t, tc.subject) {
			t.Errorf("%s on %s: err = %v and no permissions violation, want it refused", tc.user, tc.subject, err)
		}
	}
	// Subscriptions: orders.> directly, and another user's replies.
	notifPub := publicKeyOf(t, filepath.Join(keys, natsSeedFile("notifications")))
	for _, subject := range []string{events.StreamSubject, natsbus.InboxPrefix(notifPub) + ".>"} {
		if _, err := as["orders"].js.Conn().SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		if !as["orders"].violation(t, subject) {
			t.Errorf("orders subscribed to %s, want a permissions violation", subject)
		}
	}

	// The forged event never reached the stream: it holds orders' one.
	info, err := as["admin"].js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%s holds %d messages, want 1 (only orders')", events.Stream, n)
	}
}

func must(t *testing.T, what string, fn func() error) {
	t.Helper()
	if err := fn(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func publicKeyOf(t *testing.T, seedFile string) string {
	t.Helper()
	data, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
