package users

import "testing"

// BenchmarkPasswordHash is the cost of one registration's argon2id hash
// (OWASP parameters: 7 MiB, 5 passes, 1 lane) — also one login's check.
func BenchmarkPasswordHash(b *testing.B) {
	h, err := newHasher(noMetrics, noLogs)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := h.hash(b.Context(), "correct horse battery"); err != nil {
			b.Fatal(err)
		}
	}
}
