package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	DB *sqldb.DB
	// JS's connection carries the publishes. The relay publishes through a
	// JetStream context of its own on it, one that forgets an ack after the
	// ack timeout (see NewRelay).
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
	// Lease is how long a claim keeps other relays off a row unless renewed
	// (3 s when unset). The relay renews it every third of it while it
	// works on the rows, however long their acks take, and releases the
	// rows not acknowledged at the end of each round, shutdown included.
	// So the lease only matters when a relay dies holding rows: another
	// relay sends them again within Lease plus Poll of the crash.
	Lease time.Duration
	// Faults injects faults at FaultAfterClaim; nil injects none.
	Faults *chaos.Injector

	Logger     *slog.Logger
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
}

// Relay publishes outbox rows to JetStream.
type Relay struct {
	cfg RelayConfig
	// pub publishes; its acks time out on their own (see NewRelay).
	pub      jetstream.JetStream
	tracer   trace.Tracer
	duration messagingconv.ClientOperationDuration
	lag      metric.Float64Histogram
	// takenOver counts rows claimed from relays whose lease had ended.
	takenOver metric.Int64Counter
	wake      chan struct{}
	now       func() time.Time
}

// FaultAfterClaim is the fault point between the claim of a batch and its
// publish. A latency there holds the batch's rows under a lease that is
// renewed meanwhile, as a slow relay does; a crash there kills a relay
// holding rows, which another relay must then send.
const FaultAfterClaim = "outbox.after_claim"

// Timings of the relay.
const (
	// ackTimeout bounds the wait for a PubAck. Past it the outcome is
	// unknown: the message may be stored. The row stays pending and is sent
	// again with the same Nats-Msg-Id.
	ackTimeout = 5 * time.Second
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Defaults for a RelayConfig that leaves Poll, Batch or Lease unset. With
// a lease of 3 s and a poll of 1 s, the rows of a relay that died are sent
// again within 4 s; a live relay renews its lease every second, so it loses
// its rows only if two renewals in a row fail.
const (
	defaultPoll  = time.Second
	defaultBatch = 100
	defaultLease = 3 * time.Second
)

// Histogram buckets, in seconds. Publish latency follows the semantic
// conventions' advice for messaging.client.operation.duration. Lag reaches
// further, to the length of a NATS outage; its 120 s bound is the stream's
// duplicates window, so the buckets above it count the events a re-send
// could have stored twice.
var (
	durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	lagBuckets      = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
)

// NewRelay returns a relay; Run starts it. It registers the relay's metrics.
// The backlog and the age of its oldest event are read from the table at
// each scrape, so they show even when the relay itself is stuck; while the
// table cannot be read they are missing.
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
	// A JetStream context keeps each async publish until its ack arrives,
	// unless it has a publish timeout: without one, every ack lost on a live
	// connection (a stream leader that changed mid-publish) stays pending for
	// good, and once the context's limit of them has piled up every publish
	// fails until the connection drops. So the relay publishes through a
	// context of its own, whose acks time out. Its limit is one batch: each
	// round waits for all of its publishes before the next, so the limit
	// binds only if acks leak, and then publishing stops at once, loudly,
	// rather than after thousands.
	pub, err := jetstream.New(cfg.JS.Conn(),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncMaxPending(cfg.Batch))
	if err != nil {
		return nil, fmt.Errorf("outbox publisher: %w", err)
	}
	r := &Relay{
		cfg:    cfg,
		pub:    pub,
		tracer: cfg.Tracer.Tracer(scope),
		wake:   make(chan struct{}, 1),
		now:    time.Now,
	}
	if err := r.registerMetrics(cfg.Meter.Meter(scope)); err != nil {
		return nil, fmt.Errorf("outbox metrics: %w", err)
	}
	return r, nil
}

const scope = "github.com/ds-blueprint/blueprint/internal/platform/outbox"

