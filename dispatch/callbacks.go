package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/callback"
)

// CallbackSource hands out the stored callbacks of finished jobs.
type CallbackSource interface {
	ConsumeCallbacks(ctx context.Context, maxInFlight int, ackWait time.Duration, handle func(*buffer.Callback)) error
}

var _ CallbackSource = (*buffer.Queue)(nil)

// CallbackSender delivers one callback, signed with its tenant's secrets;
// a *callback.Error says whether a failure is worth retrying.
type CallbackSender interface {
	Send(ctx context.Context, tenant, url, msgID string, body []byte, now time.Time) error
}

var _ CallbackSender = (*callback.Sender)(nil)

// CallbackConfig describes a CallbackDeliverer.
type CallbackConfig struct {
	// Source is where callbacks come from. Required.
	Source CallbackSource
	// Sender POSTs them. Required.
	Sender CallbackSender
	// Timeout cuts off one delivery attempt. Zero means 10s.
	Timeout time.Duration
	// Retry says when a failed delivery is tried again. MaxAttempts zero
	// means 10; the other fields default as in RetryPolicy.
	Retry RetryPolicy
	// Concurrency is the most deliveries in flight, across gateway
	// processes. Zero means 32.
	Concurrency int
	// Logger receives its logs. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// CallbackDeliverer POSTs finished jobs to their callback URLs, retrying
// with backoff, until each is delivered, refused for good, or out of
// attempts.
type CallbackDeliverer struct {
	cfg CallbackConfig
	log *slog.Logger
}

// NewCallbackDeliverer checks cfg and returns a CallbackDeliverer.
func NewCallbackDeliverer(cfg CallbackConfig) (*CallbackDeliverer, error) {
	if cfg.Source == nil || cfg.Sender == nil {
		return nil, errors.New("dispatch: callbacks need a source and a sender")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Retry.MaxAttempts == 0 {
		cfg.Retry.MaxAttempts = 10
	}
	cfg.Retry.setDefaults()
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &CallbackDeliverer{cfg: cfg, log: cfg.Logger.With("component", "callbacks")}, nil
}

// Run delivers callbacks until ctx ends, then waits for the deliveries in
// flight (each bounded by Timeout) and returns nil.
func (d *CallbackDeliverer) Run(ctx context.Context) error {
	slots := make(chan struct{}, d.cfg.Concurrency)
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	for ctx.Err() == nil {
		// Past AckWait an unfinished callback goes to another process.
		err := d.cfg.Source.ConsumeCallbacks(ctx, d.cfg.Concurrency, d.cfg.Timeout+15*time.Second, func(cb *buffer.Callback) {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				d.settle(cb, cb.Retry(0))
				return
			}
			inFlight.Go(func() {
				defer func() { <-slots }()
				d.deliver(context.WithoutCancel(ctx), cb)
			})
		})
		if err != nil {
			d.log.WarnContext(ctx, "pull callbacks", "err", err)
			sleep(ctx, time.Second)
		}
	}
	return nil
}

// deliver makes one attempt at a callback and decides what follows.
func (d *CallbackDeliverer) deliver(ctx context.Context, cb *buffer.Callback) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	log := d.log.With("webhook_id", cb.WebhookID, "attempt", cb.Attempt)
	err := d.cfg.Sender.Send(ctx, cb.Tenant, cb.URL, cb.WebhookID, cb.Body, d.cfg.Now())
	if err == nil {
		log.Debug("callback delivered")
		d.settle(cb, cb.Done())
		return
	}
	var sendErr *callback.Error
	retryable := errors.As(err, &sendErr) && sendErr.Retryable
	switch {
	case !retryable:
		log.Warn("callback refused for good; dropped", "err", err)
		d.settle(cb, cb.Drop())
	case cb.Attempt >= d.cfg.Retry.MaxAttempts:
		log.Warn("callback failed on its last attempt; dropped", "err", err, "max_attempts", d.cfg.Retry.MaxAttempts)
		d.settle(cb, cb.Drop())
	default:
		delay := d.cfg.Retry.delay(cb.Attempt, 0)
		log.Info("callback failed; retrying", "err", err, "delay", delay)
		d.settle(cb, cb.Retry(delay))
	}
}

// settle logs a failure to acknowledge a callback: it then comes back
// after its ack wait, and is tried again.
func (d *CallbackDeliverer) settle(cb *buffer.Callback, err error) {
	if err != nil {
		d.log.Error("settle callback; it will be delivered again", "webhook_id", cb.WebhookID, "err", err)
	}
}
