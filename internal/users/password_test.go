package users

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHasher(t *testing.T) {
	t.Parallel()
	h, err := newHasher()
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
