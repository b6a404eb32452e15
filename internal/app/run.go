// Package app is Blueprint's composition root: it parses the command line
// and environment, builds the services a process runs (`--target`), wires
// them together and runs them until a signal stops them.
//
// `--target=all` (the default) runs every service in one process, each with
// its own listeners, database, NATS connection and telemetry, calling each
// other over loopback HTTP with internal tokens exactly as they do when
// deployed one per process. Nothing else in Blueprint knows which mode it
// runs in.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"golang.org/x/term"

	"github.com/ds-blueprint/blueprint/internal/gateway"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

const usageText = `Blueprint runs a small distributed system: an API gateway, users, orders
and notifications services, talking over HTTP and NATS JetStream.

Usage:
  blueprint [run] [flags]           run services (all of them by default)
  blueprint demo [--gateway URL]    try the whole flow against a running gateway
  blueprint bench [flags]           load a running system and report throughput,
                                    latency and CPU per request
  blueprint keys generate --out DIR make the keys of a multi-process deployment
  blueprint keys rotate --from DIR --out DIR
                                    replace every key without refusing one in use
  blueprint migrate [flags]         apply the services' database migrations and exit
  blueprint nats [flags]            run a NATS server with JetStream (a cluster node)
  blueprint chaos set|list|clear    inject faults into a running service (BLUEPRINT_CHAOS=true)
  blueprint dlq list|replay         list and replay the events notifications gave up on
  blueprint health --url URL        exit 0 if URL answers 2xx (a container health check)
  blueprint version                 print the version
  blueprint help [command]          show help

Start everything on embedded defaults (no NATS or database to install):
  blueprint
Then, in another terminal:
  blueprint demo

Every flag has an environment variable; flags win. 'blueprint help run' lists them.
`

// Run is the whole program. main only calls it with the process's
// arguments (without the program name), environment and output.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd, rest := "run", args
	switch {
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		cmd, rest = "help", nil
	case len(args) > 0 && !isFlag(args[0]):
		cmd, rest = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCommand(ctx, rest, getenv, stdout)
	case "demo":
		return demoCommand(ctx, rest, getenv, stdout)
	case "bench":
		return benchCommand(ctx, rest, getenv, stdout, stderr)
	case "keys":
		return keysCommand(rest, stdout)
	case "migrate":
		return migrateCommand(ctx, rest, getenv, stdout)
	case "nats":
		return natsCommand(ctx, rest, getenv, stdout)
	case "chaos":
		return chaosCommand(ctx, rest, getenv, stdout)
	case "dlq":
		return dlqCommand(ctx, rest, getenv, stdout, stderr)
	case "health":
		return healthCommand(ctx, rest, getenv, stdout)
	case "version":
		_, err := fmt.Fprintln(stdout, "blueprint", version())
		return err
	case "help":
		return helpCommand(rest, getenv, stdout)
	default:
		return usageErrorf("unknown command %q; run `blueprint help`", cmd)
	}
}

func isFlag(s string) bool { return len(s) > 0 && s[0] == '-' }

func helpCommand(args []string, getenv func(string) string, stdout io.Writer) error {
	topic := ""
	if len(args) > 0 {
		topic = args[0]
	}
	switch topic {
	case "":
		_, err := io.WriteString(stdout, usageText)
		return err
	case "run":
		var cfg Config
		f := newFlags("run", getenv)
		cfg.registerFlags(f)
		fmt.Fprintln(stdout, "Usage: blueprint run [flags]\n\nFlags:")
		f.usage(stdout)
		return nil
	case "demo", "bench", "keys", "migrate", "nats", "chaos", "dlq", "health":
		return Run(context.Background(), []string{topic, "-h"}, getenv, stdout, io.Discard)
	}
	return usageErrorf("no help for %q", topic)
}

// version is the module version the binary was built from.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Variables lists every setting of `blueprint run`, for the README table.
func Variables() []Variable {
	var cfg Config
	f := newFlags("run", func(string) string { return "" })
	cfg.registerFlags(f)
	return f.vars
}

func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	start := time.Now()
	var cfg Config
	f := newFlags("run", getenv)
	cfg.registerFlags(f)
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpCommand([]string{"run"}, getenv, stdout)
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	level, _ := telemetry.ParseLogLevel(cfg.LogLevel)
	format, _ := telemetry.ParseLogFormat(cfg.LogFormat)
	s := &system{
		cfg:       &cfg,
		getenv:    getenv,
		logger:    telemetry.NewLogger(stdout, format, isTerminal(stdout), level),
		version:   version(),
		listeners: map[string]net.Listener{},
	}
	telemetry.ReportErrorsTo(s.logger)
	return s.run(ctx, start)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// run builds every module, runs them until ctx ends, and stops them in
