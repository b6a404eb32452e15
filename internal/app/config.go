package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ds-blueprint/blueprint/internal/console"
	"github.com/ds-blueprint/blueprint/internal/gateway"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
	"github.com/ds-blueprint/blueprint/internal/users"
)

// services lists every service in start order; `all` means all of them.
var services = []string{users.Name, orders.Name, notifications.Name, gateway.Name}

// serviceConfig is what differs between services: where each listens.
type serviceConfig struct {
	Addr    string // the main listener
	OpsAddr string // metrics, health, and profiles when PPROF_ENABLED
	// URL is how callers reach the service: comma-separated replica URLs.
	// Empty means this process's own listener when the service runs here.
	URL string
	// DatabaseURL is the service's database; users, orders, notifications.
	DatabaseURL string
}

// Config is the configuration of `blueprint run`.
type Config struct {
	Target  string
	DataDir string
	KeysDir string

	LogLevel  string
	LogFormat string

	Services map[string]*serviceConfig

	NATSURL            string
	NATSCreds          string
	NATSNKey           string
	NATSTLSCA          string
	NATSTLSCert        string
	NATSTLSKey         string
	NATSEmbeddedAddr   string
	NATSStreamReplicas int

	UpstreamTimeout        time.Duration
	UpstreamConnectTimeout time.Duration
	ShutdownTimeout        time.Duration
	OutboxPollInterval     time.Duration
	OutboxRetention        time.Duration
	WorkerConcurrency      int
	WorkerAckWait          time.Duration
	WorkerMaxDeliver       int

	// The resilience policies of calls between services (docs/resilience.md).
	UpstreamAttemptTimeout     time.Duration
	UpstreamRetries            int
	UpstreamMaxInFlight        int
	UpstreamBreakerFailureRate float64
	UpstreamBreakerDelay       time.Duration

	NotifyWebhookURL            string
	NotifyWebhookSecret         string
	NotifyWebhookTimeout        time.Duration
	NotifyWebhookAllowLinkLocal bool

	GatewayMaxInFlight int
	RateLimitsEnabled  bool
	RateLimitRPS       float64
	RateLimitBurst     int
	LoginRateLimit     int
	LoginFailureLimit  int
	RedisURL           string
	RedisKeyPrefix     string

	// The limits that keep one client from taking the service from the
	// others (docs/rate-limits.md); off with RateLimitsEnabled.
	GatewayMaxInFlightPerIP  int
	RegisterRateLimit        int
	RegisterGlobalRateLimit  int
	LoginAccountFailureLimit int

	// Chaos serves fault injection rules on every ops listener.
	Chaos bool
	// PProf serves Go profiles on every ops listener.
	PProf bool

	// The console (docs/console.md): whether `all` runs it, where it
	// listens, how many traces it keeps, and how many new traces a second
	// each service sends it.
	ConsoleEnabled         bool
	ConsoleAddr            string
	ConsoleTraces          int
	ConsoleTracesPerSecond float64

	// targets is derived by Validate: the services to run, in start order;
	// console, whether this process runs the console.
	targets []string
	console bool
}

// defaultPorts are the well-known ports of the services (README.md).
var defaultPorts = map[string][2]int{
	gateway.Name: {3001, 9101}, users.Name: {3002, 9102}, orders.Name: {3003, 9103}, notifications.Name: {3004, 9104},
}

// registerStorageFlags declares where each service keeps its data: the
// settings `run` and `migrate` share.
func (c *Config) registerStorageFlags(f *flags) {
	f.String(&c.Target, "target", "BLUEPRINT_TARGET", "all",
		"what to run: all (every service and the console), or a comma list of gateway, users, orders, notifications, console")
	f.String(&c.DataDir, "data-dir", "BLUEPRINT_DATA_DIR", "./.blueprint",
		"directory for the embedded databases and NATS store")
	c.Services = map[string]*serviceConfig{}
	for _, s := range services {
		sc := &serviceConfig{}
		c.Services[s] = sc
		if _, ok := migrations[s]; ok {
			f.URL(&sc.DatabaseURL, s+"-database-url", strings.ToUpper(s)+"_DATABASE_URL", "",
				"postgres://… or sqlite:<path>; empty: sqlite:<data-dir>/"+s+".db")
		}
	}
}

