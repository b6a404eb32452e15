//go:build security

package security

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var _ = addClass("availability", attackAvailability)

// traffic is what a bystander — another user, from another address — saw
// while an attack ran.
type traffic struct {
	total, ok int
	others    map[string]int // answers other than success, by status
	latency   []time.Duration
}

func (tr traffic) String() string {
	slices.Sort(tr.latency)
	p := func(q float64) time.Duration {
		if len(tr.latency) == 0 {
			return 0
		}
		return tr.latency[int(q*float64(len(tr.latency)-1))].Round(time.Millisecond)
	}
	s := fmt.Sprintf("other users: %d/%d succeeded, p50 %v, p99 %v", tr.ok, tr.total, p(0.5), p(0.99))
	if len(tr.others) > 0 {
		s += fmt.Sprintf(", failures %v", tr.others)
	}
	return s
}

// during runs attack while a bystander repeats a request every period, and
// returns what the bystander saw. ok says whether an answer is a success.
func during(attack func(), period time.Duration, bystander func() answer, ok func(answer) bool) traffic {
	tr := traffic{others: map[string]int{}}
	stop := make(chan struct{})
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() { // ends once stop is closed
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			a := bystander()
			mu.Lock()
			tr.total++
			tr.latency = append(tr.latency, a.took)
			if ok(a) {
				tr.ok++
			} else {
				tr.others[a.String()]++
			}
			mu.Unlock()
		}
	})
	attack()
	close(stop)
	wg.Wait()
	return tr
}

func status(want int) func(answer) bool {
	return func(a answer) bool { return a.err == nil && a.status == want }
}

// bystanders are other users, each at an address of its own, who log in
// in turn: a dozen of them, one login every 500 ms, keeps each well under
// the per-address login limit (20 a minute).
type bystanders struct {
	clients  []*client
	emails   []string
	password string
	next     int
}

func newBystanders(t *testing.T, s *system, n int) *bystanders {
	b := &bystanders{password: "bystander password 1"}
	for range n {
		c := newClient(t, s)
		_, email := c.signUp(b.password)
		b.clients, b.emails = append(b.clients, c), append(b.emails, email)
	}
	return b
}

// logIn logs the next bystander in.
func (b *bystanders) logIn() answer {
	i := b.next % len(b.clients)
	b.next++
	return b.clients[i].logIn(b.emails[i], b.password)
}

// expectUnharmed checks that the bystander never failed.
func expectUnharmed(t *testing.T, s *system, name, attack string, tr traffic) {
	t.Helper()
	record(t, s, name, "other users unaffected", attack+"; "+tr.String(), 0)
	if tr.total == 0 || tr.ok != tr.total {
		t.Errorf("%s: %s; want every request of other users to succeed", name, tr)
	}
}

