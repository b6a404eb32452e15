package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/gateway"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
	"github.com/ds-blueprint/blueprint/internal/users"
)

// module is one service as the process runs it: its listeners, its HTTP
// API, the background loops it owns, how to tell it is ready, and what to
// close once it has stopped.
type module struct {
	name    string
	logger  *slog.Logger
	tel     *telemetry.Providers
	ln, ops net.Listener
	handler http.Handler
	// chaos injects faults into the API and at the fault points; nil
	// unless BLUEPRINT_CHAOS is on.
	chaos   *chaos.Injector
	ready   func(ctx context.Context) error
	workers []func(ctx context.Context) error
	closers []func() error
}

// builders is the module graph: how to build each service. Dependencies
// between services are HTTP calls and NATS subjects, not Go calls, so the
// only ordering is the start order of `services` (users first, gateway
// last) and its reverse at shutdown.
var builders = map[string]func(context.Context, *system, *module) error{
	users.Name:         buildUsers,
	orders.Name:        buildOrders,
	notifications.Name: buildNotifications,
	gateway.Name:       buildGateway,
}

// migrations are the schemas of the services that own a database.
var migrations = map[string]fs.FS{
	users.Name:         users.Migrations,
	orders.Name:        orders.Migrations,
	notifications.Name: notifications.Migrations,
}

// system is what one `blueprint run` process shares between its modules.
type system struct {
	cfg     *Config
	getenv  func(string) string
	logger  *slog.Logger
	version string
	keys    *auth.Keyring
	// nats is the embedded server, nil when NATS_URL is set.
	nats *natsbus.Embedded
	// listeners of the services this process runs, to find them by name.
	listeners map[string]net.Listener
	// stopping turns every module's readiness false at once on shutdown.
	stopping atomic.Bool
	// console is nil unless this process runs the console.
	console *consoleServer
}

// upstreamURLs are the base URLs callers use for a service: the configured
// list, else this process's own listener, else the well-known local port.
func (s *system) upstreamURLs(service string) []string {
	if urls := splitList(s.cfg.Services[service].URL); len(urls) > 0 {
		return urls
	}
	if ln, ok := s.listeners[service]; ok {
		return []string{"http://" + dialable(ln.Addr())}
	}
	return []string{fmt.Sprintf("http://127.0.0.1:%d", defaultPorts[service][0])}
}

// dialable turns a listener address into one a client can dial: a service
// listening on every interface is reached on loopback.
func dialable(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return addr.String()
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
}

// upstream returns m's client for service, and makes re-resolving the
// service's host names one of m's workers.
func (s *system) upstream(m *module, minter *auth.Minter, service string) (*upstream.Client, error) {
	policy := upstream.DefaultPolicy()
	policy.MaxRetries = s.cfg.UpstreamRetries
	policy.MaxInFlight = s.cfg.UpstreamMaxInFlight
	policy.BreakerFailureRate = s.cfg.UpstreamBreakerFailureRate
	policy.BreakerDelay = s.cfg.UpstreamBreakerDelay
	client, err := upstream.New(upstream.Config{
		Service:        service,
		URLs:           s.upstreamURLs(service),
		Timeout:        s.cfg.UpstreamTimeout,
		AttemptTimeout: s.cfg.UpstreamAttemptTimeout,
		ConnectTimeout: s.cfg.UpstreamConnectTimeout,
		Policy:         policy,
		Minter:         minter,
		Telemetry:      m.tel,
		Logger:         m.logger,
	})
	if err != nil {
		return nil, err
	}
	m.workers = append(m.workers, client.Run)
	return client, nil
}

func (s *system) verifier(service string, callers []string) (*auth.ServiceVerifier, error) {
	return auth.NewServiceVerifier(service, callers, s.keys.Bundle, time.Now)
}