// registerFlags declares every setting of `run`.
func (c *Config) registerFlags(f *flags) {
	c.registerStorageFlags(f)
	f.String(&c.KeysDir, "keys-dir", "BLUEPRINT_KEYS_DIR", "",
		"directory of keys from 'blueprint keys generate'; empty makes keys in memory (target all only)")
	f.String(&c.LogLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	f.String(&c.LogFormat, "log-format", "LOG_FORMAT", "auto", "json, text, or auto (text on a terminal)")

	for _, s := range services {
		sc := c.Services[s]
		up := strings.ToUpper(s)
		ports := defaultPorts[s]
		f.String(&sc.Addr, s+"-addr", up+"_ADDR", fmt.Sprintf("127.0.0.1:%d", ports[0]), s+" API listen address")
		f.String(&sc.OpsAddr, s+"-ops-addr", up+"_OPS_ADDR", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			s+" ops listen address (/metrics, /healthz, /readyz; /debug/pprof/ with PPROF_ENABLED)")
		if s == gateway.Name {
			continue
		}
		f.URLs(&sc.URL, s+"-url", up+"_URL", "",
			fmt.Sprintf("%s base URLs, comma-separated; empty: this process's %s, else http://127.0.0.1:%d", s, s, ports[0]))
	}

	c.registerNATSClientFlags(f, "NATS server URLs, comma-separated; empty runs an embedded server")
	f.String(&c.NATSEmbeddedAddr, "nats-embedded-addr", "NATS_EMBEDDED_ADDR", "",
		"host:port on which the embedded NATS server also accepts TCP clients; empty: in-process only")
	f.Int(&c.NATSStreamReplicas, "nats-stream-replicas", "NATS_STREAM_REPLICAS", 1,
		"replicas of the JetStream streams (3 on a cluster)")

	policy := upstream.DefaultPolicy()
	f.Duration(&c.UpstreamTimeout, "upstream-timeout", "UPSTREAM_TIMEOUT", 5*time.Second,
		"deadline of one call to another service, retries included; the callee is told what is left of it")
	f.Duration(&c.UpstreamAttemptTimeout, "upstream-attempt-timeout", "UPSTREAM_ATTEMPT_TIMEOUT", 2*time.Second,
		"deadline of one attempt of a call, so a hung replica leaves time to retry on another")
	f.Duration(&c.UpstreamConnectTimeout, "upstream-connect-timeout", "UPSTREAM_CONNECT_TIMEOUT", time.Second,
		"deadline for connecting to another service")
	f.Int(&c.UpstreamRetries, "upstream-retries", "UPSTREAM_RETRIES", policy.MaxRetries,
		fmt.Sprintf("retries of a call safe to repeat (GET, or with an Idempotency-Key), within a budget of %.0f%% of calls; 0 never retries",
			100*policy.RetryBudget))
	f.Int(&c.UpstreamMaxInFlight, "upstream-max-in-flight", "UPSTREAM_MAX_IN_FLIGHT", policy.MaxInFlight,
		"calls to one service waiting at once (its bulkhead); more are refused with 503")
	f.Float(&c.UpstreamBreakerFailureRate, "upstream-breaker-failure-rate", "UPSTREAM_BREAKER_FAILURE_RATE", policy.BreakerFailureRate,
		fmt.Sprintf("share of a replica's attempts failing over %v (at least %d attempts) that opens its circuit breaker",
			policy.BreakerWindow, policy.BreakerMinCalls))
	f.Duration(&c.UpstreamBreakerDelay, "upstream-breaker-delay", "UPSTREAM_BREAKER_DELAY", policy.BreakerDelay,
		"how long an open circuit breaker refuses calls before letting a few probes through")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", 10*time.Second,
		"how long requests in flight may run after SIGTERM")
	f.Duration(&c.OutboxPollInterval, "outbox-poll-interval", "OUTBOX_POLL_INTERVAL", time.Second,
		"how often the outbox relay looks for events when not woken by a commit")
	f.Duration(&c.OutboxRetention, "outbox-retention", "OUTBOX_RETENTION", time.Hour,
		"how long an event stays in the outbox table after it was published; older ones are deleted every minute")
	f.Int(&c.WorkerConcurrency, "notifications-concurrency", "NOTIFICATIONS_CONCURRENCY", 64,
		"events one notifications worker handles at once")
	f.Duration(&c.WorkerAckWait, "notifications-ack-wait", "NOTIFICATIONS_ACK_WAIT", notifications.DefaultAckWait,
		"how long NATS waits for a worker's ack or heartbeat before redelivering an event to another replica")
	f.Int(&c.WorkerMaxDeliver, "notifications-max-deliver", "NOTIFICATIONS_MAX_DELIVER", notifications.DefaultMaxDeliver,
		"attempts per event before it is dead-lettered")
	f.URL(&c.NotifyWebhookURL, "notify-webhook-url", "NOTIFY_WEBHOOK_URL", "",
		"http(s) URL that receives each notification as a signed POST; empty: notifications go to the log")
	f.Secret(&c.NotifyWebhookSecret, "notify-webhook-secret", "NOTIFY_WEBHOOK_SECRET",
		"key that signs webhook requests: whsec_ and base64 of 24 to 64 bytes, or at least 32 characters; required with NOTIFY_WEBHOOK_URL")
	f.Duration(&c.NotifyWebhookTimeout, "notify-webhook-timeout", "NOTIFY_WEBHOOK_TIMEOUT", notifications.DefaultWebhookTimeout,
		"deadline of one webhook request; a receiver slower than this is retried")
	f.Bool(&c.NotifyWebhookAllowLinkLocal, "notify-webhook-allow-link-local", "NOTIFY_WEBHOOK_ALLOW_LINK_LOCAL", false,
		"let the webhook reach link-local addresses (169.254.0.0/16, fe80::/10); cloud metadata endpoints stay refused")

	f.Int(&c.GatewayMaxInFlight, "gateway-max-in-flight", "GATEWAY_MAX_IN_FLIGHT", 512,
		"requests the gateway serves at once; past it, it answers 503 with Retry-After at once (0 switches shedding off)")
	f.Int(&c.GatewayMaxInFlightPerIP, "gateway-max-in-flight-per-ip", "GATEWAY_MAX_IN_FLIGHT_PER_IP", 32,
		"requests one client IP may have in flight at once; past it, it answers 429 with Retry-After at once (0 switches it off)")
	f.Bool(&c.RateLimitsEnabled, "rate-limits", "RATE_LIMITS_ENABLED", true,
		"apply the gateway's rate limits; false switches every limit off (load tests)")
	f.Float(&c.RateLimitRPS, "rate-limit-rps", "RATE_LIMIT_RPS", 100,
		"requests per second per client IP and per user")
	f.Int(&c.RateLimitBurst, "rate-limit-burst", "RATE_LIMIT_BURST", 200,
		"burst above the per-second rate")
	f.Int(&c.RegisterRateLimit, "register-rate-limit", "REGISTER_RATE_LIMIT", 30,
		"registration attempts per hour per client IP")
	f.Int(&c.RegisterGlobalRateLimit, "register-global-rate-limit", "REGISTER_GLOBAL_RATE_LIMIT", 10,
		"registrations per second from every client together, in bursts of 3 seconds' worth")
	f.Int(&c.LoginRateLimit, "login-rate-limit", "LOGIN_RATE_LIMIT", 20,
		"login attempts per minute per client IP")
	f.Int(&c.LoginFailureLimit, "login-failure-limit", "LOGIN_FAILURE_LIMIT", 5,
		"failed logins per 15 minutes per email and client IP")
	f.Int(&c.LoginAccountFailureLimit, "login-account-failure-limit", "LOGIN_ACCOUNT_FAILURE_LIMIT", 20,
		"failed logins per 15 minutes per email from every client IP, more than LOGIN_FAILURE_LIMIT; each failure past it locks the email's logins for 1s, doubling up to 15m")
	f.Secret(&c.RedisURL, "redis-url", "REDIS_URL",
		"redis://[user:password@]host:6379/0, rediss://… or unix://…: keep the rate-limit buckets in Redis, shared by every gateway replica; empty keeps them in each gateway's memory")
	f.String(&c.RedisKeyPrefix, "redis-key-prefix", "REDIS_KEY_PREFIX", "blueprint:",
		"start of every key the gateway writes to Redis, so that deployments can share one Redis")

	f.Bool(&c.Chaos, "chaos", "BLUEPRINT_CHAOS", false,
		"serve /chaos on every ops listener to inject latency, errors and crashes (demos and fault tests only)")
	f.Bool(&c.ConsoleEnabled, "console", "CONSOLE_ENABLED", true,
		"run the console with --target=all; --target=console runs it whatever this says")
	f.String(&c.ConsoleAddr, "console-addr", "CONSOLE_ADDR", "127.0.0.1:9400",
		"listen address of the console: its web pages and its OTLP/HTTP receiver (/v1/traces, /v1/metrics, /v1/logs)")
	f.Int(&c.ConsoleTraces, "console-traces", "CONSOLE_TRACES", console.DefaultLimits.Traces,
		"traces the console keeps in memory, with their log records; the oldest go first")
	f.Float(&c.ConsoleTracesPerSecond, "console-traces-per-second", "CONSOLE_TRACES_PER_SECOND", 20,
		"new traces each service in this process starts a second for the console, when no trace exporter or sampler is set; requests past it get trace ids, not spans")
	f.Bool(&c.PProf, "pprof", "PPROF_ENABLED", false,
		"serve Go profiles at /debug/pprof/ on every ops listener; off by default: they show the command line, flags and all, and let whoever reaches the port slow the process down")
}

