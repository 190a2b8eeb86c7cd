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
	"github.com/sluicehq/sluice/buffer/arrivals"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/metrics"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/internal/gate"
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
	// outcomeRoom: the consumer's cap has room for jobs recording their
	// outcome (see consumerCap), since jobs first did while this process
	// dispatched alone.
	outcomeRoom atomic.Bool

	announceMu sync.Mutex  // one announcement at a time
	announced  atomic.Bool // this process's report is in the shared state
	attrs      metrics.Function
	cold       pacing.ColdStarts
	recent     circuit.Outcomes // for the circuit breaker
	counts     tally
	tel        *metrics.Instruments
	gauges     metrics.Gauges
	pool       *poolLoop   // nil outside a pool, unless fair
	lanes      []*laneUnit // the default lane first

	lanesMu    sync.Mutex    // guards the lanes' activity (see laneUnit) and toStart
	toStart    []*laneUnit   // activated lanes whose pullers run is to start
	laneStarts chan struct{} // toStart grew (capacity 1)
	rechecks   []recheck     // lanes retired, to be read again; owned by the pace loop

	pacing atomic.Pointer[shared.PacingState] // the shared window as last seen

	wake     chan struct{}      // work came (capacity 1): see nudge
	resting  atomic.Bool        // the pace loop rests: see rest
	arrivals *arrivals.Arrivals // tells of jobs stored while it rests
	pulls    *gate.Gate         // shut while it rests
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

	// pull pulls u's jobs until laneCtx ends (u retires, or ctx ends),
	// while the function does not rest.
	pull := func(u *laneUnit, laneCtx context.Context) {
		for laneCtx.Err() == nil {
			gateCtx := l.pulls.Wait() // ends when the function rests
			if gateCtx == nil || laneCtx.Err() != nil {
				break // (a lane retired as it rested waits until it wakes)
			}
			pullCtx, cancel := context.WithCancel(gateCtx)
			stop := context.AfterFunc(laneCtx, cancel)
			err := u.cons.Consume(pullCtx, l.fn.Concurrency, func(dv *buffer.Delivery) {
				l.nudge()
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
					// The slot is free once the function has answered:
					// recording the outcome (its write, the message's
					// acknowledgement, its key's next job) goes on beside
					// the next job's invocation (see consumerCap).
					release := sync.OnceFunc(func() { <-slots })
					defer release()
					l.handle(ctx, invokeCtx, dv, release)
				})
			})
			if err != nil && pullCtx.Err() == nil {
				l.log.WarnContext(ctx, "pull jobs", "consumer", u.name, "err", err)
				sleep(pullCtx, time.Second)
			}
			stop()
			cancel()
		}
	}
	if !l.fair() {
		pull(l.lanes[0], ctx) // on this goroutine: one fewer for each function
	} else {
		l.runLanes(ctx, pull)
	}
	l.drain(&inFlight, cutOff)
}

// runLanes runs a puller for each active lane of a fair function, from
// its activation to its retirement (see laneUnit), until ctx ends and they
// have all returned.
func (l *functionLoop) runLanes(ctx context.Context, pull func(u *laneUnit, laneCtx context.Context)) {
	var pullers sync.WaitGroup
	defer pullers.Wait()
	defer func() {
		// Those started once ctx ended end at once.
		l.lanesMu.Lock()
		defer l.lanesMu.Unlock()
		for _, u := range l.lanes {
			if u.stop != nil {
				u.stop()
				u.stop = nil
			}
		}
	}()
	for {
		l.lanesMu.Lock()
		for _, u := range l.toStart {
			if u.active && u.stop == nil {
				laneCtx, stop := context.WithCancel(ctx)
				u.stop = stop
				pullers.Go(func() { pull(u, laneCtx) })
			}
		}
		l.toStart = nil
		l.lanesMu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-l.laneStarts:
		}
	}
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
// makes the consumer's server-enforced cap follow it, while the function
// has work anywhere. Once it has had none for restAfter rounds it rests:
// no JetStream request, no write, until a job for it is stored or
// delivered (see rest).
func (l *functionLoop) pace(ctx context.Context) {
	l.findWaitingLanes(ctx) // a fair function's: once, then their watches tell
	if !l.rest(ctx) {       // at once: most functions have no work at start
		return
	}
	tick := time.NewTicker(l.cfg.PaceEvery)
	defer tick.Stop()
	quiet := 0 // rounds in a row that found no work
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		busy := l.paceRound(ctx, n)
		l.retireQuiet(ctx) // lanes without work, while others may have some
		if l.recheckRetired(ctx) {
			busy = true // no rest while a lane retired just now is to be read again
		}
		if busy {
			quiet = 0
			continue
		}
		if quiet++; quiet < restAfter {
			continue
		}
		if !l.rest(ctx) {
			return
		}
		tick.Reset(l.cfg.PaceEvery)
		quiet, n = 0, 0
		l.paceRound(ctx, n) // at once: the window may have changed while at rest (idle reap)
	}
}

// restAfter is how many rounds in a row without work anywhere a function's
// pace loop waits before it rests: a second, so that a function whose jobs
// come one at a time does not rest between them.
const restAfter = 10

