package dispatch

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/arrivals"
	"github.com/sluicehq/sluice/dispatch/share"
)

// DefaultPriorityAging is how long a fair function's job waits before it
// counts one priority higher, when Function.PriorityAging is zero.
const DefaultPriorityAging = time.Minute

// laneUnit is one consumer of a function's jobs: the function's only one,
// or one lane's of a fair function.
//
// A fair function's lane other than the default one exists, in each
// process, while it has work: it is active (pulled from by a goroutine of
// its own, and read each round by the pace loop and the pool's leader)
// from a job's arrival in it until it has had none for restAfter rounds;
// then it is retired, and a watch for its next job's arrival (see
// [arrivals.Arrivals]) is all it holds. Its consumer, pulled from by none,
// is left to the server to remove (see ConsumerIdleLife). So what a fair
// function costs follows its busy tenants, not its configured ones.
type laneUnit struct {
	name    string
	subject string // its jobs' messages
	cons    *buffer.Consumer
	lane    *buffer.Lane // nil: all the function's jobs, in the order they came
	weight  int          // its tenant's
	// waitingSince is when its oldest waiting job was stored (Unix ns; 0
	// for none or unknown), for aging. Owned by the pool's leader.
	waitingSince atomic.Int64

	// Guarded by the function loop's lanesMu.
	active  bool               // pulled from and read in this process
	stop    context.CancelFunc // ends its puller; nil while it has none
	unwatch func()             // ends the watch for its next job while retired
	arrived bool               // a job came since its retirement began
	quiet   int                // rounds in a row its load showed no work

	// capZero: this process, leading the pool, saw or made its cap 0 with
	// nothing in flight, and has not raised it since, so that while
	// retired it needs no reading to be counted. Owned by the pool's loop.
	capZero bool
}

// fair reports whether the function has lanes of its own.
func (l *functionLoop) fair() bool { return l.lanes[0].lane != nil }

// activeLanes are the lanes pulled from and read in this process, the
// default lane first.
func (l *functionLoop) activeLanes() []*laneUnit {
	return l.lanesWhere(func(u *laneUnit) bool { return u.active })
}

// roundLanes are the lanes the pool's leader reads and caps this round:
// the active ones, and those retired whose cap may not be 0 (the leader
// lowers it), the default lane first. Only the pool's loop calls it.
func (l *functionLoop) roundLanes() []*laneUnit {
	return l.lanesWhere(func(u *laneUnit) bool { return u.active || !u.capZero })
}

// lanesWhere are a fair function's lanes for which keep holds, in order,
// read under lanesMu; a function that is not fair has its one.
func (l *functionLoop) lanesWhere(keep func(*laneUnit) bool) []*laneUnit {
	if !l.fair() {
		return l.lanes
	}
	l.lanesMu.Lock()
	defer l.lanesMu.Unlock()
	out := make([]*laneUnit, 0, 4)
	for _, u := range l.lanes {
		if keep(u) {
			out = append(out, u)
		}
	}
	return out
}

// activateLocked makes u active, if it is not, and has run start its
// puller; lanesMu is held.
func (l *functionLoop) activateLocked(u *laneUnit) {
	if u.unwatch != nil {
		u.unwatch()
		u.unwatch = nil
	}
	if u.active {
		return
	}
	u.active, u.quiet = true, 0
	l.toStart = append(l.toStart, u)
	select {
	case l.laneStarts <- struct{}{}:
	default:
	}
}

// arrive is told of a job stored in u, by any process: u becomes active
// (if retired), and the function's and its pool's loops wake.
func (l *functionLoop) arrive(u *laneUnit) {
	l.lanesMu.Lock()
	u.arrived = true
	l.activateLocked(u)
	l.lanesMu.Unlock()
	l.nudge()
}

// countQuiet counts, for each of units (active lanes), the rounds in a row
// whose loads showed no work.
func (l *functionLoop) countQuiet(units []*laneUnit, loads []buffer.Load) {
	if !l.fair() {
		return
	}
	l.lanesMu.Lock()
	defer l.lanesMu.Unlock()
	for i, u := range units {
		if loads[i].Backlog == 0 && loads[i].InFlight == 0 {
			u.quiet++
		} else {
			u.quiet = 0
		}
	}
}

