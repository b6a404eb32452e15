package events

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig is the ORDERS stream, with every setting that matters
// spelled out rather than left to the server's defaults. replicas is 1 on
// one server, 3 on a cluster. docs/events.md has the reasoning.
//
// Events are history, not a work queue: limits retention keeps them 7 days
// whoever has read them, so a new consumer can replay recent history. Age is
// the only limit; DiscardOld says what a size limit, if one is ever added,
// would do: drop the oldest (long consumed) events, never refuse new ones,
// which would block every order behind a full stream for days. There is no
// per-message size limit: a stream limit would make the outbox relay retry
// an oversized event forever, while the worker's own 64 KiB check turns it
// into a dead letter someone can see. The 2-minute duplicates window drops
// a re-sent event id (the relay re-sends after a lost ack).
func StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       Stream,
		Subjects:   []string{StreamSubject},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     7 * 24 * time.Hour,
		MaxMsgs:    -1,
		MaxBytes:   -1,
		MaxMsgSize: -1,
		Discard:    jetstream.DiscardOld,
		Duplicates: 2 * time.Minute,
		Replicas:   max(1, replicas),
	}
}
