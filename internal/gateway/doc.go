// Package gateway is Blueprint's public API: the only service that listens
// for clients. It authenticates users (access tokens it issues and verifies
// itself), rate-limits them, and calls the users, orders and notifications
// services over HTTP with a fresh internal token for each, acting for the
// user. It holds no data of its own, so any number of replicas can run side
// by side.
//
// It protects itself and what is behind it in two ways (docs/rate-limits.md).
// Past a maximum of requests in flight it sheds the next ones at once with
// 503, and past a smaller maximum per client IP it refuses that client's
// next ones with 429 (shed.go). Token buckets limit every client IP, every
// user, registrations and login attempts, answering 429 past them and
// describing them in RateLimit headers on every answer (ratelimit.go); an
// account failing logins from many addresses is locked for a time that
// doubles (lockout.go). The buckets live in this process's memory, which is
// exact for one gateway, whether it runs alone or inside `all`; with Redis
// (redis.go) every replica draws from the same ones, and falls back to its
// own while Redis is away.
//
// Every answer it relays keeps the upstream's meaning (a 404 stays a 404),
// except that an upstream's own failure never leaks: it becomes 502, 503 or
// 504 problem+json, and an upstream that refuses the gateway's credentials
// is the gateway's fault, a 502, never a 401 for the client.
package gateway
