package notifications

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Consumer settings. The server redelivers an event by itself only when
// AckWait passes with neither a settlement nor a heartbeat from the worker
// holding it: that worker died or lost NATS. Failures the worker sees are
// retried sooner, on the back-off schedule, by negative acks.
const (
	ConsumerName      = "notifications"
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 5
	maxAckPending     = 1000
	// handleTimeout bounds one attempt. Heartbeats keep the event while it
	// runs, so it may be longer than a short AckWait.
	handleTimeout = 20 * time.Second
	// settleTimeout bounds the ack, nak or dead-letter copy after it.
	settleTimeout = 5 * time.Second
	// minAckWait: heartbeats go every third of AckWait; below this they
	// would flood the server and leave a late one no slack.
	minAckWait = 100 * time.Millisecond
	// maxEventBytes: a larger event is not one the orders service wrote.
	maxEventBytes = 64 << 10
	// consumerInfoTimeout bounds the question a metrics collection asks of
	// JetStream, so a scrape answers while NATS is away.
	consumerInfoTimeout = 2 * time.Second
)

// backoff is the wait before attempt n+1 after attempt n failed.
var backoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}

// Fault points of the worker, for chaos rules.
const (
	// FaultDeliver is hit before each delivery: latency makes deliveries
	// slow, errors make them fail and be retried.
	FaultDeliver = "notifications.deliver"
	// FaultAfterDelivery is hit once the channel delivered, before the
	// notification is recorded and the event acked: a crash there makes
	// the redelivered event notify a second time.
	FaultAfterDelivery = "notifications.after_delivery"
)

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	JS        jetstream.JetStream
	DB        *sqldb.DB
	Directory Directory
	Channel   Channel
	// Faults injects faults at the fault points; nil injects none.
	Faults *chaos.Injector
	// Replicas of the streams the worker declares.
	StreamReplicas int
	// Concurrency is how many events one worker handles at once.
	Concurrency int
	// AckWait is how long the server waits for a settlement or a heartbeat
	// before it hands the event to another replica: how quickly the events
	// of a dead worker move on. Zero means DefaultAckWait.
	AckWait time.Duration
	// MaxDeliver is how many attempts an event gets before it is
	// dead-lettered. Zero means DefaultMaxDeliver.
	MaxDeliver int

	Logger     *slog.Logger
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
	Now        func() time.Time
}

// Worker consumes orders.created and notifies.
type Worker struct {
	cfg    WorkerConfig
	tracer trace.Tracer

	sent, failed, deadLettered metric.Int64Counter
	processDuration            messagingconv.ProcessDuration
	// consuming is set while Run pulls from the consumer.
	consuming atomic.Bool
}

// Ready reports whether the worker is consuming: a replica whose consumer
// is not set up yet (NATS away, a cluster still electing) is not ready.
func (w *Worker) Ready() error {
	if !w.consuming.Load() {
		return errors.New("not consuming yet")
	}
	return nil
}

// NewWorker returns a worker; Run starts it.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	cfg.Concurrency = max(1, cfg.Concurrency)
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if cfg.AckWait < minAckWait {
		return nil, fmt.Errorf("ack wait %v: must be at least %v", cfg.AckWait, minAckWait)
	}
	if cfg.MaxDeliver < 1 {
		return nil, fmt.Errorf("max deliver %d: must be at least 1", cfg.MaxDeliver)
	}
	w := &Worker{cfg: cfg, tracer: cfg.Tracer.Tracer("github.com/ds-blueprint/blueprint/internal/notifications")}
	m := cfg.Meter.Meter("github.com/ds-blueprint/blueprint/internal/notifications")
	var err error
	if w.sent, err = m.Int64Counter("blueprint.notifications.sent", metric.WithDescription("Notifications delivered and recorded.")); err != nil {
		return nil, err
	}
	if w.failed, err = m.Int64Counter("blueprint.notifications.failed", metric.WithDescription("Attempts that failed and will be retried.")); err != nil {
		return nil, err
	}
	if w.deadLettered, err = m.Int64Counter("blueprint.notifications.dead_lettered", metric.WithDescription("Events given up on and sent to the dead-letter stream.")); err != nil {
		return nil, err
	}
	if w.processDuration, err = messagingconv.NewProcessDuration(m, metric.WithExplicitBucketBoundaries(processBuckets...)); err != nil {
		return nil, err
	}
	if err := w.registerConsumerMetrics(m); err != nil {
		return nil, err
	}
	return w, nil
}

