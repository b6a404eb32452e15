package users

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

func TestHasher(t *testing.T) {
	t.Parallel()
	h, err := newHasher(noMetrics, noLogs)
	if err != nil {
		t.Fatalf("newHasher() = %v, want nil", err)
	}
	ctx := context.Background()
	if !phc.MatchString(h.dummy) {
		t.Errorf("dummy hash = %q, want an argon2id PHC string", h.dummy)
	}

	const password = "pässwörd 🔑"
	a, err := h.hash(ctx, password)
	if err != nil {
		t.Fatalf("hash(%q) = %v, want nil", password, err)
	}
	b, err := h.hash(ctx, password)
	if err != nil {
		t.Fatalf("hash(%q) = %v, want nil", password, err)
	}
	if a == b {
		t.Errorf("hash(%q) twice = %q both times, want a fresh salt each time", password, a)
	}

	// Hashes made with other (older) parameters keep working: check reads
	// them from the string.
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(password), salt, 1, 64, 1, 16)
	b64 := base64.RawStdEncoding
	old := fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s", b64.EncodeToString(salt), b64.EncodeToString(key))

	tests := []struct {
		name     string
		password string
		encoded  string
		want     bool
	}{
		{"right password", password, a, true},
		{"wrong password", "password", a, false},
		{"empty password", "", a, false},
		{"older parameters, right password", password, old, true},
		{"older parameters, wrong password", "nope", old, false},
		{"dummy hash", password, h.dummy, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := h.check(ctx, tt.password, tt.encoded)
			if err != nil || got != tt.want {
				t.Errorf("check(%q, %q) = %v, %v, want %v, nil", tt.password, tt.encoded, got, err, tt.want)
			}
		})
	}
}

func TestHasherCheckRejectsMalformed(t *testing.T) {
	t.Parallel()
	// A zero hasher: none of these may get as far as running argon2.
	h := &hasher{slots: make(chan struct{}, 1)}
	salt, key := "MDEyMzQ1Njc4OWFiY2RlZg", "ZL0gMvaJqvCeCM5g6kN4nWNzXOKQf12PdKA7YX+7hqk"
	tests := []struct {
		name    string
		encoded string
	}{
		{"empty", ""},
		{"plain text", "hunter22"},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key},
		{"other version", "$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key},
		{"missing parameters", "$argon2id$v=19$$" + salt + "$" + key},
		{"bad parameters", "$argon2id$v=19$m=x,t=2,p=1$" + salt + "$" + key},
		{"salt not base64", "$argon2id$v=19$m=19456,t=2,p=1$!!!$" + key},
		{"key not base64", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$!!!"},
		{"too many fields", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "$x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if ok, err := h.check(context.Background(), "hunter22", tt.encoded); err == nil || ok {
				t.Errorf("check(%q) = %v, %v, want false and an error", tt.encoded, ok, err)
			}
		})
	}
}

// TestRegistrationFloodLeavesRoomForLogins: more registrations arrive at
// once than the service can hash, and meanwhile another user logs in. Each
// login is checked beside the flood, not after it: it returns while the
// flood is still waiting to be hashed, counted by the registrations that
// finished during the login.
func TestRegistrationFloodLeavesRoomForLogins(t *testing.T) {
	t.Parallel()
	svc, err := NewService(sqldbtest.OpenSQLite(t, Migrations), noMetrics, noLogs, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ada := Credentials{Email: "ada@example.com", Password: "correct horse battery"}
	register(t, svc, Registration{Email: ada.Email, Password: ada.Password, Name: "Ada"})

	const flood = 60
	// The queue would refuse most of the flood at once
	// (TestRegistrationsBeyondTheQueueAreRefused); here every registration
	// waits for its hash.
	svc.hasher.hashQueue = make(chan struct{}, flood)
	ctx, stopFlood := context.WithCancel(context.Background())
	var registered atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { stopFlood(); wg.Wait() }) // the registrations still waiting give up
	for i := range flood {
		wg.Go(func() {
			reg := Registration{Email: fmt.Sprintf("flood-%d@example.com", i), Password: "flood password", Name: "Flood"}
			if _, err := svc.Register(ctx, reg); err == nil {
				registered.Add(1)
			}
		})
	}
	// Once one has been hashed, the others are waiting for their turn.
	for deadline := time.Now().Add(10 * time.Second); registered.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no registration finished in 10s")
		}
	}

	var slowest time.Duration
	for range 5 {
		before, start := registered.Load(), time.Now()
		if _, err := svc.Authenticate(context.Background(), ada); err != nil {
			t.Fatalf("Authenticate during the flood = %v, want nil", err)
		}
		took := time.Since(start)
		slowest = max(slowest, took)
		if waited := registered.Load() - before; waited > flood/4 {
			t.Fatalf("a login took %v, in which %d registrations of the flood were hashed; want it hashed beside them, not after them", took, waited)
		}
	}
	t.Logf("slowest of 5 logins during a flood of %d registrations: %v", flood, slowest)
	if registered.Load() == flood {
		t.Errorf("the flood was over before the logins were: make it bigger, or it proves nothing")
	}
}

// TestRegistrationsBeyondTheQueueAreRefused: registrations that find as
// many others waiting for a hash as the queue holds are refused at once,
// 429 with Retry-After, instead of waiting past their callers' deadlines;
// the others are made.
func TestRegistrationsBeyondTheQueueAreRefused(t *testing.T) {
	t.Parallel()
	svc, err := NewService(sqldbtest.OpenSQLite(t, Migrations), noMetrics, noLogs, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	const flood = 100
	errs := make(chan error, flood)
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			_, err := svc.Register(context.Background(), Registration{Email: fmt.Sprintf("flood-%d@example.com", i), Password: "flood password", Name: "Flood"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	var made, refused int
	for err := range errs {
		if err == nil {
			made++
			continue
		}
		refused++
		wantAppErr(t, "Register", err, apperr.RateLimited, "rate_limited")
		if e, _ := errors.AsType[*apperr.Error](err); e != nil && e.RetryAfter != 1 {
			t.Errorf("refusal's Retry-After = %d, want 1", e.RetryAfter)
		}
	}
	if made == 0 || refused < flood/2 {
		t.Errorf("%d registrations at once: %d made, %d refused; want most refused at once, the rest made", flood, made, refused)
	}
}
