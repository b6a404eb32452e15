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
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Consumer settings. AckWait is far longer than the work (a users lookup
// and a delivery, each with its own timeout), so an event is redelivered
// only when a worker died or hung; failures are retried sooner, on the
// back-off schedule, by negative acks.
const (
	ConsumerName  = "notifications"
	ackWait       = 30 * time.Second
	maxDeliver    = 5
	maxAckPending = 1000
	// handleTimeout bounds one attempt, well inside ackWait.
	handleTimeout = 20 * time.Second
	// maxEventBytes: a larger event is not one the orders service wrote.
	maxEventBytes = 64 << 10
)

// backoff is the wait before attempt n+1 after attempt n failed.
var backoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}

// Dead letters go to their own stream so they can be inspected and replayed.
const (
	DeadLetterStream  = "DLQ"
	DeadLetterSubject = "dlq.notifications"
)

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
	return w, nil
}

// ConsumerConfig is the durable consumer every replica shares.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		FilterSubject: events.OrderCreated,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: maxAckPending,
	}
}

// setup declares the streams and the consumer. It is idempotent, so every
// replica runs it at start.
func (w *Worker) setup(ctx context.Context) (jetstream.Consumer, error) {
	if _, err := w.cfg.JS.CreateOrUpdateStream(ctx, events.StreamConfig(w.cfg.StreamReplicas)); err != nil {
		return nil, fmt.Errorf("declare stream %s: %w", events.Stream, err)
	}
	if _, err := w.cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: DeadLetterStream, Subjects: []string{"dlq.>"}, Storage: jetstream.FileStorage,
		MaxAge: 30 * 24 * time.Hour, Replicas: max(1, w.cfg.StreamReplicas),
	}); err != nil {
		return nil, fmt.Errorf("declare stream %s: %w", DeadLetterStream, err)
	}
	cons, err := w.cfg.JS.CreateOrUpdateConsumer(ctx, events.Stream, ConsumerConfig())
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
	parent := w.cfg.Propagator.Extract(ctx, natsbus.Header(m.Headers()))
	ctx, span := w.tracer.Start(parent, "process "+m.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", m.Subject()),
			attribute.String("messaging.consumer.group.name", ConsumerName),
			attribute.String("messaging.message.id", m.Headers().Get(nats.MsgIdHdr)),
			attribute.Int64("messaging.nats.delivery.attempt", int64(attempt)),
		))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, handleTimeout)
	defer cancel()

	err := w.process(ctx, m.Data())
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
	if permanent || attempt >= maxDeliver {
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
// fails the event is left for redelivery instead.
func (w *Worker) deadLetter(ctx context.Context, m jetstream.Msg, attempt uint64, reason error) {
	dl := nats.NewMsg(DeadLetterSubject)
	dl.Data = m.Data()
	for k, v := range m.Headers() {
		if k != nats.MsgIdHdr {
			dl.Header[k] = v
		}
	}
	dl.Header.Set("Blueprint-Dead-Letter-Reason", reason.Error())
	dl.Header.Set("Blueprint-Original-Subject", m.Subject())
	dl.Header.Set("Blueprint-Attempts", fmt.Sprint(attempt))
	if id := m.Headers().Get(nats.MsgIdHdr); id != "" {
		dl.Header.Set("Blueprint-Event-Id", id)
		dl.Header.Set(nats.MsgIdHdr, "dlq-"+id)
	}
	if _, err := w.cfg.JS.PublishMsg(ctx, dl); err != nil {
		w.cfg.Logger.ErrorContext(ctx, "dead-letter publish failed; leaving event for redelivery", "error", err.Error())
		return
	}
	if err := m.Term(); err != nil {
		w.cfg.Logger.WarnContext(ctx, "term failed", "error", err.Error())
	}
	w.deadLettered.Add(ctx, 1)
	w.cfg.Logger.ErrorContext(ctx, "event dead-lettered", "attempts", attempt, "reason", reason.Error())
}
