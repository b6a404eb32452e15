package notifications

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Dead letters go to their own stream so they can be inspected and replayed.
const (
	DeadLetterStream  = "DLQ"
	DeadLetterSubject = "dlq.notifications"
)

// DeadLetterStreamConfig is the DLQ stream. Like ORDERS it is history with
// age as the only limit, kept longer (30 days) because a dead letter waits
// for a person. replicas is 1 on one server, 3 on a cluster.
func DeadLetterStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       DeadLetterStream,
		Subjects:   []string{"dlq.>"},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     30 * 24 * time.Hour,
		MaxMsgs:    -1,
		MaxBytes:   -1,
		MaxMsgSize: -1,
		Discard:    jetstream.DiscardOld,
		// Drops a second copy when two replicas give up on one delivery.
		Duplicates: 2 * time.Minute,
		Replicas:   max(1, replicas),
	}
}
