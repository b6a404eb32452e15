// Package natsbustest starts a real NATS server with JetStream for a test.
// Blueprint's tests never mock the broker: each test gets its own embedded
// server with its store in the test's temp dir.
package natsbustest

import (
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
)

// Start runs an embedded JetStream server for the test and returns it and a
// JetStream handle on an in-process connection. Both stop when the test ends.
func Start(t testing.TB) (*natsbus.Embedded, jetstream.JetStream) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: t.TempDir()}, logger)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv, Connect(t, srv)
}

// Connect opens another in-process connection to srv, closed when the test ends.
func Connect(t testing.TB, srv *natsbus.Embedded) jetstream.JetStream {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := natsbus.Connect(natsbus.ConnConfig{Name: t.Name(), Embedded: srv}, logger)
	if err != nil {
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
