package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	DB *sqldb.DB
	JS jetstream.JetStream
	// Prepare declares what publishing needs (the stream). The relay calls it
	// before its first publish and again until it succeeds, so a service can
	// start while NATS is away.
	Prepare func(ctx context.Context) error
	// Owner names this relay in row leases; unique per process.
	Owner string
	// Poll is how often the relay looks for rows when nobody wakes it; it
	// is the safety net for a wake-up lost to a crash or another replica.
	Poll time.Duration
	// Batch is how many rows one round claims and publishes.
	Batch int
	// Lease is how long a claim keeps other relays off a row (30 s when
	// unset). It is what hands the rows of a relay that died mid-batch to
	// another one. Keep it well above the 5 s ack timeout: a shorter lease
	// lets another relay take rows a live one is still waiting on, and both
	// publish them (JetStream drops the copy, but it is wasted work).
	Lease time.Duration

	Logger     *slog.Logger
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
}

// Relay publishes outbox rows to JetStream.
type Relay struct {
	cfg    RelayConfig
	tracer trace.Tracer
	wake   chan struct{}
	now    func() time.Time
}

// Timings of the relay.
const (
	ackTimeout = 5 * time.Second
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Defaults for a RelayConfig that leaves Poll, Batch or Lease unset. The
// lease outlives a batch's ack timeout by far, so a live relay never loses
// its rows to another.
const (
	defaultPoll  = time.Second
	defaultBatch = 100
	defaultLease = 30 * time.Second
)

// NewRelay returns a relay; Run starts it. It registers the outbox backlog
// gauge, read from the table at each scrape, so the backlog shows even when
// the relay itself is stuck.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = defaultPoll
	}
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.Lease <= 0 {
		cfg.Lease = defaultLease
	}
	const scope = "github.com/ds-blueprint/blueprint/internal/platform/outbox"
	_, err := cfg.Meter.Meter(scope).Int64ObservableGauge("blueprint.outbox.pending",
		metric.WithDescription("Outbox events not yet acknowledged by JetStream."),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			n, err := Pending(ctx, cfg.DB)
			if err != nil {
				return err
			}
			o.Observe(int64(n))
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("outbox metrics: %w", err)
	}
	return &Relay{
		cfg:    cfg,
		tracer: cfg.Tracer.Tracer(scope),
		wake:   make(chan struct{}, 1),
		now:    time.Now,
	}, nil
}

// Notify wakes the relay after a commit that wrote outbox rows. It never
// blocks: a pending wake-up already covers this commit.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends. A batch in progress when ctx ends is
// finished (bounded by the ack timeout) so no row is left half-published.
func (r *Relay) Run(ctx context.Context) error {
	backoff := minBackoff
	prepared := false
	for {
		var n int
		var err error
		if !prepared {
			if err = r.cfg.Prepare(ctx); err == nil {
				prepared = true
			}
		}
		if prepared {
			n, err = r.relayBatch(context.WithoutCancel(ctx))
		}
		if err != nil {
			// Declare again before the next try: the server that failed may
			// come back without the stream (a new node, a lost store).
			// Declaring is idempotent and cheap.
			prepared = false
			r.cfg.Logger.WarnContext(ctx, "outbox relay failed; retrying", "error", err.Error(), "retry_in", backoff.String())
			if !r.wait(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		if n == r.cfg.Batch {
			continue // a full batch: more rows are probably waiting
		}
		if !r.wait(ctx, r.cfg.Poll) {
			return nil
		}
	}
}

// wait pauses for d, or less when a commit wakes the relay (after a
// failure too: a new order is the first sign NATS may be back). It reports
// false when ctx ended.
func (r *Relay) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-r.wake:
	case <-t.C:
	}
	return true
}

// relayBatch claims pending rows, publishes them all, waits for their acks
// and marks the acknowledged ones sent. It returns how many it claimed.
func (r *Relay) relayBatch(ctx context.Context) (int, error) {
	msgs, err := claim(ctx, r.cfg.DB, r.cfg.Owner, r.cfg.Batch, r.cfg.Lease, r.now())
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	type inflight struct {
		msg    Message
		span   trace.Span
		future jetstream.PubAckFuture
	}
	pending := make([]inflight, 0, len(msgs))
	var errs []error
	for _, m := range msgs {
		span, nm := r.prepareMessage(m)
		f, err := r.cfg.JS.PublishMsgAsync(nm, jetstream.WithMsgID(m.ID))
		if err != nil {
			endSpan(span, err)
			errs = append(errs, fmt.Errorf("publish %s: %w", m.ID, err))
			continue
		}
		pending = append(pending, inflight{msg: m, span: span, future: f})
	}

	ackCtx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	var sent []string
	for _, p := range pending {
		select {
		case ack := <-p.future.Ok():
			p.span.SetAttributes(attribute.Int64("messaging.nats.stream.sequence", int64(ack.Sequence)),
				attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
			endSpan(p.span, nil)
			sent = append(sent, p.msg.ID)
		case err := <-p.future.Err():
			endSpan(p.span, err)
			errs = append(errs, fmt.Errorf("publish %s: %w", p.msg.ID, err))
		case <-ackCtx.Done():
			// Unknown outcome: the message may be stored. It stays pending
			// and is re-sent with the same id; JetStream drops the copy.
			err := fmt.Errorf("publish %s: no ack within %s", p.msg.ID, ackTimeout)
			endSpan(p.span, err)
			errs = append(errs, err)
		}
	}
	if err := markSent(ctx, r.cfg.DB, r.cfg.Owner, sent, r.now()); err != nil {
		errs = append(errs, err)
	}
	return len(msgs), errors.Join(errs...)
}

// prepareMessage starts the publish span as a child of the trace stored with
// the row, and carries the span's context in the message headers so the
// consumer continues the same trace.
func (r *Relay) prepareMessage(m Message) (trace.Span, *nats.Msg) {
	parent := r.cfg.Propagator.Extract(context.Background(), propagation.MapCarrier(m.Headers))
	ctx, span := r.tracer.Start(parent, "send "+m.Subject,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", m.Subject),
			attribute.String("messaging.message.id", m.ID),
			attribute.Int("blueprint.outbox.attempt", m.Attempts),
		))
	nm := nats.NewMsg(m.Subject)
	nm.Data = m.Payload
	r.cfg.Propagator.Inject(ctx, natsbus.Header(nm.Header))
	return span, nm
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