// retireQuiet retires the lanes (the default one excepted) that have had
// no work for restAfter rounds. For each, the watch for its next job
// begins first; then it is read again, and retired only if it still has
// no work and no job came meanwhile. So a job stored before the watch
// began is seen by that reading, and one stored after it is told of by
// the watch, which activates the lane again: none is missed. Its finished
// jobs are removed before it retires, as its consumer is left to go.
func (l *functionLoop) retireQuiet(ctx context.Context) {
	if !l.fair() {
		return
	}
	var quiet []*laneUnit
	l.lanesMu.Lock()
	for _, u := range l.lanes[1:] {
		if u.active && u.quiet >= restAfter {
			u.arrived = false
			quiet = append(quiet, u)
		}
	}
	l.lanesMu.Unlock()
	if len(quiet) == 0 {
		return
	}
	cancels, err := l.arrivals.WatchSubjects(ctx, l.watches(quiet))
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("watch for jobs in quiet lanes", "err", err)
		}
		l.lanesMu.Lock()
		for _, u := range quiet {
			u.quiet = 0 // try again in restAfter rounds
		}
		l.lanesMu.Unlock()
		return
	}
	for i, u := range quiet {
		load, err := u.cons.Load(ctx)
		idle := err == nil && load.Backlog == 0 && load.InFlight == 0
		if idle {
			err = u.cons.RemoveFinished(ctx, true)
			idle = err == nil
		}
		if err != nil && ctx.Err() == nil {
			l.log.Warn("retire lane", "consumer", u.name, "err", err)
		}
		l.lanesMu.Lock()
		if !idle || u.arrived || !u.active {
			u.quiet = 0
			l.lanesMu.Unlock()
			cancels[i]()
			continue
		}
		u.active, u.unwatch = false, cancels[i]
		if u.stop != nil {
			u.stop()
			u.stop = nil
		}
		l.lanesMu.Unlock()
		l.rechecks = append(l.rechecks, recheck{u: u, at: time.Now()})
	}
}

// retireGrace is how long after its retirement a lane is read once more.
// A job's message reaches the watches as it is routed, and the stream's
// count of it as JetStream has stored it, a moment later: one routed just
// before the watch began and stored just after the lane was read could be
// missed by both. It is not missed by a reading this much later.
const retireGrace = 100 * time.Millisecond

// recheck is a lane retired at a time, to be read again.
type recheck struct {
	u  *laneUnit
	at time.Time
}

// recheckRetired reads again each lane retired retireGrace ago or more (see
// retireGrace), and activates it if it has work after all. It reports
// whether lanes retired since are still to be read: until they are, the
// function must not rest. Only the pace loop calls it.
func (l *functionLoop) recheckRetired(ctx context.Context) (pending bool) {
	keep := l.rechecks[:0]
	for _, r := range l.rechecks {
		if time.Since(r.at) < retireGrace {
			keep = append(keep, r)
			continue
		}
		load, err := r.u.cons.Load(ctx)
		if err != nil && ctx.Err() != nil {
			keep = append(keep, r)
			continue
		}
		if err != nil || load.Backlog > 0 || load.InFlight > 0 {
			l.lanesMu.Lock()
			l.activateLocked(r.u)
			l.lanesMu.Unlock()
			l.nudge()
		}
	}
	clear(l.rechecks[len(keep):])
	l.rechecks = keep
	return len(l.rechecks) > 0
}

// watches are the watches for the next job in each of units.
func (l *functionLoop) watches(units []*laneUnit) []arrivals.Subject {
	out := make([]arrivals.Subject, len(units))
	for i, u := range units {
		out[i] = arrivals.Subject{Subject: u.subject, Notify: func() { l.arrive(u) }}
	}
	return out
}

