package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// natsCommand runs a NATS server with JetStream on its own, as one node of
// a cluster when routes are given. It is the embedded server of `all` mode
// made a process of its own, so a local cluster (deploy/local) needs no
// nats-server installed; any nats-server 2.10+ can stand in for it.
func natsCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	f := newFlags("nats", getenv)
	var cfg natsbus.EmbeddedConfig
	var routes, logLevel string
	f.String(&cfg.Name, "name", "", "blueprint-nats", "server name; unique per cluster node")
	f.String(&cfg.Listen, "listen", "", "127.0.0.1:4222", "client listen address")
	f.String(&cfg.StoreDir, "store-dir", "", "./.blueprint/nats", "JetStream store directory")
	f.String(&cfg.ClusterListen, "cluster-listen", "", "", "cluster listen address; empty runs a single server")
	f.String(&routes, "routes", "", "", "comma-separated nats://host:port cluster URLs of the other nodes")
	f.String(&cfg.ConfigFile, "config", "", "",
		"nats-server configuration file read first, e.g. the nats-auth.conf of 'blueprint keys generate' (its users and permissions); flags win")
	f.String(&cfg.MonitorListen, "monitor-listen", "", "",
		"HTTP monitoring listen address (/healthz for health checks, /varz, /jsz); empty: none")
	f.String(&logLevel, "log-level", "", "info", "debug, info, warn or error")
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint nats [flags]\n\nRuns a NATS server with JetStream, alone or as a cluster node.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	cfg.Routes = splitList(routes)
	if len(cfg.Routes) > 0 && cfg.ClusterListen == "" {
		return usageErrorf("--routes needs --cluster-listen")
	}
	level, err := telemetry.ParseLogLevel(logLevel)
	if err != nil {
		return usageErrorf("--log-level: %v", err)
	}
	logger := telemetry.NewLogger(stdout, telemetry.LogAuto, isTerminal(stdout), level).With("service", "nats", "node", cfg.Name)
	srv, err := natsbus.StartEmbedded(cfg, logger)
	if err != nil {
		return err
	}
	logger.Info("nats ready", "url", srv.ClientURL(), "cluster", cfg.ClusterListen, "routes", redactURLList(routes),
		"config", cfg.ConfigFile, "monitor", cfg.MonitorListen)
	<-ctx.Done()
	srv.Stop()
	logger.Info("stopped")
	return nil
}
