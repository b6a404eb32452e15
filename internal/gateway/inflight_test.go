package gateway

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// dialFrom opens a TCP connection to addr from the loopback address ip, so
// that one test can be several clients to the per-IP limits. It skips the
// test where only 127.0.0.1 is loopback (macOS without aliases).
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp", addr)
	if err != nil {
		t.Skipf("clients from several loopback addresses are not possible here: %v", err)
	}
	return conn
}

// TestSlowClientHoldsOnlyItsShare: one address opens many registrations
// whose bodies never finish arriving (1 byte of 200), on a real listener.
// It may hold MaxInFlightPerIP of the gateway's slots; every request past
// that is answered 429 at once, body unread, and another client is served
// as if nothing happened.
func TestSlowClientHoldsOnlyItsShare(t *testing.T) {
	t.Parallel()
	const maxInFlight, perIP, attempts = 16, 4, 40
	tg := newTestGateway(t, Limits{MaxInFlight: maxInFlight, MaxInFlightPerIP: perIP}, newFakeClock().now)
	srv := httptest.NewServer(tg.Handler())
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	// The slow client. Its held requests end when the test closes their
	// connections, before srv.Close waits for them.
	type answer struct {
		status     int
		retryAfter string
		code       string
	}
	answers := make(chan answer, attempts)
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range attempts {
		conn := dialFrom(t, "127.0.0.2", addr)
		conns = append(conns, conn)
		if _, err := fmt.Fprint(conn, "POST /auth/register HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		go func() { // returns when an answer comes or the test closes conn
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return
			}
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type")}
		}()
	}

	// Every attempt is either held in the gateway or was refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := tg.counter(t, "blueprint.gateway.rate_limited")["ip_in_flight"] + tg.counter(t, "blueprint.gateway.shed")[""]
		if tg.inFlight.Load()+c == attempts {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d requests in flight, %d refused; want all %d attempts accounted for", tg.inFlight.Load(), c, attempts)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Another client is served in full, sending as many at once as its own
	// share allows.
	other := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}).DialContext,
	}, Timeout: 10 * time.Second}
	t.Cleanup(other.CloseIdleConnections)
	var wg sync.WaitGroup
	statuses := make(chan int, perIP)
	for range cap(statuses) {
		wg.Go(func() { statuses <- get(other, srv.URL+"/.well-known/jwks.json") })
	}
	wg.Wait()
	close(statuses)
	for status := range statuses {
		if status != http.StatusOK {
			t.Fatalf("another client's request = %d while one address held slow requests, want 200", status)
		}
	}

	if held := tg.inFlight.Load(); held != perIP {
		t.Errorf("requests held by the slow client = %d, want %d (MaxInFlightPerIP)", held, perIP)
	}
	// Every refusal was answered without waiting for its body.
	for range attempts - perIP {
		select {
		case a := <-answers:
			if a.status != http.StatusTooManyRequests || a.retryAfter != "1" || a.code != "application/problem+json" {
				t.Errorf("refused request = %d, Retry-After %q, %s; want 429 problem with Retry-After: 1", a.status, a.retryAfter, a.code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a refused request had no answer after 10s: the gateway waited for its body")
		}
	}
}

// TestInFlightPerIPCountsIPv6By64: addresses of one IPv6 /64 are one
// client to the limit, as to the per-IP rate limit.
func TestInFlightPerIPCountsIPv6By64(t *testing.T) {
	t.Parallel()
	const perIP = 3
	tg := newTestGateway(t, Limits{MaxInFlightPerIP: perIP}, time.Now)
	entered, release := make(chan struct{}, perIP+2), make(chan struct{})
	h := tg.limitInFlightPerIP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	serve := func(remote string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/.well-known/jwks.json", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	held := make(chan int, perIP+1)
	for i := range perIP {
		go func() { held <- serve(fmt.Sprintf("[2001:db8:0:1::%d]:5000", i+1)).Code }() // returns once release is closed
		<-entered
	}

	checkInFlightRefusal(t, serve("[2001:db8:0:1::ff]:6000"))
	go func() { held <- serve("[2001:db8:0:2::1]:5000").Code }() // another /64; returns once release is closed
	<-entered
	close(release)
	for range perIP + 1 {
		if code := <-held; code != http.StatusOK {
			t.Errorf("held request = %d, want 200", code)
		}
	}
	// Once they are done, the client may send again, and nothing of it is
	// remembered.
	must(t, serve("[2001:db8:0:1::ff]:6001"), http.StatusOK)
	if n := len(tg.inFlightByIP.held); n != 0 {
		t.Errorf("clients remembered after their requests ended = %d, want 0", n)
	}
	if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["ip_in_flight"] != 1 || len(got) != 1 {
		t.Errorf("blueprint.gateway.rate_limited = %v, want ip_in_flight: 1", got)
	}
}

// checkInFlightRefusal checks the answer to a request over its client's
// in-flight limit: 429 rate_limited, Retry-After: 1, and the connection
// closed, so that the body the request may still be sending is not read.
func checkInFlightRefusal(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	must(t, rec, http.StatusTooManyRequests)
	if code, retry, conn := problemCode(rec), rec.Header().Get("Retry-After"), rec.Header().Get("Connection"); code != "rate_limited" || retry != "1" || conn != "close" {
		t.Errorf("refusal = %s, Retry-After %q, Connection %q; want rate_limited, 1, close", code, retry, conn)
	}
}
