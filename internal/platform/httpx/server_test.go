package httpx_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// notifyListener tells the test when the server closes it: the moment
// shutdown has begun.
type notifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *notifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

func newNotifyListener(t *testing.T) *notifyListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return &notifyListener{Listener: ln, closed: make(chan struct{})}
}

// blockingHandler answers /slow only after release is closed, and tells the
// test through started that a request is in flight.
func blockingHandler(started chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
			_, _ = io.WriteString(w, "finished")
		case <-r.Context().Done():
		}
	})
}

type result struct {
	status int
	body   string
	err    error
}

func getAsync(ctx context.Context, url string) <-chan result {
	out := make(chan result, 1)
	go func() { // ends when the request does; the test reads out
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			out <- result{err: err}
			return
		}
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			out <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		out <- result{status: resp.StatusCode, body: string(body), err: err}
	}()
	return out
}

func TestServeDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	ln := newNotifyListener(t)
	started, release := make(chan struct{}), make(chan struct{})
	logger, _ := newTestLogger(t)

	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- httpx.Serve(ctx, ln, blockingHandler(started, release), logger, time.Minute) }()

	url := "http://" + ln.Addr().String() + "/slow"
	inFlight := getAsync(t.Context(), url)
	<-started

	cancel()
	<-ln.closed // shutdown has begun: no new connections, the request still runs

	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("dial after shutdown began succeeded, want the listener closed")
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v while a request was in flight, want it to wait", err)
	default:
	}

	close(release)
	res := <-inFlight
	if res.err != nil || res.status != http.StatusOK || res.body != "finished" {
		t.Errorf("in-flight GET /slow = %d %q, %v, want 200 \"finished\", nil", res.status, res.body, res.err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve() = %v, want nil after a clean drain", err)
	}
}

// TestServeCutsOffAfterDrain: a request that outlives the drain timeout is
// cut off so shutdown cannot hang forever.
func TestServeCutsOffAfterDrain(t *testing.T) {
	t.Parallel()
	ln := newNotifyListener(t)
	started, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	logger, logs := newTestLogger(t)

	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() {
		served <- httpx.Serve(ctx, ln, blockingHandler(started, release), logger, 10*time.Millisecond)
	}()

	inFlight := getAsync(t.Context(), "http://"+ln.Addr().String()+"/slow")
	<-started
	cancel()

	if err := <-served; err != nil {
		t.Errorf("Serve() = %v, want nil after cutting off a request", err)
	}
	if res := <-inFlight; res.err == nil {
		t.Errorf("cut-off GET /slow = %d %q, want a connection error", res.status, res.body)
	}
	if !strings.Contains(logs.String(), "drain timeout") {
		t.Errorf("logs = %s, want a warning about the drain timeout", logs)
	}
}

func TestServeReturnsListenerErrors(t *testing.T) {
	t.Parallel()
	ln := newNotifyListener(t)
	ln.Listener.Close() // Serve finds the listener already broken
	err := httpx.Serve(t.Context(), ln, http.NotFoundHandler(), slog.New(slog.DiscardHandler), time.Second)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve(closed listener) = %v, want an error wrapping net.ErrClosed", err)
	}
}
