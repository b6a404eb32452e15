// Package localcluster starts Blueprint as production runs it, on one
// machine: a NATS cluster with JetStream, every service as several OS
// processes of the blueprint binary, each service with its own PostgreSQL
// database, all on loopback ports. deploy/local runs it for people; the
// cluster and fault tests run it to kill, pause and restart processes in the
// middle of a load.
package localcluster

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to create the databases
)

// Config says what to start.
type Config struct {
	// Binary is the blueprint binary every process runs.
	Binary string
	// Dir holds keys, NATS stores and one log file per process.
	Dir string
	// PostgresURL is a server on which the cluster may create databases.
	// Empty means SQLite: one file per service under Dir, shared by the
	// service's replicas (fine on one machine, for tests).
	PostgresURL string
	// DatabasePrefix names the databases: <prefix>_users, _orders,
	// _notifications. They are created when missing.
	DatabasePrefix string
	// Replicas per service, and the number of NATS nodes (1 or 3); 0
	// means 1.
	NATSNodes, Gateways, Users, Orders, Notifications int
	// NATSListen pins the client addresses of the NATS nodes (a test puts
	// a proxy in front of one); nodes beyond it get free ports.
	NATSListen []string
	// AllInOne runs the newcomer's shape instead: one process, named
	// "blueprint", with every service, its embedded NATS (reachable over TCP
	// at NATSURL) and SQLite files in its data dir. The counts are ignored.
	AllInOne bool
	// Console, when set, is the listen address of a console process
	// (`run --target=console`) started before the services, each of them
	// exporting its telemetry to it over OTLP. AllInOne runs its own
	// console instead, on a free port.
	Console string
	// Env is added to every service's environment, then ServiceEnv to the
	// named service's (later entries win).
	Env        []string
	ServiceEnv map[string][]string
	// Log, when set, receives every process's output, each line prefixed
	// with the process name.
	Log io.Writer
}