// registerMetrics creates the relay's instruments. Every replica reports the
// same backlog, read from the shared table; take their max, not their sum.
func (r *Relay) registerMetrics(m metric.Meter) error {
	pending, err := m.Int64ObservableGauge("blueprint.outbox.pending",
		metric.WithDescription("Outbox events not yet acknowledged by JetStream."))
	if err != nil {
		return err
	}
	oldest, err := m.Float64ObservableGauge("blueprint.outbox.oldest_pending_age",
		metric.WithDescription("Age of the oldest outbox event not yet acknowledged by JetStream; 0 when none waits."),
		metric.WithUnit("s"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		n, first, err := backlog(ctx, r.cfg.DB)
		if err != nil {
			// Not returned: an error from a callback makes the SDK drop the
			// whole collection from the OTLP push. The gauges go missing
			// instead, and the line says why.
			r.cfg.Logger.WarnContext(ctx, "outbox metrics unavailable", "error", err.Error())
			return nil
		}
		o.ObserveInt64(pending, int64(n))
		age := 0.0
		if n > 0 {
			// Clamped: another replica's clock may run ahead of this one.
			age = max(0, r.now().Sub(first).Seconds())
		}
		o.ObserveFloat64(oldest, age)
		return nil
	}, pending, oldest)
	if err != nil {
		return err
	}
	if r.duration, err = messagingconv.NewClientOperationDuration(m,
		metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return err
	}
	if r.lag, err = m.Float64Histogram("blueprint.outbox.lag",
		metric.WithDescription("Time from an outbox event's commit to its PubAck: how late the rest of the system hears of it."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(lagBuckets...)); err != nil {
		return err
	}
	r.takenOver, err = m.Int64Counter("blueprint.outbox.taken_over",
		metric.WithDescription("Outbox rows this relay claimed from another relay whose lease had ended: that relay died, or stopped renewing, holding them."))
	return err
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
// finished (bounded by the ack timeout) so no row is left half-published,
// and its rows not sent are released for the other relays.
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
			n, err = r.relayBatch(ctx)
		}
		if err != nil && ctx.Err() != nil {
			// Stopped during a round, which released what it had not sent.
			r.cfg.Logger.InfoContext(ctx, "outbox relay stopped; unsent rows left to the other relays", "error", err.Error())
			return nil
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

// relayBatch claims pending rows, publishes them while it holds their lease,
// marks the acknowledged ones sent and releases the others. It returns how
// many it claimed. When ctx ends the batch is still finished, its
// statements and publishes running on a context ctx's end does not cancel;
// only a latency injected at FaultAfterClaim is cut short.
func (r *Relay) relayBatch(ctx context.Context) (int, error) {
	work := context.WithoutCancel(ctx)
	asked := time.Now()
	msgs, takenOver, err := claim(work, r.cfg.DB, r.cfg.Owner, r.cfg.Batch, r.cfg.Lease, asked)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	r.recordTakeovers(work, takenOver)
	ids := messageIDs(msgs)
	l := newLease(asked, r.cfg.Lease)
	stopRenewing := r.keepLease(work, l, ids)
	sent, err := r.publish(ctx, l, msgs)
	// Renewing stops before the rows are marked and released: on
	// PostgreSQL a renewal and those statements would lock the same rows.
	// Renewed every third of its length, the lease has more than half of
	// it left for them.
	stopRenewing()
	err = errors.Join(err, markSent(work, r.cfg.DB, r.cfg.Owner, sent, r.now()))
	// Rows not acknowledged go back at once to whichever relay claims next,
	// this one included. If marking failed, the acknowledged rows stay
	// leased until the lease ends and are then sent again; JetStream drops
	// the copies.
	unsent := slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(sent, id) })
	err = errors.Join(err, release(work, r.cfg.DB, r.cfg.Owner, unsent))
	return len(msgs), err
}

// recordTakeovers counts and logs the rows a claim took from relays whose
// lease had ended: the sign of a relay that died, or could not renew,
// holding rows.
func (r *Relay) recordTakeovers(ctx context.Context, takenOver map[string]int) {
	for previous, n := range takenOver {
		r.takenOver.Add(ctx, int64(n))
		r.cfg.Logger.WarnContext(ctx, "outbox rows taken over from an expired lease", "previous_owner", previous, "rows", n)
	}
}