// injector returns the module's fault injector: with BLUEPRINT_CHAOS, served
// on its ops listener too; without it, when the console runs in this
// process, for the console's switches alone (on loopback, refusing other
// sites' forms); else nil. Its builder adds the routes and fault points
// rules may name.
func (s *system) injector(ctx context.Context, m *module) (*chaos.Injector, error) {
	switch {
	case s.cfg.Chaos:
		m.logger.WarnContext(ctx, "fault injection is on: never expose this ops listener", "ops", "http://"+dialable(m.ops.Addr())+"/chaos")
	case s.console == nil:
		return nil, nil
	}
	return chaos.New(m.logger, m.tel.Meter)
}

func (s *system) minter(service string) *auth.Minter {
	return auth.NewMinter(service, s.keys.Identities[service], time.Now)
}

// openDB opens the service's database, applying its migrations, with the
// service's telemetry, and registers it to be closed.
func (s *system) openDB(ctx context.Context, m *module) (*sqldb.DB, error) {
	db, err := sqldb.Open(ctx, s.cfg.databaseURL(m.name), migrations[m.name], sqldb.WithTelemetry(m.tel.Tracer, m.tel.Meter))
	if err != nil {
		return nil, fmt.Errorf("%s database: %w", m.name, err)
	}
	m.closers = append(m.closers, db.Close)
	return db, nil
}

// connectNATS opens the service's own NATS connection and registers it to
// be closed.
func (s *system) connectNATS(m *module) (jetstream.JetStream, error) {
	nc, err := natsbus.Connect(natsbus.ConnConfig{
		Name: "blueprint-" + m.name, URL: s.cfg.NATSURL, Embedded: s.nats,
		CredsFile: s.cfg.NATSCreds, NKeyFile: s.natsNKey(m.name),
		TLSCA: s.cfg.NATSTLSCA, TLSCert: s.cfg.NATSTLSCert, TLSKey: s.cfg.NATSTLSKey,
	}, m.logger)
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, func() error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// natsNKey is the NKey seed service authenticates to an external NATS
// with: NATS_NKEY, else its own nats-<service>.nk among the keys when there
// is one. The embedded server admits its in-process connections without.
func (s *system) natsNKey(service string) string {
	if s.cfg.NATSURL == "" || s.cfg.NATSCreds != "" || s.cfg.NATSNKey != "" {
		return s.cfg.NATSNKey
	}
	if s.cfg.KeysDir == "" {
		return ""
	}
	file := filepath.Join(s.cfg.KeysDir, natsSeedFile(service))
	if _, err := os.Stat(file); err != nil {
		return ""
	}
	return file
}

func buildUsers(ctx context.Context, s *system, m *module) error {
	db, err := s.openDB(ctx, m)
	if err != nil {
		return err
	}
	svc, err := users.NewService(db, m.tel.Meter, m.logger, time.Now)
	if err != nil {
		return err
	}
	v, err := s.verifier(users.Name, users.TrustedCallers)
	if err != nil {
		return err
	}
	rt := users.NewServer(svc, v, m.logger)
	m.handler = rt
	m.chaos.AddRoutes(rt.Routes()...)
	m.ready = db.Ping
	return nil
}

func buildOrders(ctx context.Context, s *system, m *module) error {
	db, err := s.openDB(ctx, m)
	if err != nil {
		return err
	}
	js, err := s.connectNATS(m)
	if err != nil {
		return err
	}
	relay, err := outbox.NewRelay(outbox.RelayConfig{
		DB: db, JS: js,
		Prepare: func(ctx context.Context) error {
			return events.DeclareStream(ctx, js, s.cfg.NATSStreamReplicas)
		},
		Owner:  relayOwner(),
		Poll:   s.cfg.OutboxPollInterval,
		Batch:  100,
		Faults: m.chaos,
		Logger: m.logger, Tracer: m.tel.Tracer, Meter: m.tel.Meter, Propagator: m.tel.Propagator,
	})
	if err != nil {
		return err
	}
	pruner, err := outbox.NewPruner(outbox.PrunerConfig{
		DB: db, Retention: s.cfg.OutboxRetention, Logger: m.logger, Meter: m.tel.Meter,
	})
	if err != nil {
		return err
	}
	svc, err := orders.NewService(db, m.tel.Propagator, m.tel.Meter, relay.Notify, time.Now, m.chaos)
	if err != nil {
		return err
	}
	v, err := s.verifier(orders.Name, orders.TrustedCallers)
	if err != nil {
		return err
	}
	rt := orders.NewServer(svc, v, m.logger)
	m.handler = rt
	m.chaos.AddRoutes(append(rt.Routes(), orders.FaultAfterKeyClaim, orders.FaultAfterCommit, outbox.FaultAfterClaim)...)
	m.ready = func(ctx context.Context) error { return errors.Join(db.Ping(ctx), natsbus.Ready(ctx, js)) }
	m.workers = append(m.workers, relay.Run, pruner.Run, func(ctx context.Context) error {
		return every(ctx, 10*time.Minute, func(ctx context.Context) {
			if n, err := svc.PurgeExpiredKeys(ctx); err != nil {
				m.logger.WarnContext(ctx, "purge idempotency keys failed", "error", err.Error())
			} else if n > 0 {
				m.logger.InfoContext(ctx, "purged expired idempotency keys", "count", n)
			}
		})
	})
	return nil
}

// relayOwner names this process's relay in outbox leases.
func relayOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// every runs fn each period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func(context.Context)) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			fn(ctx)
		}
	}
}

