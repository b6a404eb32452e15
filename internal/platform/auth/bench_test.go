package auth

import (
	"testing"
	"time"
)

// BenchmarkAccessToken is what the gateway pays per request to check an
// access token (Ed25519 verification), and per login to issue one.
func BenchmarkAccessToken(b *testing.B) {
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	tokens := NewAccessTokens(key, []PublicKey{key.Public()}, time.Now)
	token, _, err := tokens.Issue("user-1")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("issue", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := tokens.Issue("user-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := tokens.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
