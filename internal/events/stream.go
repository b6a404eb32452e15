package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// CreateStream creates the ORDERS stream as StreamConfig(replicas) when it
// is missing, and returns it as it is. Whichever service starts first
// creates it; the other finds it.
func CreateStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, StreamConfig(replicas))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile
			s, err = js.Stream(ctx, Stream)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("declare stream %s: %w", Stream, err)
	}
	return s, nil
}

// DeclareStream is CreateStream, and then brings an existing stream to
// StreamConfig(replicas) if its settings differ. A stream already so
// configured is left alone: an update, even one that changes nothing,
// rewrites the stream store's configuration, which nats-server (v2.15.2)
// reads without a lock while it adds a consumer — the notifications worker
// declares its consumer at the same moment orders starts, and the race
// detector catches the two.
func DeclareStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	s, err := CreateStream(ctx, js, replicas)
	if err != nil {
		return err
	}
	if want := StreamConfig(replicas); !sameStream(s.CachedInfo().Config, want) {
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return fmt.Errorf("update stream %s: %w", Stream, err)
		}
	}
	return nil
}

// sameStream compares the settings StreamConfig spells out; the server
// fills in the others.
func sameStream(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.MaxAge == want.MaxAge && have.MaxMsgs == want.MaxMsgs &&
		have.MaxBytes == want.MaxBytes && have.MaxMsgSize == want.MaxMsgSize && have.Discard == want.Discard &&
		have.Duplicates == want.Duplicates && have.Replicas == want.Replicas
}