// rest waits until a job for the function is stored (by any process:
// see [arrivals.Arrivals]), after one last round that finds it idle and
// leaves nothing unwritten: this process's report gone from the shared
// state and every finished job's message removed. Meanwhile it pulls
// nothing (see gate.Gate). It returns false if ctx ended. The watch begins
// and the wake is cleared before that round, so a job stored during it or
// after it wakes the loop: none is missed. A pooled or fair function's
// consumers may have a cap of 0 while idle; its pool's leader, woken with
// it, raises them.
func (l *functionLoop) rest(ctx context.Context) bool {
	defer l.pulls.Open() // on waking, or finding work
	select {
	case <-l.wake:
	default:
	}
	stopWatch, err := l.arrivals.Watch(ctx, l.fn.Name, l.nudge)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("watch for jobs", "err", err)
		}
		return true
	}
	defer stopWatch()
	if l.paceRound(ctx, 0) {
		return true // work came meanwhile: no rest
	}
	if err := l.removeFinished(ctx, true); err != nil {
		if ctx.Err() == nil {
			l.log.Warn("remove finished jobs", "err", err)
		}
		return true
	}
	if err := l.withdraw(ctx); err != nil {
		if ctx.Err() == nil {
			l.log.Warn("withdraw this process's report", "err", err)
		}
		return true
	}
	// Until the first round after the wake, starts keep to the window
	// the platform gives a function without environments at most: an idle
	// spell may have reaped the ones it had.
	l.inv.SetRoom(min(int(l.pacing.Load().Window), l.fn.Pacing.Initial))
	l.gauges.OldestAge.Store(0)
	// No pull either: a job delivered as they end is handed back, and
	// its arrival, which the watch has seen, ends the rest.
	l.pulls.Shut()
	l.resting.Store(true)
	defer l.resting.Store(false)
	// A job's message reaches the watch as it is routed, and the load as
	// JetStream has stored it, a moment later: one routed just before the
	// watch began may have been stored just after that round read the
	// load. A second reading, a moment on, sees it (see retireGrace).
	grace := time.NewTimer(retireGrace)
	defer grace.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-l.wake:
			return true
		case <-grace.C:
			if load, err := l.load(ctx); err != nil || load.Backlog > 0 || load.InFlight > 0 {
				return true
			}
		}
	}
}

// nudge wakes the pace loop, and its pool's, if they rest: a job was
// stored or delivered. It never blocks.
func (l *functionLoop) nudge() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
	if l.pool != nil {
		l.pool.nudge()
	}
}

// paceRound reads the function's load, moves the shared window for it and
// applies it. It reports whether the function has work anywhere, or this
// round could not finish its business (so the loop must not rest).
func (l *functionLoop) paceRound(ctx context.Context, n int) (busy bool) {
	load, units, loads, err := l.loadLanes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("read load", "err", err)
		}
		return true
	}
	l.countQuiet(units, loads)
	now := l.cfg.Now()
	cold, warm := l.cold.Take()
	counts := l.counts.take()
	mine := l.report(now)
	p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool {
		p.ColdStarts += cold
		p.WarmStarts += warm
		p.Counts.Add(counts)
		reported := pacing.PutReport(p, l.id, mine, now)
		return pacing.Step(p, &l.fn.Pacing, l.fn.Concurrency, load, now) || cold+warm > 0 || counts != shared.Counts{} || reported
	})
	if err != nil {
		l.cold.GiveBack(cold, warm)
		l.counts.giveBack(counts)
		if ctx.Err() == nil {
			l.log.Warn("move window", "err", err)
		}
		return true
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
	if err := l.removeFinished(ctx, false); err != nil && ctx.Err() == nil {
		l.log.Warn("remove finished jobs", "err", err)
	}
	l.gauges.Lanes.Store(int64(len(units)))
	l.gauges.Backlog.Store(int64(load.Backlog))
	l.gauges.InFlight.Store(int64(load.InFlight))
	l.gauges.Window.Store(int64(p.Window))
	l.gauges.SetShared(p)
	if n%10 == 0 {
		if since, err := l.oldest(ctx); err == nil {
			l.gauges.OldestAge.Store(int64(max(0, now.Sub(since))))
		} else if errors.Is(err, buffer.ErrNotFound) {
			l.gauges.OldestAge.Store(0)
		}
	}
	// Starts in the last second do not keep it busy: at rest it starts
	// none, and it takes its report back (see withdraw).
	return load.Backlog > 0 || load.InFlight > 0 || mine.Invoking > 0 || mine.Held > 0
}

// withdraw takes this process's report out of the shared state, if it is
// there: a process at rest starts nothing, and it announces itself again
// before its next start.
func (l *functionLoop) withdraw(ctx context.Context) error {
	if !l.announced.Load() {
		return nil
	}
	l.announceMu.Lock()
	defer l.announceMu.Unlock()
	now := l.cfg.Now()
	p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool {
		return pacing.PutReport(p, l.id, shared.ProcLoad{At: now}, now)
	})
	if err != nil {
		return err
	}
	l.storePacing(&p)
	l.announced.Store(false)
	return nil
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
