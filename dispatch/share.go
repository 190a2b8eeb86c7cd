package dispatch

import (
	"context"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/pacing"
)

// report is this process's share of the function's dispatch now.
func (l *functionLoop) report(now time.Time) shared.ProcLoad {
	inFlight, starts := l.inv.Report(now)
	return shared.ProcLoad{Invoking: inFlight, Starts: starts, Held: int(l.aside.Load()), At: now}
}

// announce writes this process's report into the shared state before its
// first start after being idle, so that the other processes count it (in
// the window, and in their share of the rate) from their next step on,
// and this one counts them from now.
func (l *functionLoop) announce(ctx context.Context) {
	if l.announced.Load() {
		return
	}
	l.announceMu.Lock()
	defer l.announceMu.Unlock()
	if l.announced.Load() {
		return
	}
	now := l.cfg.Now()
	mine := l.report(now)
	mine.Held = max(mine.Held, 1) // the job about to start
	p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool {
		return pacing.PutReport(p, l.id, mine, now)
	})
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("announce this process", "err", err)
		}
		return // the next pace step reports it
	}
	l.storePacing(&p)
	l.announced.Store(true)
}

// storePacing keeps the shared state as last seen, and makes this
// process's room and start rate follow it: the window (jobs held after a
// throttle wait for room in it, so they cannot overrun it), and the start
// rate (configured or learned) divided among the processes dispatching.
// Across processes the consumer's cap keeps the window, give or take the
// jobs aside; a room less what the others last reported would be
// exact only as long as their reports are fresh, and a stale one stalls.
func (l *functionLoop) storePacing(p *shared.PacingState) {
	l.pacing.Store(p)
	_, procs := p.Others(l.id, l.cfg.Now().Add(-pacing.ReportFresh))
	l.inv.SetRoom(int(p.Window))
	limit, burst := rate.Inf, 1
	if r := p.StartRate(l.fn.RatePerSecond); r > 0 {
		share := float64(procs + 1)
		limit = rate.Limit(r / share)
		if r == l.fn.RatePerSecond {
			// A token bucket lets its burst through on top of its rate in
			// any one second: the processes' bursts together come off the
			// rate, so that no second sees more starts than configured.
			burst = max(1, int(float64(l.fn.RateBurst)/share))
			limit = rate.Limit(max(r/share/2, (r-float64(burst)*share)/share))
		}
	}
	if l.limiter.Limit() != limit || l.limiter.Burst() != burst {
		l.limiter.SetLimit(limit)
		l.limiter.SetBurst(burst)
	}
}

// consumerCap is the server-enforced cap on the function's jobs delivered
// and not finished: the window, never above the configured concurrency.
// A process dispatching alone makes room besides for its jobs aside (held
// back after a throttle, or recording their outcome), which keep their
// places without taking the window's; they are rounded up to an eighth of
// the window, so that the consumer is not rewritten for every one.
//
// Once jobs have recorded outcomes while it dispatched alone, it also
// takes an eighth of the window more, beyond the configured concurrency:
// a job recording its outcome (a write, then the acknowledgement) holds
// its message after the function answered, and without that room the
// next job would be delivered only once the acknowledgement reached the
// server, every turn in the window a write and two round trips longer
// than its invocation. Jobs beyond the window wait in the process for a
// place (the invocations' gate keeps the platform within the window). The
// room is kept until another process shows, so that the consumer is not
// rewritten whenever none happens to be recording.
//
// With other processes about (any report in the last pacing.ReportStale)
// it does neither: they would learn of those jobs a report late, and
// together put more than the window at the platform.
func (l *functionLoop) consumerCap(p *shared.PacingState, now time.Time) int {
	window := int(p.Window)
	if _, others := p.Others(l.id, now.Add(-pacing.ReportStale)); others > 0 {
		l.outcomeRoom.Store(false)
		return max(1, min(l.fn.Concurrency, window))
	}
	step := max(1, window/8)
	aside := int(l.aside.Load())
	if aside > 0 {
		l.outcomeRoom.Store(true)
	}
	if aside%step != 0 {
		aside += step - aside%step
	}
	capped := max(1, min(l.fn.Concurrency, window+aside))
	if l.outcomeRoom.Load() {
		return capped + step
	}
	return capped
}