// processBuckets are the bounds of messaging.process.duration, in seconds:
// a delivery looks a user up and may call a webhook, and an attempt is cut
// off at handleTimeout.
var processBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20}

// registerConsumerMetrics reports the durable consumer's state, asked of
// JetStream at each collection: what the workers have yet to be handed
// (their lag), what they hold unacknowledged, and how much of that is a
// redelivery. Every replica reports the same shared consumer; take the max,
// not the sum.
func (w *Worker) registerConsumerMetrics(m metric.Meter) error {
	pending, err := m.Int64ObservableGauge("blueprint.consumer.pending",
		metric.WithDescription("Events in the stream not yet handed to a worker: the consumer's lag."),
		metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	ackPending, err := m.Int64ObservableGauge("blueprint.consumer.ack_pending",
		metric.WithDescription("Events handed to a worker and not yet acknowledged."),
		metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	redelivered, err := m.Int64ObservableGauge("blueprint.consumer.redelivered",
		metric.WithDescription("Events handed out more than once and not yet acknowledged."),
		metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	attrs := metric.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", events.OrderCreated),
		attribute.String("messaging.consumer.group.name", ConsumerName))
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, consumerInfoTimeout)
		defer cancel()
		cons, err := w.cfg.JS.Consumer(ctx, events.Stream, ConsumerName)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil // not declared yet: nothing to report
		}
		if err != nil {
			// Not returned: an error from a callback makes the SDK drop the
			// whole collection from the OTLP push, the worker's other metrics
			// with it. The gauges go missing instead, and the line says why.
			w.cfg.Logger.WarnContext(ctx, "consumer metrics unavailable", "consumer", ConsumerName, "error", err.Error())
			return nil
		}
		info := cons.CachedInfo()
		o.ObserveInt64(pending, int64(info.NumPending), attrs)
		o.ObserveInt64(ackPending, int64(info.NumAckPending), attrs)
		o.ObserveInt64(redelivered, int64(info.NumRedelivered), attrs)
		return nil
	}, pending, ackPending, redelivered)
	return err
}

// consumerConfig is the durable consumer every replica shares.
//
// It sets no BackOff, on purpose. A consumer's BackOff times only the
// redeliveries the server makes on its own when an ack is late, not those
// after a nak; it replaces AckWait, so the first ack timeout would be
// BackOff[0] (1 s), shorter than an attempt may take; and the server
// refuses a BackOff with more steps than MaxDeliver. The worker naks the
// failures it sees on the back-off table instead, and AckWait stays one
// fixed time for the failure it cannot see: a worker that died.
func (w *Worker) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		FilterSubject: events.OrderCreated,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliver,
		MaxAckPending: maxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// setup declares the streams and the consumer. It is idempotent, so every
// replica runs it at start.
//
// ORDERS belongs to orders, which declares it and applies changes to it:
// the worker only creates it when it is missing (so it can start first),
// and never updates it. A deployed NATS denies notifications the update,
// since an update could make the stream copy messages the worker may
// publish (dead letters) in as orders.created.
func (w *Worker) setup(ctx context.Context) (jetstream.Consumer, error) {
	if _, err := events.CreateStream(ctx, w.cfg.JS, w.cfg.StreamReplicas); err != nil {
		return nil, err
	}
	if _, err := w.cfg.JS.CreateOrUpdateStream(ctx, DeadLetterStreamConfig(w.cfg.StreamReplicas)); err != nil {
		return nil, fmt.Errorf("declare stream %s: %w", DeadLetterStream, err)
	}
	cons, err := w.cfg.JS.CreateOrUpdateConsumer(ctx, events.Stream, w.consumerConfig())
	if err != nil {
		return nil, fmt.Errorf("declare consumer %s: %w", ConsumerName, err)
	}
	// On a cluster a new consumer answers only once its replicas have
	// elected a leader; pulling before that fails until the next pull expiry.
	if _, err := cons.Info(ctx); err != nil {
		return nil, fmt.Errorf("consumer %s not ready: %w", ConsumerName, err)
	}
	return cons, nil
}