// Process is one running OS process of the cluster.
type Process struct {
	Name string
	// URL is where it serves: the API for a service, nats:// for a node.
	URL string
	// OpsURL is a service's ops listener.
	OpsURL string

	c         *Cluster
	args, env []string
	readyLine string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

// Cluster is a running local cluster.
type Cluster struct {
	cfg       Config
	Processes []*Process // in start order
	// Databases are the URLs of the services' databases, by service.
	Databases map[string]string
	// NATSURL lists every node, comma-separated, as services connect.
	NATSURL string
	// NATSNKey is the seed of the NATS admin user, for tools and checks
	// that read the streams (the nodes admit only the users of the keys);
	// empty in AllInOne mode, whose embedded server needs none.
	NATSNKey string
	// ConsoleURL is the console's: AllInOne's own, or Config.Console's.
	ConsoleURL string
	// OpsURLs are the ops listeners by service, in AllInOne mode.
	OpsURLs map[string]string
}

// Start brings the whole cluster up and returns once every process has
// said it is ready. On error it stops what it started.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	for _, n := range []*int{&cfg.NATSNodes, &cfg.Gateways, &cfg.Users, &cfg.Orders, &cfg.Notifications} {
		*n = max(1, *n)
	}
	c := &Cluster{cfg: cfg, Databases: map[string]string{}}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if cfg.PostgresURL == "" {
		for _, s := range []string{"users", "orders", "notifications"} {
			c.Databases[s] = "sqlite:" + filepath.Join(cfg.Dir, s+".db")
		}
	} else if err := c.createDatabases(ctx); err != nil {
		return nil, err
	}
	keys := filepath.Join(cfg.Dir, "keys")
	if _, err := os.Stat(filepath.Join(keys, "trust.json")); errors.Is(err, os.ErrNotExist) {
		if out, err := exec.CommandContext(ctx, cfg.Binary, "keys", "generate", "--out", keys).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("keys generate: %v: %s", err, out)
		}
	}
	if cfg.AllInOne {
		return c, c.startAllInOne(ctx, keys)
	}
	if err := c.startNATS(ctx, keys); err != nil {
		return nil, err
	}

	// Every replica listens on its own ports; callers get every replica's
	// address, comma-separated, and spread their calls over them.
	type replica struct{ name, addr, ops string }
	plan := map[string][]replica{}
	counts := map[string]int{"users": cfg.Users, "orders": cfg.Orders, "notifications": cfg.Notifications, "gateway": cfg.Gateways}
	urls := map[string][]string{}
	for _, s := range []string{"users", "orders", "notifications", "gateway"} {
		for i := 1; i <= counts[s]; i++ {
			addr, ops := FreeAddr(), FreeAddr()
			if addr == "" || ops == "" {
				return nil, errors.New("no free loopback port")
			}
			plan[s] = append(plan[s], replica{name: fmt.Sprintf("%s-%d", s, i), addr: addr, ops: ops})
			urls[s] = append(urls[s], "http://"+addr)
		}
	}
	// Nine processes share one server on a laptop: small pools keep them
	// well within its max_connections.
	pooled := func(db string) string {
		if strings.HasPrefix(db, "sqlite:") {
			return db
		}
		return db + sep(db) + "pool_max_conns=5"
	}
	env := append(os.Environ(),
		"BLUEPRINT_KEYS_DIR="+keys,
		"NATS_URL="+c.NATSURL,
		fmt.Sprintf("NATS_STREAM_REPLICAS=%d", min(3, cfg.NATSNodes)),
		"LOG_FORMAT=json",
		"USERS_URL="+strings.Join(urls["users"], ","),
		"ORDERS_URL="+strings.Join(urls["orders"], ","),
		"NOTIFICATIONS_URL="+strings.Join(urls["notifications"], ","),
		"USERS_DATABASE_URL="+pooled(c.Databases["users"]),
		"ORDERS_DATABASE_URL="+pooled(c.Databases["orders"]),
		"NOTIFICATIONS_DATABASE_URL="+pooled(c.Databases["notifications"]),
	)
	if cfg.Console != "" {
		if err := c.startConsole(ctx); err != nil {
			return nil, err
		}
		// Metrics every 5 s, as in-process services send them, so that
		// rates and breaker states are live.
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+c.ConsoleURL, "OTEL_METRIC_EXPORT_INTERVAL=5000")
	}
	env = append(env, cfg.Env...)
	for _, s := range []string{"users", "orders", "notifications", "gateway"} {
		for _, r := range plan[s] {
			up := strings.ToUpper(s)
			p := &Process{Name: r.name, URL: "http://" + r.addr, OpsURL: "http://" + r.ops}
			args := []string{"run", "--target=" + s, "--data-dir", filepath.Join(cfg.Dir, r.name)}
			penv := append(env[:len(env):len(env)], up+"_ADDR="+r.addr, up+"_OPS_ADDR="+r.ops)
			penv = append(penv, cfg.ServiceEnv[s]...)
			if err := c.start(ctx, p, args, penv, "blueprint ready"); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// startAllInOne runs every service in one process on fresh loopback ports.
// The keys come from files, so tokens outlive a restart of the process.
func (c *Cluster) startAllInOne(ctx context.Context, keys string) error {
	natsAddr := FreeAddr()
	c.NATSURL = "nats://" + natsAddr
	dataDir := filepath.Join(c.cfg.Dir, "blueprint")
	env := append(os.Environ(), "BLUEPRINT_KEYS_DIR="+keys, "NATS_EMBEDDED_ADDR="+natsAddr, "LOG_FORMAT=json")
	for _, s := range []string{"users", "orders", "notifications"} {
		c.Databases[s] = "sqlite:" + filepath.Join(dataDir, s+".db")
	}
	addrs, ops := map[string]string{}, map[string]string{}
	for _, s := range []string{"users", "orders", "notifications", "gateway"} {
		up := strings.ToUpper(s)
		addrs[s], ops[s] = FreeAddr(), FreeAddr()
		env = append(env, up+"_ADDR="+addrs[s], up+"_OPS_ADDR="+ops[s])
	}
	c.ConsoleURL = "http://" + FreeAddr()
	env = append(env, "CONSOLE_ADDR="+strings.TrimPrefix(c.ConsoleURL, "http://"))
	env = append(env, c.cfg.Env...)
	// The process answers at the gateway; it is ready once the ready line
	// is out, which waits for every service's readiness.
	p := &Process{Name: "blueprint", URL: "http://" + addrs["gateway"], OpsURL: "http://" + ops["gateway"]}
	c.OpsURLs = ops
	return c.start(ctx, p, []string{"run", "--data-dir", dataDir}, env, "blueprint ready")
}

// startConsole runs the console on its own, reading dead letters from the
// cluster's NATS as its admin user.
func (c *Cluster) startConsole(ctx context.Context) error {
	c.ConsoleURL = "http://" + c.cfg.Console
	p := &Process{Name: "console", URL: c.ConsoleURL}
	env := append(os.Environ(), "CONSOLE_ADDR="+c.cfg.Console, "NATS_URL="+c.NATSURL, "NATS_NKEY="+c.NATSNKey, "LOG_FORMAT=json")
	return c.start(ctx, p, []string{"run", "--target=console", "--data-dir", filepath.Join(c.cfg.Dir, "console")}, env, "blueprint ready")
}

// createDatabases makes each service's database on the PostgreSQL server.
func (c *Cluster) createDatabases(ctx context.Context) error {
	admin, err := sql.Open("pgx", c.cfg.PostgresURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer admin.Close()
	base, err := url.Parse(c.cfg.PostgresURL)
	if err != nil {
		return fmt.Errorf("postgres URL: %w", err)
	}
	for _, s := range []string{"users", "orders", "notifications"} {
		name := c.cfg.DatabasePrefix + "_" + s
		var exists bool
		if err := admin.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		if !exists {
			// Quoted: the name is the user's prefix, and unquoted PostgreSQL
			// would fold it to lower case and then not find it by this name.
			if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
				return fmt.Errorf("create database %s: %w", name, err)
			}
		}
		u := *base
		u.Path = "/" + name
		c.Databases[s] = u.String()
	}
	return nil
}

// DropDatabases removes the databases Start created.
func (c *Cluster) DropDatabases(ctx context.Context) error {
	admin, err := sql.Open("pgx", c.cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer admin.Close()
	var errs []error
	for _, s := range []string{"users", "orders", "notifications"} {
		name := pgx.Identifier{c.cfg.DatabasePrefix + "_" + s}.Sanitize()
		_, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// startNATS starts the nodes as a cluster (or one server) and waits for
// JetStream to have a leader on each. They admit only the NATS users of
// the keys, as a deployment's do: each service connects with its own seed.
func (c *Cluster) startNATS(ctx context.Context, keys string) error {
	n := c.cfg.NATSNodes
	clients, routes := make([]string, n), make([]string, n)
	for i := range n {
		clients[i], routes[i] = FreeAddr(), FreeAddr()
		if i < len(c.cfg.NATSListen) {
			clients[i] = c.cfg.NATSListen[i]
		}
	}
	var urls []string
	for i := range n {
		p := &Process{Name: fmt.Sprintf("nats-%d", i+1), URL: "nats://" + clients[i]}
		args := []string{"nats", "--name", p.Name, "--listen", clients[i], "--store-dir", filepath.Join(c.cfg.Dir, p.Name),
			"--config", filepath.Join(keys, "nats-auth.conf")}
		if n > 1 {
			var peers []string
			for _, r := range routes {
				peers = append(peers, "nats://"+r)
			}
			args = append(args, "--cluster-listen", routes[i], "--routes", strings.Join(peers, ","))
		}
		if err := c.start(ctx, p, args, os.Environ(), "nats ready"); err != nil {
			return err
		}
		urls = append(urls, p.URL)
	}
	c.NATSURL = strings.Join(urls, ",")
	c.NATSNKey = filepath.Join(keys, "nats-admin.nk")
	return nil
}

// start runs a new process and waits until it is ready.
func (c *Cluster) start(ctx context.Context, p *Process, args, env []string, readyLine string) error {
	p.c, p.args, p.env, p.readyLine = c, args, env, readyLine
	c.Processes = append(c.Processes, p)
	return p.run(ctx)
}

// Restart starts a process that has exited (killed or stopped) again, with
// the same arguments, environment and data, and waits until it is ready.
func (p *Process) Restart(ctx context.Context) error {
	if p.Running() {
		return fmt.Errorf("%s is still running", p.Name)
	}
	return p.run(ctx)
}

// run execs the process, waits for its ready line and, for a service, for
// its /readyz.
func (p *Process) run(ctx context.Context) error {
	c := p.c
	// Append: a restarted process keeps the log of its earlier lives.
	logFile, err := os.OpenFile(filepath.Join(c.cfg.Dir, p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.cmd = exec.Command(c.cfg.Binary, p.args...)
	p.cmd.Env = p.env
	// A process group of its own: a Ctrl-C at the terminal reaches only the
	// launcher, which then stops the processes in order, one signal each.
	// Pdeathsig: if the launcher itself dies, its processes die with it
	// instead of running on unowned.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return err
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.done = make(chan struct{})
	ready := make(chan struct{})
	var once sync.Once
	go func() { // copies output until the process exits, then reaps it
		defer close(p.done)
		defer logFile.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if c.cfg.Log != nil {
				fmt.Fprintf(c.cfg.Log, "%-16s %s\n", p.Name, line)
			}
			if strings.Contains(line, p.readyLine) {
				once.Do(func() { close(ready) })
			}
		}
		p.err = p.cmd.Wait()
	}()
	select {
	case <-ready:
		if p.OpsURL == "" {
			return nil
		}
		return waitReady(ctx, p)
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready (%v); see %s.log", p.Name, p.err, filepath.Join(c.cfg.Dir, p.Name))
	case <-time.After(60 * time.Second):
		return fmt.Errorf("%s not ready after 60s; see %s.log", p.Name, filepath.Join(c.cfg.Dir, p.Name))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitReady polls a service's /readyz until it answers 200: its database,
// NATS and (for notifications) its consumer are usable.
func waitReady(ctx context.Context, p *Process) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(p.OpsURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s (%v); see its log", p.Name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready", p.Name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Dir is where the cluster keeps its keys, stores and process logs
// (<name>.log).
func (c *Cluster) Dir() string { return c.cfg.Dir }

// Get returns the process with the name, or nil.
func (c *Cluster) Get(name string) *Process {
	for _, p := range c.Processes {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Named returns the processes whose names start with prefix ("orders-").
func (c *Cluster) Named(prefix string) []*Process {
	var out []*Process
	for _, p := range c.Processes {
		if strings.HasPrefix(p.Name, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// Kill sends SIGKILL to the process and waits until it is gone: a crash,
// with no chance to finish anything.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Signal sends sig to the process: SIGSTOP and SIGCONT pause and resume
// it, as a long GC pause, a frozen VM or a stalled disk would.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Pid is the process's id, to read its /proc entries.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to every process, newest first (gateways before the
// services behind them, NATS last), waits for each and reports any that
// did not exit cleanly.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.Processes) - 1; i >= 0; i-- {
		p := c.Processes[i]
		if !p.Running() {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.Name, p.err))
			}
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s: still running 30s after SIGTERM; killed", p.Name))
		}
	}
	return errors.Join(errs...)
}

// sep is what joins another query parameter to a URL.
func sep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}

// FreeAddr returns a loopback address nothing listens on right now, which
// no other process using this package will hand out while this one runs.
// The port is drawn below the kernel's ephemeral range (32768 and up on
// Linux), because a process binds its port seconds after it was chosen and
// any outgoing connection could meanwhile be given an ephemeral one. Test
// binaries run side by side, so each port is also claimed with a lock on a
// file under the temp dir, held until this process exits.
func FreeAddr() string {
	portsMu.Lock()
	defer portsMu.Unlock()
	dir := filepath.Join(os.TempDir(), "blueprint-ports")
	_ = os.MkdirAll(dir, 0o777)
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if _, mine := portLocks[port]; mine {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // another process holds it
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			f.Close()
			continue
		}
		ln.Close()
		portLocks[port] = f
		return addr
	}
	return ""
}

var (
	portsMu   sync.Mutex
	portLocks = map[int]*os.File{} // kept open: closing would drop the lock
)
