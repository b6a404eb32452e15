// Package gatewaytest gives tests of the gateway's shared rate limits a
// real Redis: the server BLUEPRINT_TEST_REDIS_URL names, with a key prefix
// of each test's own so tests run in parallel on one Redis, and their keys
// deleted when they end. Tests that need it skip, saying so, when the
// variable is unset; no test fakes Redis.
package gatewaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvRedisURL names the Redis of the tests, e.g. redis://127.0.0.1:6379/0.
const EnvRedisURL = "BLUEPRINT_TEST_REDIS_URL"

// RedisURL returns the URL of the tests' Redis, or skips the test when
// BLUEPRINT_TEST_REDIS_URL is unset. It fails the test when that Redis does
// not answer: a set variable promises a server.
func RedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvRedisURL)
	if u == "" {
		t.Skipf("Redis backend skipped: %s is not set (e.g. redis://127.0.0.1:6379/0)", EnvRedisURL)
	}
	rdb := connect(t, u)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s: %v", EnvRedisURL, err)
	}
	return u
}

// KeyPrefix returns a key prefix no other test uses. Every key on the
// Redis at url containing it is deleted when the test ends.
func KeyPrefix(t testing.TB, url string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "test:" + hex.EncodeToString(b) + ":"
	rdb := connect(t, url)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, "*"+prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			if err := rdb.Del(ctx, iter.Val()).Err(); err != nil {
				t.Errorf("delete %s: %v", iter.Val(), err)
			}
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan keys of %s: %v", prefix, err)
		}
	})
	return prefix
}

// connect returns a client closed when the test ends.
func connect(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("%s: %v", EnvRedisURL, err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