// registerNATSClientFlags declares how to reach NATS: the settings `run`
// and `dlq` share. urlUsage says what an empty NATS_URL means to the command.
func (c *Config) registerNATSClientFlags(f *flags, urlUsage string) {
	f.URLs(&c.NATSURL, "nats-url", "NATS_URL", "", urlUsage)
	f.String(&c.NATSCreds, "nats-creds", "NATS_CREDS", "", "NATS credentials file (user JWT and seed)")
	f.String(&c.NATSNKey, "nats-nkey", "NATS_NKEY", "",
		"NATS NKey seed file; empty: each service's nats-<service>.nk in BLUEPRINT_KEYS_DIR, when there")
	f.String(&c.NATSTLSCA, "nats-tls-ca", "NATS_TLS_CA", "", "CA certificate file to verify the NATS servers")
	f.String(&c.NATSTLSCert, "nats-tls-cert", "NATS_TLS_CERT", "", "client certificate file for mutual TLS with NATS")
	f.String(&c.NATSTLSKey, "nats-tls-key", "NATS_TLS_KEY", "", "client key file for mutual TLS with NATS")
}

// Validate checks the configuration and derives the target list. Every
// problem is reported, each naming its variable.
func (c *Config) Validate() error {
	errs := c.validateStorage()
	targets := c.targets
	if _, err := telemetry.ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %w", err))
	}
	if _, err := telemetry.ParseLogFormat(c.LogFormat); err != nil {
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %w", err))
	}
	if c.console {
		if _, _, err := net.SplitHostPort(c.ConsoleAddr); err != nil {
			errs = append(errs, fmt.Errorf("CONSOLE_ADDR: %q is not host:port", c.ConsoleAddr))
		}
		if c.ConsoleTraces < 1 {
			errs = append(errs, errors.New("CONSOLE_TRACES: must be at least 1"))
		}
		if c.ConsoleTracesPerSecond <= 0 {
			errs = append(errs, errors.New("CONSOLE_TRACES_PER_SECOND: must be more than 0"))
		}
	}
	if c.KeysDir == "" && len(targets) > 0 && len(targets) < len(services) {
		errs = append(errs, errors.New("BLUEPRINT_KEYS_DIR: required unless --target=all, because services in different processes must share keys (make them with `blueprint keys generate`)"))
	}
	for _, s := range services {
		sc := c.Services[s]
		up := strings.ToUpper(s)
		for env, addr := range map[string]string{up + "_ADDR": sc.Addr, up + "_OPS_ADDR": sc.OpsAddr} {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not host:port", env, addr))
			}
		}
		for _, u := range splitList(sc.URL) {
			if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				errs = append(errs, fmt.Errorf("%s_URL: %q is not an http(s) URL", up, redactURL(u)))
			}
		}
	}
	errs = append(errs, c.validateNATSClient()...)
	if c.NATSEmbeddedAddr != "" {
		if _, _, err := net.SplitHostPort(c.NATSEmbeddedAddr); err != nil {
			errs = append(errs, fmt.Errorf("NATS_EMBEDDED_ADDR: %q is not host:port", c.NATSEmbeddedAddr))
		}
	}
	for env, d := range map[string]time.Duration{
		"UPSTREAM_TIMEOUT": c.UpstreamTimeout, "UPSTREAM_ATTEMPT_TIMEOUT": c.UpstreamAttemptTimeout,
		"UPSTREAM_CONNECT_TIMEOUT": c.UpstreamConnectTimeout, "UPSTREAM_BREAKER_DELAY": c.UpstreamBreakerDelay,
		"OUTBOX_POLL_INTERVAL": c.OutboxPollInterval, "OUTBOX_RETENTION": c.OutboxRetention,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be more than 0", env))
		}
	}
	if c.UpstreamMaxInFlight < 1 {
		errs = append(errs, errors.New("UPSTREAM_MAX_IN_FLIGHT: must be at least 1"))
	}
	if c.UpstreamBreakerFailureRate <= 0 || c.UpstreamBreakerFailureRate > 1 {
		errs = append(errs, errors.New("UPSTREAM_BREAKER_FAILURE_RATE: must be more than 0 and at most 1"))
	}
	if c.WorkerConcurrency < 1 {
		errs = append(errs, errors.New("NOTIFICATIONS_CONCURRENCY: must be at least 1"))
	}
	// Shorter, and a heartbeat delayed by a network hiccup hands a live
	// worker's event to another replica.
	if c.WorkerAckWait < time.Second {
		errs = append(errs, errors.New("NOTIFICATIONS_ACK_WAIT: must be at least 1s"))
	}
	if c.WorkerMaxDeliver < 1 {
		errs = append(errs, errors.New("NOTIFICATIONS_MAX_DELIVER: must be at least 1"))
	}
	errs = append(errs, c.validateWebhook()...)
	if c.NATSStreamReplicas < 1 || c.NATSStreamReplicas > 5 {
		errs = append(errs, errors.New("NATS_STREAM_REPLICAS: must be 1 to 5"))
	}
	if c.RateLimitRPS > 0 && c.RateLimitBurst < 1 {
		errs = append(errs, errors.New("RATE_LIMIT_BURST: must be at least 1 when RATE_LIMIT_RPS is set"))
	}
	if c.LoginFailureLimit > 0 && c.LoginAccountFailureLimit > 0 && c.LoginAccountFailureLimit <= c.LoginFailureLimit {
		errs = append(errs, errors.New("LOGIN_ACCOUNT_FAILURE_LIMIT: must be more than LOGIN_FAILURE_LIMIT, or one address could lock an account for everyone"))
	}
	if c.RedisURL != "" {
		// The message never repeats the URL, which may hold a password.
		if _, err := gateway.RedisOptions(c.RedisURL); err != nil {
			errs = append(errs, fmt.Errorf("REDIS_URL: %w", err))
		}
	}
	return oneLine(errs)
}

