// Package delivery POSTs the stored callbacks of finished jobs to their
// URLs, signed by package [callback], retrying with backoff, and keeps each
// tenant to its share of the deliveries in flight.
//
// It is a package of its own, not part of [callback], so that a receiver
// that verifies callbacks with [callback.Verify] does not build the buffer
// (NATS) and dispatch (the function targets) this package needs.
package delivery

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/callbacks"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/dispatch/retry"
)

// Source hands out the stored callbacks of finished jobs.
type Source interface {
	ConsumeCallbacks(ctx context.Context, maxPending int, ackWait time.Duration, handle func(*callbacks.Callback)) error
}

var _ Source = (*buffer.Queue)(nil)

// Sender delivers one callback, signed with its tenant's secrets;
// a *callback.Error says whether a failure is worth retrying.
type Sender interface {
	Send(ctx context.Context, tenant, url, msgID string, body []byte, now time.Time) error
}

var _ Sender = (*callback.Sender)(nil)

// Config describes a Deliverer.
type Config struct {
	// Source is where callbacks come from. Required.
	Source Source
	// Sender POSTs them. Required.
	Sender Sender
	// Timeout cuts off one delivery attempt. Zero means
	// [DefaultTimeout].
	Timeout time.Duration
	// Retry says when a failed delivery is tried again. MaxAttempts zero
	// means [DefaultMaxAttempts], more than a job's: a receiver's outage is
	// not the function's; the other fields default as in
	// [retry.DefaultPolicy].
	Retry retry.Policy
	// Concurrency is the most deliveries in flight in this process. Zero
	// means [DefaultConcurrency].
	Concurrency int
	// TenantConcurrency is the most of one tenant's deliveries in flight in
	// this process, so that receivers that are slow or never answer cost
	// their tenant's callbacks, not everyone's. Zero means a quarter of
	// Concurrency (at least 1).
	TenantConcurrency int
	// MaxPending is the most callbacks handed out and not yet finished,
	// across gateway processes, those waiting for a retry included: many
	// more than Concurrency, so that callbacks in backoff do not hold up
	// the others. Zero means 64 × Concurrency.
	MaxPending int
	// Logger receives its logs. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Deliverer POSTs finished jobs to their callback URLs, retrying
// with backoff, until each is delivered, refused for good, or out of
// attempts.
type Deliverer struct {
	cfg     Config
	log     *slog.Logger
	tenants tenantGate
}

// New checks cfg and returns a Deliverer.
func New(cfg Config) (*Deliverer, error) {
	if cfg.Source == nil || cfg.Sender == nil {
		return nil, errors.New("delivery: callbacks need a source and a sender")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.Retry.MaxAttempts = cmp.Or(cfg.Retry.MaxAttempts, DefaultMaxAttempts)
	cfg.Retry.SetDefaults()
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.TenantConcurrency == 0 {
		cfg.TenantConcurrency = max(cfg.Concurrency/4, 1)
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 64 * cfg.Concurrency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Deliverer{cfg: cfg, log: cfg.Logger.With("component", "callbacks"),
		tenants: tenantGate{limit: cfg.TenantConcurrency, inFlight: map[string]int{}, handedBack: map[string]int{}}}, nil
}

// Defaults of Config.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 10
	DefaultConcurrency = 32
)

// tenantGate holds each tenant's deliveries in flight in this process to
// its share, and counts the callbacks it handed back for it, which are no
// delivery attempts.
type tenantGate struct {
	limit      int
	mu         sync.Mutex
	inFlight   map[string]int // by tenant
	handedBack map[string]int // by webhook ID
}

// maxHandedBack bounds tenantGate.handedBack: a callback handed back may
// be delivered by another process, and never seen here again.
const maxHandedBack = 100_000

// enter takes one of tenant's slots, or counts a hand-back of webhookID.
func (g *tenantGate) enter(tenant, webhookID string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight[tenant] < g.limit {
		g.inFlight[tenant]++
		return true
	}
	if len(g.handedBack) >= maxHandedBack {
		clear(g.handedBack) // at worst some callbacks lose attempts
	}
	g.handedBack[webhookID]++
	return false
}

func (g *tenantGate) leave(tenant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight[tenant]--; g.inFlight[tenant] <= 0 {
		delete(g.inFlight, tenant)
	}
}

// attempt is the delivery attempt a callback's delivery count stands for,
// less the times this process handed it back.
func (g *tenantGate) attempt(cb *callbacks.Callback) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(cb.Attempt-g.handedBack[cb.WebhookID], 1)
}

// forget drops what the gate knows of a finished callback.
func (g *tenantGate) forget(webhookID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.handedBack, webhookID)
}

// handBackDelay is how long a callback whose tenant's share is busy waits
// before it is offered again.
const handBackDelay = 500 * time.Millisecond

// Run delivers callbacks until ctx ends, then waits for the deliveries in
// flight (each bounded by Timeout) and returns nil.
func (d *Deliverer) Run(ctx context.Context) error {
	slots := make(chan struct{}, d.cfg.Concurrency)
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	for ctx.Err() == nil {
		// Past AckWait an unfinished callback goes to another process.
		err := d.cfg.Source.ConsumeCallbacks(ctx, d.cfg.MaxPending, d.cfg.Timeout+15*time.Second, func(cb *callbacks.Callback) {
			if !d.tenants.enter(cb.Tenant, cb.WebhookID) {
				// Its tenant has its share in flight: not this tenant's
				// turn, and not an attempt.
				d.settle(cb, cb.Retry(handBackDelay))
				return
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				d.tenants.leave(cb.Tenant)
				d.settle(cb, cb.Retry(0))
				return
			}
			inFlight.Go(func() {
				defer func() { <-slots }()
				defer d.tenants.leave(cb.Tenant)
				d.deliver(context.WithoutCancel(ctx), cb)
			})
		})
		if err != nil {
			d.log.WarnContext(ctx, "pull callbacks", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// deliver makes one attempt at a callback and decides what follows.
func (d *Deliverer) deliver(ctx context.Context, cb *callbacks.Callback) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	attempt := d.tenants.attempt(cb)
	log := d.log.With("webhook_id", cb.WebhookID, "attempt", attempt)
	err := d.cfg.Sender.Send(ctx, cb.Tenant, cb.URL, cb.WebhookID, cb.Body, d.cfg.Now())
	if err == nil {
		log.Debug("callback delivered")
		d.tenants.forget(cb.WebhookID)
		d.settle(cb, cb.Done())
		return
	}
	var sendErr *callback.Error
	retryable := errors.As(err, &sendErr) && sendErr.Retryable
	switch {
	case !retryable:
		log.Warn("callback refused for good; dropped", "err", err)
		d.tenants.forget(cb.WebhookID)
		d.settle(cb, cb.Drop())
	case attempt >= d.cfg.Retry.MaxAttempts:
		log.Warn("callback failed on its last attempt; dropped", "err", err, "max_attempts", d.cfg.Retry.MaxAttempts)
		d.tenants.forget(cb.WebhookID)
		d.settle(cb, cb.Drop())
	default:
		delay := d.cfg.Retry.Delay(attempt, 0) // a receiver bids no Retry-After
		log.Info("callback failed; retrying", "err", err, "delay", delay)
		d.settle(cb, cb.Retry(delay))
	}
}

// settle logs a failure to acknowledge a callback: it then comes back
// after its ack wait, and is tried again.
func (d *Deliverer) settle(cb *callbacks.Callback, err error) {
	if err != nil {
		d.log.Error("settle callback; it will be delivered again", "webhook_id", cb.WebhookID, "err", err)
	}
}