// publish sends msgs in order, each only while l holds, waits for every
// ack, and returns the ids JetStream acknowledged.
func (r *Relay) publish(ctx context.Context, l *lease, msgs []Message) ([]string, error) {
	if err := r.cfg.Faults.Hit(ctx, FaultAfterClaim); err != nil {
		return nil, err
	}
	type inflight struct {
		msg    Message
		ctx    context.Context // carries the publish span, for exemplars
		span   trace.Span
		start  time.Time
		future jetstream.PubAckFuture
	}
	pending := make([]inflight, 0, len(msgs))
	var errs []error
	for i, m := range msgs {
		// Past its lease the row may be another relay's, which could store
		// it again outside the duplicates window if this publish were held
		// up long enough: it is left to that relay.
		if !l.held() {
			errs = append(errs, fmt.Errorf("outbox lease lost with %d rows of the batch not published", len(msgs)-i))
			break
		}
		spanCtx, span, nm := r.prepareMessage(m)
		start := r.now()
		f, err := r.pub.PublishMsgAsync(nm, jetstream.WithMsgID(m.ID))
		if err != nil {
			r.failed(spanCtx, span, m, start, err)
			errs = append(errs, fmt.Errorf("publish %s: %w", m.ID, err))
			continue
		}
		pending = append(pending, inflight{msg: m, ctx: spanCtx, span: span, start: start, future: f})
	}

	// Every future resolves: with an ack, an error, or the publisher's ack
	// timeout. JetStream acks a stream's messages in order, so reading them
	// in order costs little precision in the latency recorded.
	var sent []string
	for _, p := range pending {
		select {
		case ack := <-p.future.Ok():
			now := r.now()
			r.duration.Record(p.ctx, now.Sub(p.start).Seconds(), "publish", "nats", r.publishAttrs(p.msg.Subject)...)
			r.lag.Record(p.ctx, now.Sub(p.msg.CreatedAt).Seconds(),
				metric.WithAttributes(attribute.String("messaging.destination.name", p.msg.Subject)))
			p.span.SetAttributes(attribute.Int64("messaging.nats.stream.sequence", int64(ack.Sequence)),
				attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
			p.span.End()
			sent = append(sent, p.msg.ID)
		case err := <-p.future.Err():
			// On a timeout the outcome is unknown: the message may be
			// stored. The row stays pending and is sent again with the same
			// id; JetStream drops the copy within its duplicates window.
			r.failed(p.ctx, p.span, p.msg, p.start, err)
			errs = append(errs, fmt.Errorf("publish %s: %w", p.msg.ID, err))
		}
	}
	return sent, errors.Join(errs...)
}

// publishAttrs are the attributes of a publish to subject, beside the
// operation name and system that Record adds.
func (r *Relay) publishAttrs(subject string, extra ...attribute.KeyValue) []attribute.KeyValue {
	return append([]attribute.KeyValue{
		r.duration.AttrOperationType(messagingconv.OperationTypeSend),
		r.duration.AttrDestinationName(subject),
	}, extra...)
}

// failed records a publish of m that ended in err, on its span and in the
// publish latency, and at debug level in the log, in the event's trace: the
// warning Run writes covers a whole batch, so it belongs to no one trace.
func (r *Relay) failed(ctx context.Context, span trace.Span, m Message, start time.Time, err error) {
	et := errorType(err)
	r.cfg.Logger.DebugContext(ctx, "outbox publish failed",
		"event_id", m.ID, "attempt", m.Attempts, "error_type", string(et), "error", err.Error())
	r.duration.Record(ctx, r.now().Sub(start).Seconds(), "publish", "nats",
		r.publishAttrs(m.Subject, r.duration.AttrErrorType(et))...)
	span.SetAttributes(attribute.String("error.type", string(et)))
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.End()
}

// errorType names the class of a failed publish for the error.type
// attribute: few values, so a dashboard can split failures by cause.
func errorType(err error) messagingconv.ErrorTypeAttr {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return "timeout" // unknown outcome: the message may be stored
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return "no_responders" // no stream takes the subject, or JetStream is down
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting):
		return "disconnected"
	case errors.As(err, &apiErr):
		return "jetstream_error" // the stream refused it: full, sealed, …
	}
	return messagingconv.ErrorTypeOther
}

// prepareMessage starts the publish span as a child of the trace stored with
// the row, and carries the span's context in the message headers so the
// consumer continues the same trace.
func (r *Relay) prepareMessage(m Message) (context.Context, trace.Span, *nats.Msg) {
	parent := r.cfg.Propagator.Extract(context.Background(), propagation.MapCarrier(m.Headers))
	ctx, span := r.tracer.Start(parent, "send "+m.Subject,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.name", "publish"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", m.Subject),
			attribute.String("messaging.message.id", m.ID),
			attribute.Int("blueprint.outbox.attempt", m.Attempts),
		))
	nm := nats.NewMsg(m.Subject)
	nm.Data = m.Payload
	r.cfg.Propagator.Inject(ctx, natsbus.Header(nm.Header))
	return ctx, span, nm
}
