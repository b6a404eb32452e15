// Package orders is the orders service: it takes orders, lists and serves
// them, and emits an orders.created event for each one through a
// transactional outbox. It owns the orders database (orders, idempotency
// keys and the outbox), is called only by the gateway with internal tokens
// acting for a user, and runs the outbox relay that publishes to JetStream.
//
// Creating an order is idempotent by key, with Stripe's semantics: the same
// key and body replay the first answer, a different body is refused, a
// request still in flight makes the duplicate wait its turn with a 409. The
// gateway gives every keyless request a key of its own, so its retries can
// never create a second order.
package orders