// validateNATSClient checks the settings registerNATSClientFlags declares.
func (c *Config) validateNATSClient() []error {
	var errs []error
	for _, u := range splitList(c.NATSURL) {
		if p, err := url.Parse(u); err != nil || p.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, p.Scheme) {
			errs = append(errs, fmt.Errorf("NATS_URL: %q is not a nats:// URL", redactURL(u)))
		}
	}
	for env, file := range map[string]string{
		"NATS_CREDS": c.NATSCreds, "NATS_NKEY": c.NATSNKey, "NATS_TLS_CA": c.NATSTLSCA, "NATS_TLS_CERT": c.NATSTLSCert, "NATS_TLS_KEY": c.NATSTLSKey,
	} {
		if file == "" {
			continue
		}
		if c.NATSURL == "" {
			errs = append(errs, fmt.Errorf("%s: set, but NATS_URL is not (the embedded server needs no credentials)", env))
		} else if _, err := os.Stat(file); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", env, err))
		}
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		errs = append(errs, errors.New("NATS_CREDS and NATS_NKEY: set one, not both"))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY: set both or neither"))
	}
	return errs
}

// validateWebhook checks the webhook channel's settings. Its messages
// repeat neither the secret nor the URL, which may carry a token.
func (c *Config) validateWebhook() []error {
	var errs []error
	if c.NotifyWebhookURL == "" {
		if c.NotifyWebhookSecret != "" {
			errs = append(errs, errors.New("NOTIFY_WEBHOOK_SECRET: set, but NOTIFY_WEBHOOK_URL is not"))
		}
	} else {
		if _, err := notifications.CheckWebhookURL(c.NotifyWebhookURL, c.NotifyWebhookAllowLinkLocal); err != nil {
			errs = append(errs, fmt.Errorf("NOTIFY_WEBHOOK_URL: %w", err))
		}
		if c.NotifyWebhookSecret == "" {
			errs = append(errs, errors.New("NOTIFY_WEBHOOK_SECRET: required when NOTIFY_WEBHOOK_URL is set"))
		} else if _, err := notifications.ParseWebhookSecret(c.NotifyWebhookSecret); err != nil {
			errs = append(errs, fmt.Errorf("NOTIFY_WEBHOOK_SECRET: %w", err))
		}
	}
	if c.NotifyWebhookTimeout <= 0 || c.NotifyWebhookTimeout > notifications.MaxWebhookTimeout {
		errs = append(errs, fmt.Errorf("NOTIFY_WEBHOOK_TIMEOUT: must be more than 0 and at most %v", notifications.MaxWebhookTimeout))
	}
	return errs
}