// reverse start order: the gateway stops taking requests before the
// services behind it go, and the worker drains while users still answers.
func (s *system) run(ctx context.Context, start time.Time) error {
	if err := s.loadKeys(); err != nil {
		return err
	}
	mods, err := s.listen()
	if err != nil {
		return err
	}
	if err := s.listenConsole(); err != nil {
		for _, m := range mods {
			m.close()
		}
		return fmt.Errorf("console: %w", err)
	}
	if err := s.startNATS(); err != nil {
		for _, m := range mods {
			m.close()
		}
		s.closeConsole()
		return err
	}
	defer func() {
		if s.nats != nil {
			s.nats.Stop()
		}
	}()
	for _, m := range mods {
		if m.tel, err = telemetry.New(ctx, m.name, s.version, s.getenv, s.telemetryOptions()...); err == nil {
			// From here on the module's lines also go over OTLP when logs
			// are exported.
			m.logger = m.tel.Logger(m.logger)
			if m.chaos, err = s.injector(ctx, m); err == nil {
				err = builders[m.name](ctx, s, m)
			}
		}
		if err != nil {
			for _, m := range mods {
				m.close()
			}
			s.closeConsole()
			return fmt.Errorf("start %s: %w", m.name, err)
		}
	}

	// Start-up leaves garbage behind that a running service never needs
	// again (the migration parser's buffers, the dummy password hash's
	// memory): give it back to the OS now rather than carry it as RSS.
	debug.FreeOSMemory()

	type running struct {
		cancel context.CancelFunc
		done   chan error
	}
	exited := make(chan struct{}, len(mods)+1)
	// The console stops last: the services flush their telemetry into it
	// as they stop.
	consoleCtx, stopConsole := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsole()
	consoleDone := make(chan error, 1)
	if s.console != nil {
		go func() { // ends after stopConsole
			consoleDone <- s.serveConsole(consoleCtx, mods)
			exited <- struct{}{}
		}()
	} else {
		consoleDone <- nil
	}
	runs := make([]running, len(mods))
	for i, m := range mods {
		mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		runs[i] = running{cancel: cancel, done: make(chan error, 1)}
		go func() { // ends when its module stops; waited for below
			runs[i].done <- m.run(mctx, s)
			exited <- struct{}{}
		}()
	}
	s.logReady(ctx, mods, start)

	select {
	case <-ctx.Done():
		s.logger.Info("shutting down", "signal", context.Cause(ctx).Error())
	case <-exited:
		s.logger.Error("a service stopped unexpectedly; shutting down")
	}
	s.stopping.Store(true)
	var errs []error
	for i := range slices.Backward(runs) {
		runs[i].cancel()
		if err := <-runs[i].done; err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mods[i].name, err))
		}
	}
	stopConsole()
	if err := <-consoleDone; err != nil {
		errs = append(errs, fmt.Errorf("console: %w", err))
	}
	if len(errs) == 0 {
		s.logger.Info("stopped", "after", time.Since(start).Round(time.Millisecond).String())
	}
	return errors.Join(errs...)
}

// logReady waits (a few seconds at most) until every module is ready, then
// writes the line a user (and the tests) wait for, with every address this
// process serves and, for a module still not ready, why.
func (s *system) logReady(ctx context.Context, mods []*module, start time.Time) {
	notReady := map[string]error{}
	for deadline := time.Now().Add(5 * time.Second); ; {
		clear(notReady)
		for _, m := range mods {
			checkCtx, cancel := context.WithTimeout(ctx, time.Second)
			if err := m.ready(checkCtx); err != nil {
				notReady[m.name] = err
			}
			cancel()
		}
		if len(notReady) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	attrs := []any{"startup_ms", time.Since(start).Milliseconds(), "version", s.version}
	for _, m := range mods {
		attrs = append(attrs, m.name, "http://"+dialable(m.ln.Addr()), m.name+"_ops", "http://"+dialable(m.ops.Addr()))
		if err := notReady[m.name]; err != nil {
			attrs = append(attrs, m.name+"_not_ready", err.Error())
		}
	}
	if s.console != nil {
		attrs = append(attrs, "console", "http://"+dialable(s.console.ln.Addr()))
	}
	if s.nats != nil && s.nats.ClientURL() != "" {
		attrs = append(attrs, "nats", s.nats.ClientURL())
	}
	if s.cfg.runs(gateway.Name) {
		attrs = append(attrs, "try", "blueprint demo --gateway http://"+dialable(s.listeners[gateway.Name].Addr()))
	}
	s.logger.Log(ctx, slog.LevelInfo, "blueprint ready", attrs...)
}
