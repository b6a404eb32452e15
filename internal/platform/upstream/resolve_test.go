package upstream_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// runClient runs cl.Run until the test ends.
func runClient(t *testing.T, cl *upstream.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }() // ends when cancel is called below
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
}

// hostServer answers 200 and records the Host header of each request.
type hostServer struct {
	*httptest.Server
	mu    sync.Mutex
	hosts []string
}

func (s *hostServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hosts)
}

// newHostServer serves on ln.
func newHostServer(t *testing.T, ln net.Listener) *hostServer {
	t.Helper()
	s := &hostServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hosts = append(s.hosts, r.Host)
		s.mu.Unlock()
	}))
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// TestRunResolvesLocalhost: a URL naming a host is dialled by name until
// Run has looked it up, then at each of its addresses, the Host header
// still the name.
func TestRunResolvesLocalhost(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHostServer(t, ln)
	port := ln.Addr().(*net.TCPAddr).Port
	hostPort := net.JoinHostPort("localhost", strconv.Itoa(port))
	cl := c.observedClient(t, upstream.Config{URLs: []string{"http://" + hostPort}})

	mustDo(t, context.Background(), cl.Client, get) // before Run: by name
	if got := cl.breakerReplicas(t); !slices.Equal(got, []string{hostPort}) {
		t.Errorf("replicas before Run = %v, want [%s]", got, hostPort)
	}

	runClient(t, cl.Client)
	want := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testwait.For(t, callWait, "Run to resolve localhost", func() bool { return slices.Contains(cl.breakerReplicas(t), want) })
	for range 4 {
		// localhost may also be ::1, where nothing listens: that replica's
		// refusals are retried on 127.0.0.1.
		mustDo(t, context.Background(), cl.Client, get)
	}
	for _, h := range srv.seen() {
		if h != hostPort {
			t.Errorf("server saw Host %q, want %q", h, hostPort)
		}
	}
	if lines := cl.logs.Records(t, "upstream replicas changed"); len(lines) != 1 || lines[0]["upstream"] != "users" {
		t.Errorf("replica change log lines = %v, want one for users", lines)
	}
}

// fakeResolver answers lookups with what the test sets.
type fakeResolver struct {
	mu      sync.Mutex
	addrs   []netip.Addr
	err     error
	lookups atomic.Int64
}

func (r *fakeResolver) set(err error, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err, r.addrs = err, nil
	for _, a := range addrs {
		r.addrs = append(r.addrs, netip.MustParseAddr(a))
	}
}

func (r *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if host != "users.internal" || network != "ip" {
		return nil, errors.New("no such host")
	}
	return slices.Clone(r.addrs), r.err
}

