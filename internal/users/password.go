package users

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"

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
type hasher struct {
	slots     chan struct{} // every hash and check running
	hashSlots chan struct{} // hashes of new passwords running: half of slots
	hashQueue chan struct{} // hashes of new passwords running or waiting
	// dummy is checked when an email is unknown, so a wrong email costs the
	// same time as a wrong password.
	dummy string
}

// hashQueuePerSlot is how many hashes of new passwords may be admitted per
// slot they may run in: at tens of milliseconds a hash, the last waits well
// under a second.
const hashQueuePerSlot = 8

// errTooManyRegistrations refuses a registration that finds the hash queue
// full.
var errTooManyRegistrations = &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited",
	Detail: "too many registrations at the moment; try again shortly", RetryAfter: 1}

func newHasher() (*hasher, error) {
	n := max(2, runtime.GOMAXPROCS(0))
	h := &hasher{
		slots:     make(chan struct{}, n),
		hashSlots: make(chan struct{}, n/2),
		hashQueue: make(chan struct{}, hashQueuePerSlot*(n/2)),
	}
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
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	release(h.slots)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// check reports whether password matches the PHC string encoded, comparing
// in constant time. The parameters come from the string, so hashes made
// with older parameters keep working after the constants change.
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
	if err := acquire(ctx, h.slots); err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, passes, memory, threads, uint32(len(want)))
	release(h.slots)
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