func buildNotifications(ctx context.Context, s *system, m *module) error {
	db, err := s.openDB(ctx, m)
	if err != nil {
		return err
	}
	js, err := s.connectNATS(m)
	if err != nil {
		return err
	}
	usersClient, err := s.upstream(m, s.minter(notifications.Name), users.Name)
	if err != nil {
		return err
	}
	channel, err := s.notificationChannel(m)
	if err != nil {
		return err
	}
	worker, err := notifications.NewWorker(notifications.WorkerConfig{
		JS: js, DB: db,
		Directory:      notifications.NewCachedDirectory(notifications.UsersDirectory{Users: usersClient}, time.Now),
		Channel:        channel,
		Faults:         m.chaos,
		StreamReplicas: s.cfg.NATSStreamReplicas,
		Concurrency:    s.cfg.WorkerConcurrency,
		AckWait:        s.cfg.WorkerAckWait,
		MaxDeliver:     s.cfg.WorkerMaxDeliver,
		Logger:         m.logger, Tracer: m.tel.Tracer, Meter: m.tel.Meter, Propagator: m.tel.Propagator,
		Now: time.Now,
	})
	if err != nil {
		return err
	}
	v, err := s.verifier(notifications.Name, notifications.TrustedCallers)
	if err != nil {
		return err
	}
	rt := notifications.NewServer(notifications.NewService(db), v, m.logger)
	m.handler = rt
	m.chaos.AddRoutes(append(rt.Routes(), notifications.FaultDeliver, notifications.FaultAfterDelivery)...)
	m.ready = func(ctx context.Context) error {
		return errors.Join(db.Ping(ctx), natsbus.Ready(ctx, js), worker.Ready())
	}
	m.workers = append(m.workers, worker.Run)
	return nil
}

// notificationChannel is where the worker delivers: the webhook when
// NOTIFY_WEBHOOK_URL is set, else the log.
func (s *system) notificationChannel(m *module) (notifications.Channel, error) {
	if s.cfg.NotifyWebhookURL == "" {
		return notifications.LogChannel{Logger: m.logger}, nil
	}
	wh, err := notifications.NewWebhookChannel(notifications.WebhookConfig{
		URL:            s.cfg.NotifyWebhookURL,
		Secret:         s.cfg.NotifyWebhookSecret,
		Timeout:        s.cfg.NotifyWebhookTimeout,
		AllowLinkLocal: s.cfg.NotifyWebhookAllowLinkLocal,
		UserAgent:      "blueprint-notifications/" + s.version,
		Logger:         m.logger, Tracer: m.tel.Tracer, Meter: m.tel.Meter, Propagator: m.tel.Propagator,
		Now: time.Now,
	})
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, wh.Close)
	return wh, nil
}

