package outbox_test

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// ackProxy sits on TCP between NATS clients and a server. It forwards both
// ways until a client publishes on its subject; from then on it holds back
// everything the server sends, on every connection, until release. So the
// publish reaches the stream while its PubAck never reaches the client, and
// the connection stays up: an ack timeout made by the network, as a
// partition or a stalled link makes it, not by a fake client.
type ackProxy struct {
	ln     net.Listener
	target string
	// publish is what a client writes to publish on the subject: the start
	// of a PUB or (with headers, as the relay sends) HPUB operation.
	publish []byte

	stalled    chan struct{} // closed when the publish passes
	stallOnce  sync.Once
	released   chan struct{} // closed by release
	closed     chan struct{} // closed when the test ends
	mu         sync.Mutex
	conns      []net.Conn
	wg         sync.WaitGroup
	acceptDone chan struct{}
}

// newAckProxy listens on a loopback port and forwards to target (host:port).
// It stops, closing every connection, when the test ends.
func newAckProxy(t *testing.T, target, subject string) *ackProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &ackProxy{
		ln:         ln,
		target:     target,
		publish:    []byte("PUB " + subject + " "),
		stalled:    make(chan struct{}),
		released:   make(chan struct{}),
		closed:     make(chan struct{}),
		acceptDone: make(chan struct{}),
	}
	go p.accept() // ends when close shuts the listener
	t.Cleanup(p.close)
	return p
}

// URL is the nats:// URL clients connect to.
func (p *ackProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Stalled is closed once a publish on the subject has passed to the server.
func (p *ackProxy) Stalled() <-chan struct{} { return p.stalled }

// release lets what the server sent, and sends from now on, through.
func (p *ackProxy) release() { close(p.released) }

func (p *ackProxy) close() {
	close(p.closed)
	_ = p.ln.Close()
	<-p.acceptDone
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *ackProxy) accept() {
	defer close(p.acceptDone)
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // the listener is closed
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		// Each copy ends when either side closes, then closes both.
		go func() { defer p.wg.Done(); p.toServer(server, client) }()
		go func() { defer p.wg.Done(); p.toClient(client, server) }()
	}
}

// toServer forwards what the client writes and marks the stall before the
// publish reaches the server, so its ack is certain to be held back.
func (p *ackProxy) toServer(server, client net.Conn) {
	defer closeBoth(server, client)
	buf := make([]byte, 32*1024)
	var tail []byte // the end of the last read, for a publish split across two
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if bytes.Contains(append(tail, buf[:n]...), p.publish) {
				p.stallOnce.Do(func() { close(p.stalled) })
			}
			tail = append(tail[:0], buf[max(0, n-len(p.publish)):n]...)
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// toClient forwards what the server writes, holding it while stalled. What
// is held stays in order: on release the client reads it all, late.
func (p *ackProxy) toClient(client, server net.Conn) {
	defer closeBoth(server, client)
	buf := make([]byte, 32*1024)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if !p.hold() {
				return
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold waits while the proxy is stalled. It reports false when the proxy
// closed meanwhile.
func (p *ackProxy) hold() bool {
	select {
	case <-p.stalled:
	default:
		return true
	}
	select {
	case <-p.released:
		return true
	case <-p.closed:
		return false
	}
}

func closeBoth(a, b net.Conn) {
	_ = a.Close()
	_ = b.Close()
}
