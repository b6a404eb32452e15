package users

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/crypto/argon2"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// argon2id parameters: one of the equivalent settings the OWASP Password
// Storage Cheat Sheet recommends (7 MiB, 5 passes, 1 lane; the others trade
// memory for passes, e.g. 19 MiB and 2). Each hash in flight holds its
// memory, so the lowest-memory setting lets more logins run at once in a
// small container for the same cost to an attacker.
const (
	argonMemoryKiB = 7 * 1024
	argonTime      = 5
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// hasher hashes and checks passwords. Each hash holds 7 MiB for tens of
// milliseconds, so a burst of logins could exhaust memory: a semaphore lets
// only a few run at once and the rest wait (or give up with their context).
//
// Hashing a new password (a registration) waits first for a second,
// smaller semaphore of half the slots. A flood of registrations then queues
// there and holds at most half the slots, and logins, which check hashes,
// always find the other half: their wait does not grow with the flood. The
// queue is short: a registration that finds it full is refused at once,
// rather than waiting past its caller's deadline while holding the
// caller's connection, a place in its bulkhead and, as a timeout, a mark
// against this replica in its circuit breaker, which logins need too.
//
// Logins have an admission of their own (admission.go): one is let in to
// wait only if it can be checked before its deadline, and refused at once
// with 503 otherwise.
type hasher struct {
	slots     chan struct{} // every hash and check running
	hashSlots chan struct{} // hashes of new passwords running: half of slots
	hashQueue chan struct{} // hashes of new passwords running or waiting
	// logins counts the logins admitted and not yet checked: waiting for a
	// slot or holding one.
	logins atomic.Int64
	// cost is how long one hash takes, in nanoseconds: a moving average of
	// the hashes made, which admission sizes the login queue with.
	cost atomic.Int64
	// dummy is checked when an email is unknown, so a wrong email costs the
	// same time as a wrong password.
	dummy string

	shed        metric.Int64Counter // logins refused, by reason
	logger      *slog.Logger
	lastShedLog atomic.Int64 // Unix nanoseconds
}

// hashQueuePerSlot is how many hashes of new passwords may be admitted per
// slot they may run in: at tens of milliseconds a hash, the last waits well
// under a second.
const hashQueuePerSlot = 8

// errTooManyRegistrations refuses a registration that finds the hash queue
// full.
var errTooManyRegistrations = &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited",
	Detail: "too many registrations at the moment; try again shortly", RetryAfter: 1}

// newHasher returns a hasher whose metrics (admission.go) go to meters and
// whose warnings go to logger.
func newHasher(meters metric.MeterProvider, logger *slog.Logger) (*hasher, error) {
	n := max(2, runtime.GOMAXPROCS(0))
	h := &hasher{
		slots:     make(chan struct{}, n),
		hashSlots: make(chan struct{}, n/2),
		hashQueue: make(chan struct{}, hashQueuePerSlot*(n/2)),
		logger:    logger,
	}
	if err := h.registerMetrics(meters); err != nil {
		return nil, err
	}
	// The dummy's hash is also the first measure of the cost.
	dummy, err := h.hash(context.Background(), "blueprint-dummy-password")
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// acquire takes a slot of sem, or gives up when ctx ends.
func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func release(sem chan struct{}) { <-sem }

// hash returns the PHC string of password with a fresh salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails on supported platforms
	select {
	case h.hashQueue <- struct{}{}:
	default:
		return "", errTooManyRegistrations
	}
	defer release(h.hashQueue)
	if err := acquire(ctx, h.hashSlots); err != nil {
		return "", err
	}
	defer release(h.hashSlots)
	if err := acquire(ctx, h.slots); err != nil {
		return "", err
	}
	key := h.derive([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	release(h.slots)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// check reports whether password matches the PHC string encoded, comparing
// in constant time. The parameters come from the string, so hashes made
// with older parameters keep working after the constants change. A check
// is a login's: it waits for a slot only if admitted (admission.go), and
// is refused with errLoginsBusy otherwise.
func (h *hasher) check(ctx context.Context, password, encoded string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errors.New("password hash: not an argon2id PHC string")
	}
	var version int
	var memory, passes uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, fmt.Errorf("password hash: unsupported version %q", parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &memory, &passes, &threads); err != nil {
		return false, fmt.Errorf("password hash: parameters %q: %w", parts[3], err)
	}
	// A corrupt row must not crash a login or allocate gigabytes.
	if memory < 8 || memory > 1<<20 || passes < 1 || passes > 16 || threads < 1 || threads > 16 {
		return false, fmt.Errorf("password hash: parameters %q out of range", parts[3])
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, fmt.Errorf("password hash: salt: %w", err)
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil {
		return false, fmt.Errorf("password hash: key: %w", err)
	}
	startBy, err := h.admitLogin(ctx)
	if err != nil {
		return false, err
	}
	defer h.logins.Add(-1)
	if err := h.waitForSlot(ctx, startBy); err != nil {
		return false, err
	}
	got := h.derive([]byte(password), salt, passes, memory, threads, uint32(len(want)))
	release(h.slots)
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// derive runs argon2id, timing it into the moving average of the cost of
// a hash.
func (h *hasher) derive(password, salt []byte, passes, memory uint32, threads uint8, keyLen uint32) []byte {
	start := time.Now()
	key := argon2.IDKey(password, salt, passes, memory, threads, keyLen)
	h.observeCost(time.Since(start))
	return key
}

// observeCost moves the average cost of a hash an eighth of the way to d:
// a few dozen hashes follow a change of load on the CPUs, one slow hash
// does not swing it. Two hashes ending together may lose one of their
// measures; an estimate does not mind.
func (h *hasher) observeCost(d time.Duration) {
	old := h.cost.Load()
	if old == 0 {
		h.cost.Store(int64(d))
		return
	}
	h.cost.Store(old + (int64(d)-old)/8)
}
