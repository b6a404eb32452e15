// Package natsbus connects services to NATS JetStream: it runs the embedded
// server of `all` mode, opens connections that survive outages, declares
// streams, and carries W3C trace context in message headers.
//
// In `all` mode (no NATS_URL) one nats-server with JetStream runs inside the
// process, storing under the data dir and listening on no port; services
// reach it through in-process connections. With NATS_URL the same code
// connects over TCP to an external server or cluster.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/propagation"
)

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	// StoreDir holds JetStream's files; data survives restarts.
	StoreDir string
	// Listen, when set (host:port), also serves TCP clients such as the nats
	// CLI. Empty means in-process connections only.
	Listen string
	// Name identifies the server; every node of a cluster needs its own.
	Name string
	// ClusterListen (host:port), when set, makes the server a cluster node
	// that routes to the other nodes in Routes (nats://host:port URLs).
	ClusterListen string
	Routes        []string
	// ConfigFile, when set, is a nats-server configuration file read first
	// (for instance the authorization block `blueprint keys generate`
	// writes); the fields above override what it says.
	ConfigFile string
	// MonitorListen (host:port), when set, serves nats-server's HTTP
	// monitoring endpoints: /healthz for a container's health check, /varz,
	// /jsz and the others for people.
	MonitorListen string
}

// Embedded is a nats-server running inside this process.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a JetStream-enabled nats-server and waits until it
// accepts connections.
func StartEmbedded(cfg EmbeddedConfig, logger *slog.Logger) (*Embedded, error) {
	opts := &server.Options{}
	var err error
	if cfg.ConfigFile != "" {
		if opts, err = server.ProcessConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("nats config: %w", err)
		}
	}
	opts.ServerName = cfg.Name
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoSigs = true
	opts.DontListen = cfg.Listen == ""
	if opts.ServerName == "" {
		opts.ServerName = "blueprint-embedded"
	}
	if cfg.MonitorListen != "" {
		if opts.HTTPHost, opts.HTTPPort, err = splitHostPort(cfg.MonitorListen); err != nil {
			return nil, fmt.Errorf("embedded nats monitor address: %w", err)
		}
	}
	if cfg.Listen != "" {
		if opts.Host, opts.Port, err = splitHostPort(cfg.Listen); err != nil {
			return nil, fmt.Errorf("embedded nats listen address: %w", err)
		}
	}
	if cfg.ClusterListen != "" {
		// JetStream in a cluster replicates streams with RAFT: each node
		// must know the cluster's name and how to reach its peers.
		opts.Cluster.Name = "blueprint"
		if opts.Cluster.Host, opts.Cluster.Port, err = splitHostPort(cfg.ClusterListen); err != nil {
			return nil, fmt.Errorf("embedded nats cluster address: %w", err)
		}
		for _, r := range cfg.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("embedded nats route %q: not a nats://host:port URL", redactedRoute(r))
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	// nats-server reports a failure to start (a port in use) only through
	// its logger's Fatalf: catch it so the caller hears at once, not after
	// the ready timeout.
	fatal := make(chan string, 1)
	srv.SetLoggerV2(serverLogger{l: logger, fatal: fatal}, false, false, false)
	// Start sets the server up and returns, leaving its listeners running
	// until Shutdown. Shutdown must not run while Start still does (a
	// failed start goes on after Fatalf, enabling JetStream): every path
	// out of here waits for Start to return first.
	started := make(chan struct{})
	go func() {
		defer close(started)
		srv.Start()
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if srv.ReadyForConnections(50 * time.Millisecond) {
			<-started
			return &Embedded{srv: srv}, nil
		}
		select {
		case msg := <-fatal:
			<-started
			srv.Shutdown()
			return nil, fmt.Errorf("embedded nats: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			<-started
			srv.Shutdown()
			return nil, errors.New("embedded nats: not ready after 10s")
		}
	}
}

// redactedRoute is a route URL fit for an error message: what comes before
// its last '@' (user info, perhaps with a password) masked.
func redactedRoute(r string) string {
	if at := strings.LastIndex(r, "@"); at >= 0 {
		return "xxxxx" + r[at:]
	}
	return r
}

// splitHostPort parses host:port for nats-server, which reads port 0 as
// its default port and -1 as "any free port": 0 here means any free port,
// as it does for every other listener.
func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	return host, p, nil
}

