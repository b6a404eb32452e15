package notifications

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
)

// Dead letters go to their own stream so they can be inspected and replayed.
const (
	DeadLetterStream  = "DLQ"
	DeadLetterSubject = "dlq.notifications"
)

// Headers the worker adds to a dead letter. Blueprint-Event-Id also rides on
// a replayed event, whose Nats-Msg-Id is no longer the event id, and
// Blueprint-Replay-Of says which dead letter it was replayed from.
const (
	hdrReason          = "Blueprint-Dead-Letter-Reason"
	hdrOriginalSubject = "Blueprint-Original-Subject"
	hdrAttempts        = "Blueprint-Attempts"
	hdrEventID         = "Blueprint-Event-Id"
	hdrReplayOf        = "Blueprint-Replay-Of"
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

// eventID is the event id of a delivery: the Nats-Msg-Id the outbox relay
// set, or for a replay (whose Nats-Msg-Id is its own) the Blueprint-Event-Id
// it carries, empty for a poison message that never had one.
func eventID(h nats.Header) string {
	if id := h.Get(hdrEventID); id != "" || h.Get(hdrReplayOf) != "" {
		return id
	}
	return h.Get(nats.MsgIdHdr)
}

// copyHeaders copies h without JetStream's own headers (Nats-Msg-Id,
// Nats-Expected-…): those were instructions for the publish that stored the
// original and would misdirect the next one.
func copyHeaders(dst, h nats.Header, drop ...string) {
	for k, v := range h {
		if !strings.HasPrefix(k, "Nats-") && !slices.Contains(drop, k) {
			dst[k] = v
		}
	}
}

// DeadLetter is one event the worker gave up on, as the DLQ stream holds it.
type DeadLetter struct {
	// Seq is the entry's sequence in the DLQ stream: what Replay takes.
	Seq uint64 `json:"seq"`
	// Time is when the event was dead-lettered.
	Time    time.Time `json:"time"`
	EventID string    `json:"eventId,omitempty"`
	// OrderID is empty when the event does not parse that far.
	OrderID string `json:"orderId,omitempty"`
	// Subject is where the event was published, and where a replay goes.
	Subject  string `json:"subject"`
	Attempts int    `json:"attempts"`
	Reason   string `json:"reason"`
}

// Replayed is the outcome of replaying one dead letter.
type Replayed struct {
	DeadLetter
	// StreamSeq is the event's sequence in the ORDERS stream.
	StreamSeq uint64 `json:"streamSeq"`
	// Duplicate reports that an earlier replay of this entry had already
	// published the event (within the duplicates window): nothing was
	// published twice.
	Duplicate bool `json:"duplicate"`
}

// ErrNoDeadLetter is returned by Replay for a sequence that holds no dead
// letter (never did, or was replayed already).
var ErrNoDeadLetter = errors.New("no such dead letter")

// DeadLetters lists and replays the dead-letter stream. It is what
// `blueprint dlq` runs; it needs only a NATS connection, not the worker.
type DeadLetters struct {
	js jetstream.JetStream
}

// NewDeadLetters returns the dead letters reached through js.
func NewDeadLetters(js jetstream.JetStream) *DeadLetters {
	return &DeadLetters{js: js}
}

// stream returns the DLQ stream; ok is false when it does not exist (no
// worker has run yet, so nothing was dead-lettered).
func (d *DeadLetters) stream(ctx context.Context) (s jetstream.Stream, ok bool, err error) {
	s, err = d.js.Stream(ctx, DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("stream %s: %w", DeadLetterStream, err)
	}
	return s, true, nil
}

// List returns every dead letter, oldest first.
func (d *DeadLetters) List(ctx context.Context) ([]DeadLetter, error) {
	s, ok, err := d.stream(ctx)
	if !ok {
		return nil, err
	}
	var out []DeadLetter
	for seq := uint64(1); ; {
		// The next entry at or after seq: one request per entry, however
		// many replayed entries left gaps.
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(DeadLetterSubject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s from %d: %w", DeadLetterStream, seq, err)
		}
		out = append(out, parseDeadLetter(raw))
		seq = raw.Sequence + 1
	}
}

func parseDeadLetter(raw *jetstream.RawStreamMsg) DeadLetter {
	attempts, _ := strconv.Atoi(raw.Header.Get(hdrAttempts))
	dl := DeadLetter{
		Seq:      raw.Sequence,
		Time:     raw.Time.UTC(),
		EventID:  raw.Header.Get(hdrEventID),
		Subject:  raw.Header.Get(hdrOriginalSubject),
		Attempts: attempts,
		Reason:   raw.Header.Get(hdrReason),
	}
	// Best effort: a poison event may not be JSON at all.
	var ev events.Envelope[events.OrderCreatedData]
	if json.Unmarshal(raw.Data, &ev) == nil {
		dl.OrderID = ev.Data.OrderID
	}
	return dl
}

// Replay publishes the dead letter at seq again, as it was, to its original
// subject, waits for the stream's ack, and only then deletes the entry. If
// anything fails before the ack, the entry stays.
//
// The copy's Nats-Msg-Id is replay-<seq>-<event id>: not the event id, which
// the duplicates window may still hold from the first publish, but the same
// for every replay of this entry. A replay repeated within the window (the
// delete failed, or two people ran it) is dropped by JetStream; repeated
// later, the worker finds the event recorded and only acks.
func (d *DeadLetters) Replay(ctx context.Context, seq uint64) (Replayed, error) {
	s, ok, err := d.stream(ctx)
	if err != nil {
		return Replayed{}, err
	}
	if !ok {
		return Replayed{}, fmt.Errorf("%w: %d", ErrNoDeadLetter, seq)
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Replayed{}, fmt.Errorf("%w: %d", ErrNoDeadLetter, seq)
	}
	if err != nil {
		return Replayed{}, fmt.Errorf("read dead letter %d: %w", seq, err)
	}
	if raw.Subject != DeadLetterSubject {
		return Replayed{}, fmt.Errorf("%w: %d is on %s, not %s", ErrNoDeadLetter, seq, raw.Subject, DeadLetterSubject)
	}
	dl := parseDeadLetter(raw)
	if dl.Subject == "" {
		return Replayed{}, fmt.Errorf("dead letter %d: no %s header to replay it to", seq, hdrOriginalSubject)
	}

	msg := nats.NewMsg(dl.Subject)
	msg.Data = raw.Data
	// The event as it was, its traceparent and event id included, without
	// the dead-letter annotations.
	copyHeaders(msg.Header, raw.Header, hdrReason, hdrOriginalSubject, hdrAttempts)
	msg.Header.Set(hdrReplayOf, strconv.FormatUint(seq, 10))
	ack, err := d.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID(replayMsgID(seq, dl.EventID)),
		// Only ever into ORDERS, where the worker's consumer reads.
		jetstream.WithExpectStream(events.Stream))
	if err != nil {
		return Replayed{}, fmt.Errorf("replay dead letter %d to %s: %w", seq, dl.Subject, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		// Another replay of the same entry may have deleted it first.
		if _, getErr := s.GetMsg(ctx, seq); !errors.Is(getErr, jetstream.ErrMsgNotFound) {
			return Replayed{}, fmt.Errorf("dead letter %d replayed (ORDERS #%d) but not deleted: %w", seq, ack.Sequence, err)
		}
	}
	return Replayed{DeadLetter: dl, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// replayMsgID is the Nats-Msg-Id of every replay of the entry at seq.
func replayMsgID(seq uint64, eventID string) string {
	if eventID == "" {
		return fmt.Sprintf("replay-%d", seq)
	}
	return fmt.Sprintf("replay-%d-%s", seq, eventID)
}

// ReplayAll replays every dead letter there is when it starts, oldest
// first, and stops at the first failure. An event dead-lettered again while
// it runs is a new entry and waits for the next replay. It returns the
// entries replayed, also when it stops early.
func (d *DeadLetters) ReplayAll(ctx context.Context) ([]Replayed, error) {
	dls, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Replayed
	for _, dl := range dls {
		r, err := d.Replay(ctx, dl.Seq)
		if errors.Is(err, ErrNoDeadLetter) {
			continue // replayed meanwhile by someone else
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