// Run consumes until ctx ends, then drains: it stops pulling, finishes the
// events it holds, and returns. If NATS is away at start it keeps trying.
func (w *Worker) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		setupCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := w.setup(setupCtx)
		cancel()
		if err == nil {
			cons = c
			break
		}
		w.cfg.Logger.WarnContext(ctx, "consumer setup failed; retrying", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}

	slots := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	cc, err := cons.Consume(func(m jetstream.Msg) {
		slots <- struct{}{} // back-pressure: the next pull waits for a free slot
		wg.Go(func() {      // ends when handle returns; handle is bounded by handleTimeout
			defer func() { <-slots }()
			w.handle(context.WithoutCancel(ctx), m)
		})
	}, jetstream.PullMaxMessages(2*w.cfg.Concurrency),
		// Short pulls: after a node is lost, a pull that went to it is
		// noticed missing (no heartbeat) within seconds, not 30 s.
		jetstream.PullExpiry(5*time.Second),
		jetstream.ConsumeErrHandler(
			func(_ jetstream.ConsumeContext, err error) {
				w.cfg.Logger.WarnContext(ctx, "consume error", "error", err.Error())
			}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	w.cfg.Logger.InfoContext(ctx, "consuming", "stream", events.Stream, "consumer", ConsumerName)
	w.consuming.Store(true)
	<-ctx.Done()
	w.consuming.Store(false)
	cc.Drain()
	<-cc.Closed()
	wg.Wait()
	return nil
}

// handle processes one delivery and settles it: ack on success, a delayed
// nak on a failure worth retrying, dead letter and term when retrying cannot
// help or the attempts are spent.
func (w *Worker) handle(ctx context.Context, m jetstream.Msg) {
	attempt := uint64(1)
	if md, err := m.Metadata(); err == nil {
		attempt = md.NumDelivered
	}
	// The message's creation context (the relay's send span) is both the
	// parent, so the order stays one trace (ADR 0004), and a link, which
	// the messaging conventions ask of every process span.
	parent := w.cfg.Propagator.Extract(ctx, natsbus.Header(m.Headers()))
	ctx, span := w.tracer.Start(parent, "process "+m.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.LinkFromContext(parent)),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.name", "process"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", m.Subject()),
			attribute.String("messaging.consumer.group.name", ConsumerName),
			attribute.String("messaging.message.id", m.Headers().Get(nats.MsgIdHdr)),
			attribute.Int64("messaging.nats.delivery.attempt", int64(attempt)),
		))
	defer span.End()

	start := time.Now()
	err := w.work(ctx, m)
	durationAttrs := []attribute.KeyValue{
		w.processDuration.AttrDestinationName(m.Subject()),
		w.processDuration.AttrConsumerGroupName(ConsumerName),
	}
	if err != nil {
		durationAttrs = append(durationAttrs, w.processDuration.AttrErrorType(processErrorType(err)))
	}
	w.processDuration.Record(ctx, time.Since(start).Seconds(), "process", "nats", durationAttrs...)
	// Settle on a deadline of its own: after an attempt that ran out of
	// time, an ack or a dead-letter copy sent under the attempt's deadline
	// would fail at once, and after the last attempt the server would then
	// drop the event with no dead letter.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err == nil {
		if err := m.DoubleAck(ctx); err != nil {
			// The notification is recorded; a redelivery will find it and
			// only ack.
			w.cfg.Logger.WarnContext(ctx, "ack failed", "error", err.Error())
		}
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	permanent := errors.Is(err, events.ErrMalformed) || errors.Is(err, ErrUndeliverable) || apperr.Is(err, apperr.NotFound)
	if permanent || attempt >= uint64(w.cfg.MaxDeliver) {
		w.deadLetter(ctx, m, attempt, err)
		return
	}
	delay := backoff[min(int(attempt), len(backoff))-1]
	w.failed.Add(ctx, 1)
	w.cfg.Logger.WarnContext(ctx, "notification failed; will retry",
		"attempt", attempt, "retry_in", delay.String(), "error", err.Error())
	if err := m.NakWithDelay(delay); err != nil {
		w.cfg.Logger.WarnContext(ctx, "nak failed; redelivery after ack wait", "error", err.Error())
	}
}