func buildGateway(ctx context.Context, s *system, m *module) error {
	accessKeys, err := s.keys.Bundle.Access.PublicKeys()
	if err != nil {
		return fmt.Errorf("access keys: %w", err)
	}
	// A signing key missing from the published keys would issue tokens the
	// gateway itself then refuses.
	if !slices.ContainsFunc(accessKeys, func(k auth.PublicKey) bool { return k.ID == s.keys.Access.ID }) {
		return fmt.Errorf("access key %s is not among the access keys of %s", s.keys.Access.ID, auth.BundleFile)
	}
	minter := s.minter(gateway.Name)
	var up gateway.Upstreams
	for service, client := range map[string]**upstream.Client{
		users.Name: &up.Users, orders.Name: &up.Orders, notifications.Name: &up.Notifications,
	} {
		if *client, err = s.upstream(m, minter, service); err != nil {
			return err
		}
	}
	limits := gateway.Limits{MaxInFlight: s.cfg.GatewayMaxInFlight, OrderTimeout: s.cfg.UpstreamTimeout}
	if s.cfg.RateLimitsEnabled {
		limits.PerSecond, limits.Burst = s.cfg.RateLimitRPS, s.cfg.RateLimitBurst
		limits.MaxInFlightPerIP = s.cfg.GatewayMaxInFlightPerIP
		limits.RegisterPerHour, limits.RegisterPerSecond = s.cfg.RegisterRateLimit, s.cfg.RegisterGlobalRateLimit
		limits.LoginPerMinute, limits.LoginFailures = s.cfg.LoginRateLimit, s.cfg.LoginFailureLimit
		limits.LoginAccountFailures = s.cfg.LoginAccountFailureLimit
		if s.cfg.RedisURL != "" {
			if limits.Redis, err = s.redis(ctx, m); err != nil {
				return err
			}
			limits.RedisPrefix = s.cfg.RedisKeyPrefix
		}
	}
	tokens := auth.NewAccessTokens(s.keys.Access, accessKeys, time.Now)
	g, err := gateway.New(tokens, up, limits, m.logger, m.tel.Meter, m.tel.Tracer, time.Now)
	if err != nil {
		return err
	}
	m.handler = g.Handler()
	m.chaos.AddRoutes(g.Routes()...)
	m.ready = func(context.Context) error { return nil } // no dependency of its own
	return nil
}

// redis connects to the Redis of the shared rate limits and registers the
// client to be closed. A Redis that does not answer at start is logged, not
// fatal: the limits fall back to this replica's own buckets until it does,
// and the gateway stays ready, since Redis trouble must not take the API
// down. The URL may hold a password, so only the address is logged.
func (s *system) redis(ctx context.Context, m *module) (*redis.Client, error) {
	opts, err := gateway.RedisOptions(s.cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	rdb := redis.NewClient(opts)
	m.closers = append(m.closers, rdb.Close)
	pingCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		m.logger.WarnContext(ctx, "rate limit store unreachable at start; limiting with this replica's own buckets until it answers",
			"redis", opts.Addr, "error", err.Error())
	} else {
		m.logger.InfoContext(ctx, "rate limits shared through redis", "redis", opts.Addr, "key_prefix", s.cfg.RedisKeyPrefix)
	}
	return rdb, nil
}