// ClientURL is the TCP address of the embedded server, or "" when it does
// not listen.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Stop shuts the server down and waits until it has.
func (e *Embedded) Stop() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLogger sends nats-server's log lines to slog, and its fatal ones
// also to the fatal channel StartEmbedded watches.
type serverLogger struct {
	l     *slog.Logger
	fatal chan<- string
}

func (s serverLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	s.l.Error(msg)
	select {
	case s.fatal <- msg:
	default: // one is enough to fail the start
	}
}
func (s serverLogger) Errorf(format string, v ...any) { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Tracef(format string, v ...any) {}

// ConnConfig says where a service's connection goes.
type ConnConfig struct {
	// Name identifies the connection in the server's monitoring.
	Name string
	// URL is one or more comma-separated nats:// URLs; ignored when Embedded is set.
	URL string
	// Embedded, when set, is reached in-process.
	Embedded *Embedded
	// CredsFile is a NATS credentials file (user JWT and NKey seed).
	CredsFile string
	// NKeyFile holds the NKey seed of a user the server knows by its public
	// key (the nats-<user>.nk files of `blueprint keys generate`). Replies
	// then come back on InboxPrefix of that key.
	NKeyFile string
	// TLS: a CA to trust, and a client certificate and key for mutual TLS.
	TLSCA, TLSCert, TLSKey string
	// FailFast makes Connect return the first connection error instead of
	// retrying in the background: for a command that runs once, where
	// "cannot reach NATS" is the answer the user needs.
	FailFast bool
}

// Connect opens a connection that never gives up: unless FailFast is set,
// it does not fail when the server is down at start-up, and it reconnects
// forever with back-off and jitter. Until it is connected, publishes fail
// fast and the service's readiness says so; nothing is lost, because events
// wait in the outbox and JetStream keeps unacknowledged messages.
func Connect(cfg ConnConfig, logger *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(!cfg.FailFast),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1), // a publish during an outage fails at once instead of being buffered blind
		// A link that went silent (a partition, a frozen server) is noticed
		// after three unanswered pings, ~15 s, instead of the default ~4 min.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil when the connection is closed on purpose
				logger.Warn("nats disconnected", "error", err.Error())
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("nats reconnected", "server", serverName(c, cfg))
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			logger.Info("nats connected", "server", serverName(c, cfg))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			logger.Warn("nats error", "error", err.Error())
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		nkeyOpts, err := NKeyOptions(cfg.NKeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nkeyOpts...)
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	servers := cfg.URL
	if cfg.Embedded != nil {
		opts = append(opts, nats.InProcessServer(cfg.Embedded.srv))
		servers = ""
	}
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect: %w", err)
	}
	return nc, nil
}

// NKeyOptions authenticate a connection as the NKey user whose seed is in
// file, with replies on that user's own inbox prefix.
func NKeyOptions(file string) ([]nats.Option, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("nats nkey: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, fmt.Errorf("nats nkey %s: %w", file, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("nats nkey %s: not a user seed", file)
	}
	return []nats.Option{
		nats.Nkey(pub, kp.Sign), // answers the server's challenge; the seed never leaves
		nats.CustomInboxPrefix(InboxPrefix(pub)),
	}, nil
}

// InboxPrefix is where replies to the NKey user pub come back: a prefix of
// its own instead of the shared _INBOX, so the server can let each user
// subscribe to its own replies only, and no user can read the replies
// (JetStream acks, pulled messages) another user asked for.
func InboxPrefix(pub string) string { return "_INBOX_" + pub }

func serverName(c *nats.Conn, cfg ConnConfig) string {
	if cfg.Embedded != nil {
		return "embedded (in-process)"
	}
	return c.ConnectedUrlRedacted()
}

// Ready reports whether nc is connected and JetStream answers.
func Ready(ctx context.Context, js jetstream.JetStream) error {
	if st := js.Conn().Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats is %s", st)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// Header adapts NATS message headers to OpenTelemetry's carrier, so the
// trace context of a request rides with the event it causes.
type Header nats.Header

var _ propagation.TextMapCarrier = Header(nil)

// Get returns the first value of key.
func (h Header) Get(key string) string { return nats.Header(h).Get(key) }

// Set replaces the values of key.
func (h Header) Set(key, value string) { nats.Header(h).Set(key, value) }

// Keys lists the header names.
func (h Header) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