// validateStorage checks the settings registerStorageFlags declares and
// derives the target list.
func (c *Config) validateStorage() []error {
	var errs []error
	targets, withConsole, err := parseTargets(c.Target)
	if err != nil {
		errs = append(errs, err)
	}
	c.targets, c.console = targets, withConsole
	if !c.ConsoleEnabled && !slices.Contains(splitList(c.Target), consoleTarget) {
		c.console = false // all, with the console switched off
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("BLUEPRINT_DATA_DIR: must not be empty"))
	}
	for _, s := range services {
		if u := c.Services[s].DatabaseURL; u != "" {
			if _, _, err := sqldb.ParseURL(u); err != nil {
				errs = append(errs, fmt.Errorf("%s_DATABASE_URL: %w", strings.ToUpper(s), err))
			}
		}
	}
	return errs
}

// oneLine turns configuration problems into the one-line usage error:
// the first problem, and how many more there are.
func oneLine(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msg := "invalid configuration: " + errs[0].Error()
	if len(errs) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(errs)-1)
	}
	return &UsageError{msg: msg}
}

// parseTargets turns "all" or a comma list into services in start order,
// and whether the console runs too: with all, unless CONSOLE_ENABLED is
// false (validateStorage checks that); named, always.
func parseTargets(target string) (targets []string, withConsole bool, err error) {
	for _, t := range splitList(target) {
		switch {
		case t == "all":
			return services, true, nil
		case t == consoleTarget:
			withConsole = true
		case slices.Contains(services, t):
			targets = append(targets, t)
		default:
			return nil, false, fmt.Errorf("BLUEPRINT_TARGET: unknown target %q; use all, console, gateway, users, orders or notifications", t)
		}
	}
	if len(targets) == 0 && !withConsole {
		return nil, false, errors.New("BLUEPRINT_TARGET: empty; use all or a comma list of services")
	}
	// Start order is the order of services, whatever order was given.
	slices.SortFunc(targets, func(a, b string) int { return slices.Index(services, a) - slices.Index(services, b) })
	return slices.Compact(targets), withConsole, nil
}

// consoleTarget is the console's name in BLUEPRINT_TARGET.
const consoleTarget = "console"

func (c *Config) runs(service string) bool { return slices.Contains(c.targets, service) }

// databaseURL is the service's database, SQLite under the data dir by default.
func (c *Config) databaseURL(service string) string {
	if u := c.Services[service].DatabaseURL; u != "" {
		return u
	}
	return "sqlite:" + filepath.Join(c.DataDir, service+".db")
}