// loadKeys returns the keys of this process: from --keys-dir when set, else
// made in memory (only possible when every service runs here).
func (s *system) loadKeys() error {
	var err error
	if s.cfg.KeysDir == "" {
		s.keys, err = auth.GenerateKeyring(services)
		return err
	}
	s.keys, err = auth.LoadKeyring(s.cfg.KeysDir, s.cfg.targets, s.cfg.runs(gateway.Name))
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// startNATS starts the embedded server when a service here needs NATS and
// no NATS_URL is set.
func (s *system) startNATS() error {
	if s.cfg.NATSURL != "" || (!s.cfg.runs(orders.Name) && !s.cfg.runs(notifications.Name)) {
		return nil
	}
	var err error
	s.nats, err = natsbus.StartEmbedded(natsbus.EmbeddedConfig{
		StoreDir: filepath.Join(s.cfg.DataDir, "nats"),
		Listen:   s.cfg.NATSEmbeddedAddr,
	}, s.logger.With("service", "nats"))
	return err
}

// listen binds every listener before anything starts, so a port in use is
// one clear error at start and callers in this process know the real
// addresses (port 0 included).
func (s *system) listen() ([]*module, error) {
	var mods []*module
	fail := func(err error) ([]*module, error) {
		for _, m := range mods {
			m.close()
		}
		return nil, err
	}
	for _, name := range s.cfg.targets {
		sc := s.cfg.Services[name]
		ln, err := net.Listen("tcp", sc.Addr)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", name, err))
		}
		m := &module{name: name, ln: ln, logger: s.logger.With("service", name)}
		mods = append(mods, m)
		if m.ops, err = net.Listen("tcp", sc.OpsAddr); err != nil {
			return fail(fmt.Errorf("%s ops: %w", name, err))
		}
		s.listeners[name] = ln
	}
	return mods, nil
}

// close releases what a module holds when it never ran.
func (m *module) close() {
	for _, c := range slices.Backward(m.closers) {
		_ = c()
	}
	if m.ln != nil {
		m.ln.Close()
	}
	if m.ops != nil {
		m.ops.Close()
	}
	if m.tel != nil {
		_ = m.tel.Shutdown(context.Background())
	}
}

// run serves the module until ctx ends, then stops it in order: the API
// drains its requests while the workers finish what they hold, then the ops
// listener closes, then telemetry flushes, then connections and databases
// close. Telemetry goes before them because its last metrics push still
// reads them (the outbox backlog, the consumer's state).
func (m *module) run(ctx context.Context, s *system) error {
	// One access line per request at info: the gateway's (ADR 0012).
	access := slog.LevelDebug
	if m.name == gateway.Name {
		access = slog.LevelInfo
	}
	api := httpx.Instrument(m.handler, m.logger, *m.tel, access)
	if m.chaos != nil {
		api = httpx.WithRouteHook(api, m.chaos.HookRoute)
	}
	if m.name != gateway.Name {
		// Called by services: stop working for a caller that has stopped
		// waiting. The gateway's callers are clients; it keeps its own time.
		api = httpx.WithCallerDeadline(api)
	}
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	opsDone := make(chan error, 1)
	go func() { opsDone <- httpx.Serve(opsCtx, m.ops, m.opsHandler(s), m.logger, time.Second) }() // ends after stopOps

	results := make(chan error, 1+len(m.workers))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { results <- httpx.Serve(runCtx, m.ln, api, m.logger, s.cfg.ShutdownTimeout) }()
	for _, w := range m.workers {
		go func() { results <- w(runCtx) }() // each returns once runCtx ends
	}
	var errs []error
	for range 1 + len(m.workers) {
		if err := <-results; err != nil {
			errs = append(errs, err)
			cancel() // one part failing stops the module
		}
	}
	stopOps()
	errs = append(errs, <-opsDone)
	// Telemetry that cannot leave (a collector that is down) is lost, but
	// the service stopped cleanly: a warning, not a failed exit.
	if err := m.tel.Shutdown(context.WithoutCancel(ctx)); err != nil {
		m.logger.WarnContext(ctx, "telemetry not flushed", "error", err.Error())
	}
	for _, c := range slices.Backward(m.closers) {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