// processErrorType names the class of a failed attempt for error.type: few
// values, so a dashboard can split failures by cause.
func processErrorType(err error) messagingconv.ErrorTypeAttr {
	switch {
	case errors.Is(err, events.ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrUndeliverable):
		return "undeliverable"
	case apperr.Is(err, apperr.NotFound):
		return "user_not_found"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return messagingconv.ErrorTypeOther
}

// work runs one attempt within handleTimeout, heartbeating meanwhile.
func (w *Worker) work(ctx context.Context, m jetstream.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, handleTimeout)
	defer cancel()
	stop := w.heartbeat(ctx, m)
	// Stopped before handle settles: a heartbeat that reached the server
	// after a delayed nak would restart the full AckWait in place of the
	// back-off.
	defer stop()
	return w.process(ctx, m.Data())
}

// heartbeat tells the server every third of AckWait that m is still being
// worked on (+WPI), so a slow but alive attempt keeps its event instead of
// the server handing it to another replica. stop ends the heartbeats and
// returns once none can be sent any more.
func (w *Worker) heartbeat(ctx context.Context, m jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // ends when stop closes done
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := m.InProgress(); err != nil {
					w.cfg.Logger.WarnContext(ctx, "heartbeat failed", "error", err.Error())
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// process turns one event into a recorded notification. Running it twice
// for the same event records one notification.
func (w *Worker) process(ctx context.Context, data []byte) error {
	if len(data) > maxEventBytes {
		return fmt.Errorf("%w: %d bytes", events.ErrMalformed, len(data))
	}
	ev, err := events.ParseOrderCreated(data)
	if err != nil {
		return err
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("blueprint.order.id", ev.Data.OrderID))
	done, err := recorded(ctx, w.cfg.DB, ev.ID)
	if err != nil || done {
		return err
	}
	email, err := w.cfg.Directory.Email(ctx, ev.Data.UserID)
	if err != nil {
		return fmt.Errorf("look up user %s: %w", ev.Data.UserID, err)
	}
	n := Notification{
		ID:        uuid.Must(uuid.NewV7()).String(),
		OrderID:   ev.Data.OrderID,
		UserID:    ev.Data.UserID,
		Channel:   w.cfg.Channel.Name(),
		Status:    statusSent,
		CreatedAt: sqldb.NewTime(w.cfg.Now()).Time,
	}
	if err := w.deliver(ctx, Message{
		EventID: ev.ID, UserID: n.UserID, OrderID: n.OrderID, To: email, OccurredAt: ev.Time,
		Subject: "Your order " + ev.Data.OrderID + " was received",
		Body:    fmt.Sprintf("We received your order of %d × %s.", ev.Data.Qty, ev.Data.SKU),
	}); err != nil {
		return err
	}
	if err := w.cfg.Faults.Hit(ctx, FaultAfterDelivery); err != nil {
		return err
	}
	sentAt := sqldb.NewTime(w.cfg.Now()).Time
	n.SentAt = &sentAt
	inserted, err := record(ctx, w.cfg.DB, ev.ID, n)
	if err != nil {
		return err
	}
	if !inserted {
		// Another replica recorded this event first while both delivered:
		// possible only when two copies of one event arrive together (a
		// re-publish after the duplicates window). Channels that call out
		// send the event id as an idempotency key for this case.
		w.cfg.Logger.WarnContext(ctx, "event already recorded by another worker", "event_id", ev.ID)
		return nil
	}
	w.sent.Add(ctx, 1, metric.WithAttributes(attribute.String("channel", n.Channel)))
	return nil
}

func (w *Worker) deliver(ctx context.Context, m Message) error {
	ctx, span := w.tracer.Start(ctx, "deliver "+w.cfg.Channel.Name())
	defer span.End()
	err := w.cfg.Faults.Hit(ctx, FaultDeliver)
	if err == nil {
		err = w.cfg.Channel.Deliver(ctx, m)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("deliver on %s: %w", w.cfg.Channel.Name(), err)
	}
	return nil
}

// deadLetter copies the event to the dead-letter stream with the reason and
// terminates it, so it is neither retried forever nor lost. If the copy
// fails the event is not terminated: before the last attempt it comes back
// after AckWait and is dead-lettered then; after the last one the server
// will not deliver it again (it sends a MAX_DELIVERIES advisory) and the
// event is left only in the ORDERS stream, which the error log says.
func (w *Worker) deadLetter(ctx context.Context, m jetstream.Msg, attempt uint64, reason error) {
	id := eventID(m.Headers())
	process := trace.SpanFromContext(ctx)
	ctx, span := w.tracer.Start(ctx, "send "+DeadLetterSubject,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.name", "publish"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", DeadLetterSubject),
			attribute.String("messaging.message.id", id),
			attribute.Int64("messaging.nats.delivery.attempt", int64(attempt)),
		))
	defer span.End()
	dl := nats.NewMsg(DeadLetterSubject)
	dl.Data = m.Data()
	copyHeaders(dl.Header, m.Headers())
	dl.Header.Set(hdrReason, reason.Error())
	dl.Header.Set(hdrOriginalSubject, m.Subject())
	dl.Header.Set(hdrAttempts, fmt.Sprint(attempt))
	if id != "" {
		dl.Header.Set(hdrEventID, id)
	}
	var opts []jetstream.PublishOpt
	if msgID := m.Headers().Get(nats.MsgIdHdr); msgID != "" {
		// One dead letter per published copy, even when two replicas give
		// up on it at once; a replay is a new copy (its own msg id), so
		// giving up on it again makes a new dead letter.
		opts = append(opts, jetstream.WithMsgID("dlq-"+msgID))
	}
	ack, err := w.cfg.JS.PublishMsg(ctx, dl, opts...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		attrs := []any{"event_id", id, "attempts", attempt, "error", err.Error()}
		if attempt >= uint64(w.cfg.MaxDeliver) {
			if md, mdErr := m.Metadata(); mdErr == nil {
				attrs = append(attrs, "stream_seq", md.Sequence.Stream)
			}
			w.cfg.Logger.ErrorContext(ctx, "dead-letter publish failed; event left in stream "+events.Stream, attrs...)
			return
		}
		w.cfg.Logger.ErrorContext(ctx, "dead-letter publish failed; leaving event for redelivery", attrs...)
		return
	}
	if err := m.Term(); err != nil {
		w.cfg.Logger.WarnContext(ctx, "term failed", "error", err.Error())
	}
	w.deadLettered.Add(ctx, 1)
	// The DLQ sequence, on the spans and in the log, is what
	// `blueprint dlq replay --seq` takes.
	span.SetAttributes(attribute.Int64("messaging.nats.stream.sequence", int64(ack.Sequence)))
	process.AddEvent("dead-lettered", trace.WithAttributes(
		attribute.Int64("blueprint.dlq.sequence", int64(ack.Sequence)),
		attribute.Int64("messaging.nats.delivery.attempt", int64(attempt))))
	w.cfg.Logger.ErrorContext(ctx, "event dead-lettered",
		"event_id", id, "dlq_seq", ack.Sequence, "attempts", attempt, "reason", reason.Error())
}
