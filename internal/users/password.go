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
type hasher struct {
	slots chan struct{}
	// dummy is checked when an email is unknown, so a wrong email costs the
	// same time as a wrong password.
	dummy string
}

func newHasher() (*hasher, error) {
	h := &hasher{slots: make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))}
	dummy, err := h.hash(context.Background(), "blueprint-dummy-password")
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *hasher) release() { <-h.slots }

// hash returns the PHC string of password with a fresh salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails on supported platforms
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	h.release()
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
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, passes, memory, threads, uint32(len(want)))
	h.release()
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
