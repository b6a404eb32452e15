package app

import (
	"context"
	"net"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/console"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// consoleServer is the console as this process runs it: bound before the
// services start, so that their first exports find it, and served until
// they have stopped and flushed their last telemetry into it.
type consoleServer struct {
	ln    net.Listener
	store *console.Store
}

// listenConsole binds the console's listener when this process runs it.
func (s *system) listenConsole() error {
	if !s.cfg.console {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.ConsoleAddr)
	if err != nil {
		return err
	}
	limits := console.DefaultLimits
	limits.Traces = s.cfg.ConsoleTraces
	s.console = &consoleServer{ln: ln, store: console.NewStore(limits)}
	return nil
}

// telemetryOptions send the services' telemetry to the console, when this
// process runs one.
func (s *system) telemetryOptions() []telemetry.Option {
	if s.console == nil {
		return nil
	}
	return []telemetry.Option{telemetry.WithConsole(telemetry.Console{
		Endpoint:        "http://" + dialable(s.console.ln.Addr()),
		TracesPerSecond: s.cfg.ConsoleTracesPerSecond,
	})}
}

// serveConsole serves the console until ctx ends. Its fault switches are
// the injectors of the modules here; its dead letters are read through a
// NATS connection of its own, when this process has NATS (the embedded
// server, or NATS_URL).
func (s *system) serveConsole(ctx context.Context, mods []*module) error {
	logger := s.logger.With("service", consoleTarget)
	faults := map[string]*chaos.Injector{}
	for _, m := range mods {
		if m.chaos != nil {
			faults[m.name] = m.chaos
		}
	}
	var dlq *notifications.DeadLetters
	if s.nats != nil || s.cfg.NATSURL != "" {
		nc, err := natsbus.Connect(natsbus.ConnConfig{
			Name: "blueprint-console", URL: s.cfg.NATSURL, Embedded: s.nats,
			CredsFile: s.cfg.NATSCreds, NKeyFile: s.cfg.NATSNKey,
			TLSCA: s.cfg.NATSTLSCA, TLSCert: s.cfg.NATSTLSCert, TLSKey: s.cfg.NATSTLSKey,
		}, logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		dlq = notifications.NewDeadLetters(js)
	}
	h, err := console.NewHandler(console.Config{
		Store: s.console.store, Faults: faults, DeadLetters: dlq, Logger: logger, Now: time.Now,
	})
	if err != nil {
		return err
	}
	return httpx.Serve(ctx, s.console.ln, h, logger, time.Second)
}

// closeConsole releases the console's listener when it never ran.
func (s *system) closeConsole() {
	if s.console != nil {
		s.console.ln.Close()
	}
}
