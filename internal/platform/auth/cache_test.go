package auth

import (
	"testing"
	"time"
)

// TestTokenCacheStaysBounded: full, the cache drops what is past its
// window first, and everything when nothing is.
func TestTokenCacheStaysBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)
	c := newTokenCache[int, int]()
	for i := range maxCachedTokens - 1 {
		c.put(i, i, time.Time{}, now.Add(time.Minute), now)
	}
	c.put(-1, -1, time.Time{}, now.Add(time.Second), now) // full now
	later := now.Add(2 * time.Second)
	c.put(-2, -2, time.Time{}, later.Add(time.Minute), later)
	if _, ok := c.get(-1, later); ok || len(c.entries) != maxCachedTokens {
		t.Errorf("after a put into a full cache with one stale entry: %d entries, stale one kept %v; want %d, false",
			len(c.entries), ok, maxCachedTokens)
	}
	c.put(-3, -3, time.Time{}, later.Add(time.Minute), later) // full, nothing stale
	if v, ok := c.get(-3, later); !ok || v != -3 || len(c.entries) != 1 {
		t.Errorf("after a put into a full cache with nothing stale: %d entries, get(-3) = %v, %v; want 1, -3, true",
			len(c.entries), v, ok)
	}
}

// TestTokenCacheWindow: an entry is good from its from to just before its until.
func TestTokenCacheWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)
	c := newTokenCache[string, string]()
	c.put("token", "user-1", now.Add(-time.Second), now.Add(time.Second), now)
	for _, tt := range []struct {
		at   time.Duration
		want bool
	}{{-2 * time.Second, false}, {-time.Second, true}, {0, true}, {time.Second - 1, true}, {time.Second, false}} {
		if _, ok := c.get("token", now.Add(tt.at)); ok != tt.want {
			t.Errorf("get at %v = %v, want %v", tt.at, ok, tt.want)
		}
	}
	if _, ok := c.get("other", now); ok {
		t.Errorf("get of a token never put = true, want false")
	}
}