// findWaitingLanes begins the watches of a fair function's lanes (every
// one but the default, at start none is active) and then activates those
// that hold work already: stored, or left in flight, while no process
// watched. It asks which lanes hold jobs with one request (reading each
// lane once should that fail); a lane it cannot read, or cannot watch, it
// activates, to be retired in the ordinary way.
func (l *functionLoop) findWaitingLanes(ctx context.Context) {
	if !l.fair() {
		return
	}
	retired := l.lanes[1:]
	cancels, err := l.arrivals.WatchSubjects(ctx, l.watches(retired))
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("watch for jobs in lanes", "err", err)
		}
		l.lanesMu.Lock()
		for _, u := range retired {
			l.activateLocked(u)
		}
		l.lanesMu.Unlock()
		return
	}
	l.lanesMu.Lock()
	for i, u := range retired {
		if !u.active { // else its watch fired already
			u.unwatch = cancels[i]
		}
	}
	l.lanesMu.Unlock()
	// One request finds the lanes that hold jobs; should it fail, each
	// lane is read.
	holding, holdingErr := l.src.LanesHolding(ctx, l.fn.Name)
	found := false
	for _, u := range retired {
		if holdingErr == nil {
			if holding[u.lane.Key()] {
				l.lanesMu.Lock()
				l.activateLocked(u)
				l.lanesMu.Unlock()
				found = true
			}
			continue
		}
		load, err := u.cons.Load(ctx)
		if err != nil && ctx.Err() != nil {
			return
		}
		if err != nil || load.Backlog > 0 || load.InFlight > 0 {
			l.lanesMu.Lock()
			l.activateLocked(u)
			l.lanesMu.Unlock()
			found = true
		}
	}
	if found {
		l.nudge()
	}
}

// splitLanes divides the function's share g between its consumers: all of
// it to the only one of a function that is not fair; for a fair one, by
// tenant weight and priority (see [share.Lanes]).
//
// units are the lanes of this round (see roundLanes), the default first,
// and loads theirs.
func (l *functionLoop) splitLanes(g int, units []*laneUnit, loads []buffer.Load, now time.Time) []int {
	if units[0].lane == nil {
		out := make([]int, len(units))
		out[0] = g
		return out
	}
	lanes := make([]share.Lane, len(units))
	for i, u := range units {
		lanes[i] = share.Lane{
			Tenant: u.lane.Tenant, Weight: u.weight, Priority: u.lane.Priority,
			WaitingSince: u.waitingSince.Load(), Want: loads[i].InFlight + loads[i].Backlog,
		}
	}
	aging := l.fn.PriorityAging
	if aging == 0 {
		aging = DefaultPriorityAging
	}
	return share.Lanes(g, lanes, aging, now)
}

// load is the function's load: of all its active lanes.
func (l *functionLoop) load(ctx context.Context) (buffer.Load, error) {
	sum, _, _, err := l.loadLanes(ctx)
	return sum, err
}

// loadLanes is the function's load, and its active lanes' each.
func (l *functionLoop) loadLanes(ctx context.Context) (sum buffer.Load, units []*laneUnit, loads []buffer.Load, err error) {
	units = l.activeLanes()
	loads = make([]buffer.Load, len(units))
	for i, u := range units {
		load, err := u.cons.Load(ctx)
		if err != nil {
			return buffer.Load{}, nil, nil, err
		}
		loads[i] = load
		sum.Backlog += load.Backlog
		sum.InFlight += load.InFlight
		sum.MaxInFlight += capOf(load)
	}
	return sum, units, loads, nil
}

// removeFinished removes the messages of finished jobs, active lane by
// lane (a lane's are removed as it retires): in batches (see
// [buffer.Consumer.RemoveFinished]), or all of them now.
func (l *functionLoop) removeFinished(ctx context.Context, now bool) error {
	var errs []error
	for _, u := range l.activeLanes() {
		errs = append(errs, u.cons.RemoveFinished(ctx, now))
	}
	return errors.Join(errs...)
}

// oldest is when the oldest unfinished job of the function's active lanes
// was stored.
func (l *functionLoop) oldest(ctx context.Context) (time.Time, error) {
	var first time.Time
	for _, u := range l.activeLanes() {
		t, err := u.cons.Oldest(ctx)
		if errors.Is(err, buffer.ErrNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	if first.IsZero() {
		return first, buffer.ErrNotFound
	}
	return first, nil
}
