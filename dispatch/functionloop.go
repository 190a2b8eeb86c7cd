package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/pacing"
)

// functionLoop pulls and invokes one function's jobs, and paces them. Its
// fields are set before run starts and not changed after, but for pacing.
type functionLoop struct {
	fn      Function
	cons    *buffer.Consumer
	src     Source
	cfg     *Config
	log     *slog.Logger
	limiter *rate.Limiter       // this process's share of the start rate; Inf for none
	id      string              // this process, in the shared pacing state
	inv     *pacing.Invocations // in flight here, and the evidence throttles are judged by
	aside   atomic.Int64        // jobs delivered and not at the platform: held back after a throttle, or recording their outcome

	announceMu sync.Mutex  // one announcement at a time
	announced  atomic.Bool // this process's report is in the shared state
	attrs      loopAttrs
	cold       coldStarts
	recent     circuit.Outcomes // for the circuit breaker
	counts     tally
	tel        *telemetry
	gauges     gauges
	pool       *poolLoop // nil outside a pool, unless fair
	lanes      []*laneUnit

	pacing atomic.Pointer[buffer.PacingState] // the shared window as last seen
}

// run pulls the function's jobs, from each of its lanes, and invokes
// them, at most Concurrency at once in this process, until ctx ends; then
// it drains.
func (l *functionLoop) run(ctx context.Context) {
	slots := make(chan struct{}, l.fn.Concurrency)
	// Invocations outlive ctx by up to DrainTimeout; this cancels them.
	invokeCtx, cutOff := context.WithCancel(context.WithoutCancel(ctx))
	defer cutOff()
	var inFlight sync.WaitGroup

	var pullers sync.WaitGroup
	for _, u := range l.lanes {
		pullers.Go(func() {
			for ctx.Err() == nil {
				err := u.cons.Consume(ctx, l.fn.Concurrency, func(dv *buffer.Delivery) {
					// The window (MaxAckPending) keeps deliveries within the
					// slots; this only guards the configured limit in this
					// process.
					select {
					case slots <- struct{}{}:
					case <-ctx.Done():
						l.settle(dv.Release, dv)
						return
					}
					inFlight.Go(func() {
						defer func() { <-slots }()
						l.handle(ctx, invokeCtx, dv)
					})
				})
				if err != nil {
					l.log.WarnContext(ctx, "pull jobs", "consumer", u.name, "err", err)
					sleep(ctx, time.Second)
				}
			}
		})
	}
	pullers.Wait()
	l.drain(&inFlight, cutOff)
}

// drain waits for in-flight invocations, cutting them off after
// DrainTimeout.
func (l *functionLoop) drain(inFlight *sync.WaitGroup, cutOff context.CancelFunc) {
	done := make(chan struct{})
	go func() { inFlight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(l.cfg.DrainTimeout):
		l.log.Warn("drain timeout: handing back jobs still running", "drain_timeout", l.cfg.DrainTimeout)
		cutOff()
		<-done
	}
}

// pace moves the shared window every PaceEvery for the load it sees, and
// makes the consumer's server-enforced cap follow it. The cached cap is
// forgotten now and then, since another process may have written it.
func (l *functionLoop) pace(ctx context.Context) {
	tick := time.NewTicker(l.cfg.PaceEvery)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n%10 == 0 && l.pool == nil {
			l.cons.RefreshMaxInFlight()
		}
		load, err := l.load(ctx)
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("read load", "err", err)
			}
			continue
		}
		now := l.cfg.Now()
		cold, warm := l.cold.take()
		counts := l.counts.take()
		mine := l.report(now)
		p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *buffer.PacingState) bool {
			p.ColdStarts += cold
			p.WarmStarts += warm
			p.Counts.Add(counts)
			reported := pacing.PutReport(p, l.id, mine, now)
			return pacing.Step(p, &l.fn.Pacing, l.fn.Concurrency, load, now) || cold+warm > 0 || counts != buffer.Counts{} || reported
		})
		if err != nil {
			l.cold.giveBack(cold, warm)
			l.counts.giveBack(counts)
			if ctx.Err() == nil {
				l.log.Warn("move window", "err", err)
			}
			continue
		}
		l.storePacing(&p)
		if mine.Idle() {
			l.announced.Store(false) // the report is gone: announce again before the next start
		}
		if l.pool == nil { // a pool's leader caps pooled functions
			if err := l.cons.SetMaxInFlight(ctx, l.consumerCap(&p, now)); err != nil && ctx.Err() == nil {
				l.log.Warn("apply window", "err", err)
			}
		}
		if err := l.removeFinished(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("remove finished jobs", "err", err)
		}
		l.gauges.backlog.Store(int64(load.Backlog))
		l.gauges.inFlight.Store(int64(load.InFlight))
		l.gauges.window.Store(int64(p.Window))
		l.gauges.setLearned(p)
		if n%10 == 0 {
			if since, err := l.oldest(ctx); err == nil {
				l.gauges.oldestAge.Store(int64(max(0, now.Sub(since))))
			} else if errors.Is(err, buffer.ErrNotFound) {
				l.gauges.oldestAge.Store(0)
			}
		}
	}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
