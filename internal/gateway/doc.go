// Package gateway is Blueprint's public API: the only service that listens
// for clients. It authenticates users (access tokens it issues and verifies
// itself), rate-limits them, and calls the users, orders and notifications
// services over HTTP with a fresh internal token for each, acting for the
// user. It holds no data of its own, so any number of replicas can run side
// by side.
//
// Every answer it relays keeps the upstream's meaning (a 404 stays a 404),
// except that an upstream's own failure never leaks: it becomes 502, 503 or
// 504 problem+json, and an upstream that refuses the gateway's credentials
// is the gateway's fault, a 502, never a 401 for the client.
package gateway
