package events

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig is the ORDERS stream: file storage, kept 7 days (so a new
// consumer can replay recent history), with a 2-minute duplicates window in
// which a re-sent event id is dropped. replicas is 1 on one server, 3 on a
// cluster.
func StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       Stream,
		Subjects:   []string{StreamSubject},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     7 * 24 * time.Hour,
		Duplicates: 2 * time.Minute,
		Replicas:   max(1, replicas),
	}
}
