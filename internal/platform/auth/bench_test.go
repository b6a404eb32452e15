package auth

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkAccessToken is what the gateway pays per login to issue an
// access token, for the first request with one (Ed25519 verification) and
// for the next ones (the verified token remembered).
func BenchmarkAccessToken(b *testing.B) {
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	tokens := NewAccessTokens(key, []PublicKey{key.Public()}, time.Now)
	user := uuid.Must(uuid.NewV7()).String()
	token, _, err := tokens.Issue(user)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("issue", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := tokens.Issue(user); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			fresh := NewAccessTokens(key, []PublicKey{key.Public()}, time.Now) // nothing remembered
			if _, err := fresh.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify again", func(b *testing.B) {
		for b.Loop() {
			if _, err := tokens.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