// attackAvailability tries to take the service away from other users with
// no account, or with one, from one address.
func attackAvailability(t *testing.T, s *system) {
	t.Run("bad bytes do not open a breaker", func(t *testing.T) {
		// A NUL that reached PostgreSQL made users answer 500: the gateway's
		// breaker for users then opened for every other login.
		attacker := newClient(t, s)
		attacker.signUp("attacker password 1")
		others := newBystanders(t, s, 12)
		var refused, answered atomic.Int64
		tr := during(func() {
			for i := range 60 { // 12 s at 5 requests a second, far under the rate limits
				var a answer
				switch i % 3 {
				case 0:
					a = attacker.send("POST", "/auth/login", `{"email":"x\u0000@example.com","password":"password 1234"}`)
				case 1:
					a = attacker.send("GET", "/orders/%00", "")
				case 2:
					a = attacker.send("POST", "/orders", `{"sku":"SEC-1","qty":1}`, "Idempotency-Key", "k\xff")
				}
				answered.Add(1)
				if a.status >= 400 && a.status < 500 {
					refused.Add(1)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}, 500*time.Millisecond, func() answer {
			if a := others.logIn(); a.status != http.StatusOK {
				return a
			}
			return others.clients[others.next%len(others.clients)].send("GET", "/orders", "")
		}, status(http.StatusOK))
		if refused.Load() != answered.Load() {
			t.Errorf("%d of %d attacks answered 4xx, want all", refused.Load(), answered.Load())
		}
		expectUnharmed(t, s, "a NUL or a stray byte every 200 ms", fmt.Sprintf("%d/%d attacks answered 4xx", refused.Load(), answered.Load()), tr)
	})

	t.Run("slow bodies do not starve others", func(t *testing.T) {
		// Each connection promises a 200-byte order and sends a byte a
		// second: without a bound per client, 600 of them — opened at 50 a
		// second, under the per-address and per-user rate limits — hold
		// the gateway's slots until their read deadline.
		bystander := newClient(t, s)
		bystander.signUp("bystander password 2")
		attacker := newClient(t, s)
		attacker.signUp("attacker password 3")
		const conns = 600
		var held, refused atomic.Int64
		tr := during(func() {
			var wg sync.WaitGroup
			for range conns {
				time.Sleep(20 * time.Millisecond)
				wg.Go(func() { // ends when its connection does
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker.ip)}, Timeout: 5 * time.Second}
					conn, err := d.Dial("tcp", strings.TrimPrefix(s.gateway, "http://"))
					if err != nil {
						return
					}
					defer conn.Close()
					fmt.Fprintf(conn, "POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
						"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n", attacker.token)
					// Refused at once, or left to trickle?
					_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
					status := make([]byte, 12)
					if n, _ := io.ReadFull(conn, status); n == len(status) && string(status) == "HTTP/1.1 429" {
						refused.Add(1)
						return
					}
					_ = conn.SetReadDeadline(time.Time{})
					held.Add(1)
					for range 20 {
						if _, err := conn.Write([]byte(" ")); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
				})
			}
			wg.Wait()
		}, 100*time.Millisecond, func() answer { return bystander.send("GET", "/users/me", "") }, status(http.StatusOK))
		expectUnharmed(t, s, "600 slow bodies from one address",
			fmt.Sprintf("%d held, %d refused 429 at once", held.Load(), refused.Load()), tr)
	})

	t.Run("a request flood is limited to its sender", func(t *testing.T) {
		attacker, bystander := newClient(t, s), newClient(t, s)
		attacker.signUp("attacker password 2")
		bystander.signUp("bystander password 4")
		var limited, served atomic.Int64
		tr := during(func() {
			var wg sync.WaitGroup
			end := time.Now().Add(5 * time.Second)
			for range 16 {
				wg.Go(func() { // ends after 5 s of requests as fast as they go
					for time.Now().Before(end) {
						switch attacker.send("GET", "/orders", "").status {
						case http.StatusTooManyRequests:
							limited.Add(1)
						case http.StatusOK:
							served.Add(1)
						}
					}
				})
			}
			wg.Wait()
		}, 100*time.Millisecond, func() answer { return bystander.send("GET", "/orders", "") }, status(http.StatusOK))
		if limited.Load() == 0 {
			t.Errorf("no request of the flood was refused: %d served", served.Load())
		}
		expectUnharmed(t, s, "16 clients sending GET /orders as fast as they can",
			fmt.Sprintf("%d served, %d refused 429", served.Load(), limited.Load()), tr)
	})

	t.Run("a registration flood does not slow logins", func(t *testing.T) {
		others := newBystanders(t, s, 12)
		// What a login takes on a quiet system, to judge "fast" by.
		var quiet []time.Duration
		for range 6 {
			quiet = append(quiet, others.logIn().took)
		}
		slices.Sort(quiet)
		baseline := quiet[len(quiet)/2]
		attacker := newClient(t, s)
		var limited, registered atomic.Int64
		tr := during(func() {
			var wg sync.WaitGroup
			end := time.Now().Add(10 * time.Second)
			for w := range 20 {
				wg.Go(func() { // ends after 10 s of registrations
					for i := 0; time.Now().Before(end); i++ {
						a := attacker.send("POST", "/auth/register",
							fmt.Sprintf(`{"email":"flood-%d-%d-%d@example.com","password":"password 1234","name":"F"}`, w, i, time.Now().UnixNano()))
						switch a.status {
						case http.StatusTooManyRequests:
							limited.Add(1)
							time.Sleep(100 * time.Millisecond)
						case http.StatusCreated:
							registered.Add(1)
						}
					}
				})
			}
			wg.Wait()
		}, 500*time.Millisecond, others.logIn, status(http.StatusOK))
		expectUnharmed(t, s, "20 concurrent registrations from one address",
			fmt.Sprintf("%d registered, %d refused 429; a quiet login takes %v", registered.Load(), limited.Load(), baseline.Round(time.Millisecond)), tr)
		// Slower, not failing, is harm too: the flood must not queue other
		// users' logins behind its password hashing. The bound is loose (4×
		// a quiet login, or 200 ms more) so that a busy machine does not
		// trip it; a flood that takes the hashing capacity does.
		slices.Sort(tr.latency)
		if p50 := tr.latency[len(tr.latency)/2]; p50 > max(4*baseline, baseline+200*time.Millisecond) {
			t.Errorf("other users' logins took %v (median) during the flood, %v on a quiet system: the flood queued them", p50, baseline)
		}
	})

	t.Run("guessing does not lock the owner out", func(t *testing.T) {
		owner := newClient(t, s)
		_, email := owner.signUp("owner password 1")
		guesser := newClient(t, s)
		var last answer
		for i := range 12 {
			last = guesser.logIn(email, fmt.Sprintf("guess %d", i))
		}
		expectRefused(t, s, "the 12th wrong password from one address", last, http.StatusTooManyRequests)
		a := owner.logIn(email, "owner password 1")
		record(t, s, "the owner logging in from another address meanwhile", "200", a.String(), a.took)
		if a.status != http.StatusOK {
			t.Errorf("the owner's login after someone else's guesses = %v %s, want 200", a, a.body)
		}
	})

	t.Run("login time does not tell accounts apart", func(t *testing.T) {
		c := newClient(t, s)
		_, email := c.signUp("timing password 1")
		median := func(email string) time.Duration {
			var ds []time.Duration
			for i := range 4 { // under any per-account limit
				a := newClient(t, s).logIn(email, fmt.Sprintf("wrong password %d", i))
				if a.status != http.StatusUnauthorized {
					t.Fatalf("login with a wrong password = %v %s, want 401", a, a.body)
				}
				ds = append(ds, a.took)
			}
			slices.Sort(ds)
			return ds[len(ds)/2]
		}
		known, unknown := median(email), median("nobody-"+email)
		record(t, s, "a wrong password: known vs unknown email", "the same time, within 2×",
			fmt.Sprintf("median %v vs %v", known.Round(time.Millisecond), unknown.Round(time.Millisecond)), 0)
		if ratio := float64(known) / float64(unknown); ratio > 2 || ratio < 0.5 {
			t.Errorf("login with a wrong password takes %v for a known email and %v for an unknown one: the time tells them apart", known, unknown)
		}
	})
}
