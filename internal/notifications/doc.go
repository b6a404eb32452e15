// Package notifications is the notifications service: a worker that turns
// every orders.created event into a notification to the user who placed the
// order, and an internal API that lists a user's notifications.
//
// The worker is a durable JetStream pull consumer ("notifications") with
// explicit acks. For each event it looks up the user's email in the users
// service (internal token, acting for itself), delivers through a channel
// (the log by default, or a signed POST to a webhook), records the
// notification with the event id unique, and only then acknowledges. Every
// step may be repeated after a crash or a redelivery; the unique event id is
// what makes a repeat harmless, so an event notifies exactly once. Several
// replicas share the consumer and split the events between them; a worker
// heartbeats an event while it works on it, so only a dead worker's events
// move to another replica.
//
// An event that cannot succeed, or whose attempts are spent, is copied to
// the DLQ stream and terminated; DeadLetters lists and replays those (it is
// what `blueprint dlq` runs).
package notifications