// TestRunFollowsDNS scales an upstream behind one name up and down: every
// address the name resolves to gets calls, an address gone from DNS gets
// none, a failed lookup keeps the replicas known, and a name gone from DNS
// leaves no replica until it is back.
func TestRunFollowsDNS(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln1.Addr().(*net.TCPAddr).Port)
	ln2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", port))
	if err != nil {
		ln1.Close()
		t.Skipf("this system cannot listen on 127.0.0.2:%s (%v); Linux routes all of 127/8 to loopback", port, err)
	}
	one, two := newHostServer(t, ln1), newHostServer(t, ln2)
	res := &fakeResolver{}
	res.set(nil, "127.0.0.1")
	p := fastPolicy()
	p.ResolveEvery = 10 * time.Millisecond
	cl := c.observedClient(t, upstream.Config{URLs: []string{"http://users.internal:" + port}, Policy: p, Resolver: res})
	runClient(t, cl.Client)
	replicasAre := func(want ...string) func() bool {
		for i, a := range want {
			want[i] = net.JoinHostPort(a, port)
		}
		return func() bool { return slices.Equal(cl.breakerReplicas(t), want) } // nil equals none
	}
	calls := func(n int) {
		for range n {
			mustDo(t, context.Background(), cl.Client, get)
		}
	}

	testwait.For(t, callWait, "one replica", replicasAre("127.0.0.1"))
	calls(4)
	if len(one.seen()) != 4 || len(two.seen()) != 0 {
		t.Fatalf("with one address: replicas got %d and %d calls, want 4 and 0", len(one.seen()), len(two.seen()))
	}

	res.set(nil, "127.0.0.2", "127.0.0.1")
	testwait.For(t, callWait, "two replicas", replicasAre("127.0.0.1", "127.0.0.2"))
	calls(4)
	if len(one.seen()) != 6 || len(two.seen()) != 2 {
		t.Errorf("with two addresses: replicas got %d and %d of 4 calls, want 2 each", len(one.seen())-4, len(two.seen()))
	}
	for _, h := range append(one.seen(), two.seen()...) {
		if h != "users.internal:"+port {
			t.Errorf("a replica saw Host %q, want users.internal:%s", h, port)
		}
	}

	res.set(errors.New("server misbehaving"))
	n := res.lookups.Load()
	testwait.For(t, callWait, "two failed lookups", func() bool { return res.lookups.Load() >= n+2 })
	if !replicasAre("127.0.0.1", "127.0.0.2")() {
		t.Errorf("replicas after failed lookups = %v, want the two known", cl.breakerReplicas(t))
	}
	if len(cl.logs.Records(t, "upstream lookup failed; keeping the replicas known")) == 0 {
		t.Errorf("no log line for the failed lookups")
	}

	res.set(nil, "127.0.0.2")
	testwait.For(t, callWait, "one replica again", replicasAre("127.0.0.2"))
	before := len(one.seen())
	calls(4)
	if got := len(one.seen()) - before; got != 0 {
		t.Errorf("the address gone from DNS got %d calls, want 0", got)
	}

	res.set(&net.DNSError{Err: "no such host", Name: "users.internal", IsNotFound: true})
	testwait.For(t, callWait, "no replica", replicasAre())
	resp, err := do(t, context.Background(), cl.Client, get)
	if ae := wantKind(t, "Do() with no replica", resp, err, apperr.Unavailable); ae.RetryAfter < 1 {
		t.Errorf("Do() with no replica RetryAfter = %d, want at least 1", ae.RetryAfter)
	}
	if got := cl.counter(t, "blueprint.upstream.rejections", attribute.String("upstream", "users"),
		attribute.String("reason", "no_replica")); got != 1 {
		t.Errorf("blueprint.upstream.rejections{reason=no_replica} = %d, want 1", got)
	}
	if lines := cl.logs.Records(t, "upstream has no replica; its calls fail until its name resolves"); len(lines) != 1 || lines[0]["level"] != "WARN" {
		t.Errorf("no-replica log lines = %v, want one WARN", lines)
	}
	res.set(nil, "127.0.0.1")
	testwait.For(t, callWait, "the name to resolve again", replicasAre("127.0.0.1"))
	calls(1)
}

// TestEjectionLooksUpAgain: the only replica dies, and DNS already names
// its replacement. The refused connection ejects the dead one and brings
// the next lookup forward, so calls reach the replacement at once, not at
// the next ResolveEvery (an hour here).
func TestEjectionLooksUpAgain(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(dead.Addr().(*net.TCPAddr).Port)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", port))
	if err != nil {
		dead.Close()
		t.Skipf("this system cannot listen on 127.0.0.2:%s (%v); Linux routes all of 127/8 to loopback", port, err)
	}
	dead.Close() // 127.0.0.1:port refuses connections from now on
	replacement := newHostServer(t, ln)
	res := &fakeResolver{}
	res.set(nil, "127.0.0.1")
	p := fastPolicy()
	p.ResolveEvery = time.Hour
	cl := c.observedClient(t, upstream.Config{URLs: []string{"http://users.internal:" + port}, Policy: p, Resolver: res})
	runClient(t, cl.Client)
	testwait.For(t, callWait, "the first lookup", func() bool {
		return slices.Equal(cl.breakerReplicas(t), []string{net.JoinHostPort("127.0.0.1", port)})
	})

	res.set(nil, "127.0.0.2")
	_, _ = do(t, context.Background(), cl.Client, get) // refused: the replica is ejected
	testwait.For(t, callWait, "the replacement", func() bool {
		return slices.Equal(cl.breakerReplicas(t), []string{net.JoinHostPort("127.0.0.2", port)})
	})
	mustDo(t, context.Background(), cl.Client, get)
	if len(replacement.seen()) == 0 {
		t.Errorf("the replacement got no call")
	}
	if n := res.lookups.Load(); n != 2 {
		t.Errorf("lookups = %d, want 2: the first, and the one the ejection brought forward", n)
	}
}
