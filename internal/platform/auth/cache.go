package auth

import (
	"sync"
	"time"
)

// maxCachedTokens bounds every token cache of this package.
const maxCachedTokens = 10000

// tokenCache is a bounded map of tokens, each good within a time window:
// the Minter keeps the tokens it signed for reuse, the verifiers the
// tokens they verified. Full, a put first drops the entries past their
// window and, if none was, all of them: the cache never grows with
// traffic, and refilling it costs only the work it saves.
type tokenCache[K comparable, V any] struct {
	mu      sync.Mutex
	entries map[K]cachedEntry[V]
}

// cachedEntry is good from its from (inclusive) to its until (exclusive).
type cachedEntry[V any] struct {
	value       V
	from, until time.Time
}

func newTokenCache[K comparable, V any]() *tokenCache[K, V] {
	return &tokenCache[K, V]{entries: map[K]cachedEntry[V]{}}
}

// get returns the value stored for k if now is within its window.
func (c *tokenCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || now.Before(e.from) || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.value, true
}

// put stores v for k, good from from until until.
func (c *tokenCache[K, V]) put(k K, v V, from, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCachedTokens {
		for ek, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, ek)
			}
		}
		if len(c.entries) >= maxCachedTokens {
			clear(c.entries)
		}
	}
	c.entries[k] = cachedEntry[V]{value: v, from: from, until: until}
}
