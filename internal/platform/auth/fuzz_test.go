package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// fuzzSeeds are inputs shaped like the attacks a verifier must survive,
// built around one genuine token so the fuzzer starts close to valid ones.
func fuzzSeeds(genuine string) []string {
	parts := strings.Split(genuine, ".")
	return []string{
		"",
		".",
		"..",
		"a.b.c",
		"Bearer " + genuine,
		genuine,
		genuine + ".",
		parts[0] + "." + parts[1] + ".",
		parts[0] + ".." + parts[2],
		"." + parts[1] + "." + parts[2],
		"eyJhbGciOiJub25lIn0." + parts[1] + ".",
		"eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9." + parts[1] + "." + parts[2],
		"eyJ9." + parts[1] + "." + parts[2],
		strings.Repeat("A", 4096),
		"\x00\xff.\x00\xff.\x00\xff",
	}
}

// signedPart is what the signature covers: everything before the last dot.
// Base64 decoding is lenient about the signature's spare bits, so a
// different string can carry the same valid signature; what must never
// happen is accepting a header and payload that were never signed.
func signedPart(token string) string {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return token
	}
	return token[:i]
}

func FuzzAccessTokensVerify(f *testing.F) {
	key, err := auth.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	at := auth.NewAccessTokens(key, []auth.PublicKey{key.Public()}, func() time.Time { return t0 })
	genuine, _, err := at.Issue("user-1")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range fuzzSeeds(genuine) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		user, err := at.Verify(token)
		if err != nil {
			if k := apperr.KindOf(err); k != apperr.Unauthorized {
				t.Fatalf("Verify(%q) error kind = %v, want %v (Unauthorized)", token, k, apperr.Unauthorized)
			}
			return
		}
		if signedPart(token) != signedPart(genuine) || user != "user-1" {
			t.Fatalf("Verify(%q) = %q, nil, want an error: the token was never issued", token, user)
		}
	})
}

func FuzzServiceVerifierVerify(f *testing.F) {
	kr, err := auth.GenerateKeyring(testServices)
	if err != nil {
		f.Fatal(err)
	}
	now := func() time.Time { return t0 }
	v, err := auth.NewServiceVerifier("users", usersCallers, kr.Bundle, now)
	if err != nil {
		f.Fatal(err)
	}
	genuine, err := auth.NewMinter("gateway", kr.Identities["gateway"], now).Token("users", "user-1")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range fuzzSeeds(genuine) {
		f.Add(s)
	}
	if other, err := auth.NewMinter("orders", kr.Identities["orders"], now).Token("users", "user-1"); err == nil {
		f.Add(other)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			if k := apperr.KindOf(err); k != apperr.Unauthorized {
				t.Fatalf("Verify(%q) error kind = %v, want %v (Unauthorized)", token, k, apperr.Unauthorized)
			}
			return
		}
		want := auth.Caller{Service: "gateway", Subject: "user-1"}
		if signedPart(token) != signedPart(genuine) || c != want {
			t.Fatalf("Verify(%q) = %+v, nil, want an error: the token was never minted", token, c)
		}
	})
}
