package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/metrics"
	"github.com/sluicehq/sluice/dispatch/share"
)

// Pool is a concurrency limit shared by several functions: an account's
// regional limit, say, or a database's connections. Functions join it by
// naming it in [Function.Pool].
//
// Sharing is work-conserving: a function gets at least its Reserved share
// while it has work, and capacity its owner does not use is lent to the
// busy ones and taken back as soon as the owner has a backlog. The pool's
// total in flight never exceeds Concurrency, across every gateway process,
// at any instant (see poolLoop for how).
type Pool struct {
	// Name names the pool. Required.
	Name string
	// Concurrency is the most invocations in flight at once across the
	// pool's functions and every gateway process. Required, at least the
	// number of its functions and the sum of their reserved shares.
	Concurrency int
}

// Pool timing. The lease must outlast a few missed ticks, and a leader that
// lost it stops writing caps at its next tick.
const (
	poolLease = 3 * time.Second
	// After a throttle the pool's limit shrinks at most once per
	// poolShrinkEvery and grows back once none came for poolRecoverAfter,
	// by a twentieth of its concurrency per second.
	poolShrinkEvery  = time.Second
	poolRecoverAfter = 5 * time.Second
)

// poolLoop shares one pool between its functions. In each process one runs
// per pool; the one holding the pool's lease (the leader) sets the caps.
//
// The caps are the functions' consumer MaxAckPending, which the NATS server
// enforces across processes; JetStream has no cap across consumers, so the
// leader keeps the sum within the pool by this rule: for each function,
// max(cap, jobs delivered and unfinished) counts against the pool, and that
// count only falls while the leader does not raise a cap (the server
// delivers nothing above a cap, and a lowered cap takes nothing back). The
// leader first lowers the caps of functions that must give slots back, then
// raises others only by what the counts leave free, read after the
// lowering; a slot lent out comes back when the borrower's invocation ends.
// The leader is the only process that writes a pooled consumer's cap: other
// processes bind to the consumer as it is, a new one is created paused.
//
// A fair function's lanes that are retired in the leader's process (see
// laneUnit) are left out of its rounds once it has seen or made their cap
// 0 with nothing in flight: they count for nothing, and stay so, as only
// the leader raises a cap, which it does for a lane only once a job's
// arrival has made it active again. A process taking the lead reads every
// lane once, as the last leader may have left any cap raised.
type poolLoop struct {
	pool    Pool
	members []*functionLoop
	reserve []int // by member
	src     Source
	cfg     *Config
	log     *slog.Logger
	id      string // this process, as the lease names it
	attrs   metric.MeasurementOption
	// implicit: the pool of one fair function outside any pool, whose
	// limit is its window.
	implicit bool
	round    int // rounds run; owned by run's goroutine

	seen atomic.Pointer[shared.Pool] // the pool's state as last read or written
	wake chan struct{}               // a member's work came (capacity 1): see nudge
}

// processID names this process in pool leases.
func processID() string {
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // never fails
	return hex.EncodeToString(b)
}

func newPoolLoop(p Pool, members []*functionLoop, cfg *Config, log *slog.Logger, id string) *poolLoop {
	pl := &poolLoop{
		pool: p, members: members, src: cfg.Source, cfg: cfg, id: id,
		log:   log.With("pool", p.Name),
		attrs: metric.WithAttributeSet(attribute.NewSet(metrics.AttrPool.String(p.Name))),
	}
	for _, m := range members {
		pl.reserve = append(pl.reserve, m.fn.Reserved)
		m.pool = pl
	}
	pl.seen.Store(&shared.Pool{})
	pl.wake = make(chan struct{}, 1)
	return pl
}

// run shares the pool every PaceEvery while any of its members has work,
// and rests while every member's pace loop does: its members' jobs wake
// it (see nudge).
func (pl *poolLoop) run(ctx context.Context) {
	tick := time.NewTicker(pl.cfg.PaceEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pl.stepOrWarn(ctx)
		if !pl.membersResting() {
			continue
		}
		tick.Stop()
		if !pl.rest(ctx) {
			return
		}
		tick.Reset(pl.cfg.PaceEvery)
		pl.stepOrWarn(ctx) // at once: a member's job may wait for a cap
	}
}

func (pl *poolLoop) stepOrWarn(ctx context.Context) {
	if err := pl.step(ctx); err != nil && ctx.Err() == nil {
		pl.log.Warn("share pool", "err", err)
	}
}

// rest waits for a member's work, after one more round that finds every
// member resting, so that the caps are those of an idle pool. It returns
// false if ctx ended. The wake is cleared before that round: a member
// woken during or after it wakes the pool.
func (pl *poolLoop) rest(ctx context.Context) bool {
	select {
	case <-pl.wake:
	default:
	}
	pl.stepOrWarn(ctx)
	if !pl.membersResting() {
		return true
	}
	select {
	case <-ctx.Done():
		return false
	case <-pl.wake:
		return true
	}
}

// membersResting says whether every member's pace loop rests (a paused
// member's does not run).
func (pl *poolLoop) membersResting() bool {
	for _, m := range pl.members {
		if !m.resting.Load() && !m.fn.Paused {
			return false
		}
	}
	return true
}

// nudge wakes the pool's loop if it rests. It never blocks.
func (pl *poolLoop) nudge() {
	select {
	case pl.wake <- struct{}{}:
	default:
	}
}

// takeLead prepares this process's first round as the pool's leader: the
// caps of retired lanes are as the last leader left them, to be read (and
// lowered) once; a lane with no consumer has none (one made from now on
// starts paused).
func (pl *poolLoop) takeLead(ctx context.Context) {
	for _, m := range pl.members {
		exists, err := pl.src.LaneConsumers(ctx, m.fn.Name)
		for _, u := range m.lanes {
			u.capZero = err == nil && u.lane != nil && !exists[u.lane.Key()]
		}
	}
}

// readRound reads the consumers of the pool this round: one per function,
// or one per lane of a fair function that is active or whose cap may not
// be 0 (the others, paused with nothing in flight, count for nothing). It
// returns them and their loads, and each member's lanes and summed load.
func (pl *poolLoop) readRound(ctx context.Context) (units []*laneUnit, loads []buffer.Load, memberUnits [][]*laneUnit, memberLoads []buffer.Load, err error) {
	memberLoads = make([]buffer.Load, len(pl.members))
	memberUnits = make([][]*laneUnit, len(pl.members))
	for i, m := range pl.members {
		memberUnits[i] = m.roundLanes()
		for _, u := range memberUnits[i] {
			load, err := u.cons.Load(ctx)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			units, loads = append(units, u), append(loads, load)
			memberLoads[i].InFlight += load.InFlight
			memberLoads[i].Backlog += load.Backlog
			memberLoads[i].MaxInFlight += capOf(load)
		}
	}
	return units, loads, memberUnits, memberLoads, nil
}

// step runs one round: a follower only reads the pool's state; the leader
// (or a process taking over a lapsed lease) re-divides it and applies the
// caps.
func (pl *poolLoop) step(ctx context.Context) error {
	now := pl.cfg.Now()
	st, err := pl.src.Pool(ctx, pl.pool.Name)
	if err != nil {
		return err
	}
	if st.Leader != pl.id && now.Before(st.LeaseUntil) {
		pl.seen.Store(&st)
		return nil
	}
	if st.Leader != pl.id {
		pl.takeLead(ctx)
	}
	units, loads, memberUnits, memberLoads, err := pl.readRound(ctx)
	if err != nil {
		return err
	}
	pl.refreshWaiting(ctx, units, loads, now)
	shares := make([]share.Claim, len(pl.members))
	implicitLimit := 0
	for i, m := range pl.members {
		window := int(math.Floor(m.pacing.Load().Window))
		if window < 1 {
			window = m.fn.Pacing.Initial
		}
		implicitLimit = max(1, window)
		if now.Before(m.pacing.Load().PausedUntil) || m.fn.Paused {
			window = 1 // throttled or paused: hold one slot, lend the rest
		}
		shares[i] = share.Claim{Reserved: pl.reserve[i], Want: min(window, memberLoads[i].InFlight+memberLoads[i].Backlog)}
	}
	var grants []int
	lost := false
	st, err = pl.src.UpdatePool(ctx, pl.pool.Name, func(p *shared.Pool) bool {
		if p.Leader != pl.id && now.Before(p.LeaseUntil) {
			lost = true
			return false
		}
		lost = false
		p.Leader, p.LeaseUntil = pl.id, now.Add(poolLease)
		if pl.implicit {
			p.Limit = float64(implicitLimit) // one fair function: its window
		} else {
			pl.recover(p, now)
		}
		grants = share.Pool(int(p.Limit), shares)
		p.Members = make(map[string]shared.PoolMember, len(pl.members))
		for i, m := range pl.members {
			p.Members[m.fn.Name] = shared.PoolMember{
				Reserved: pl.reserve[i], Granted: grants[i], Cap: memberLoads[i].MaxInFlight,
				InFlight: memberLoads[i].InFlight, Backlog: memberLoads[i].Backlog,
			}
		}
		p.Updated = now
		return true
	})
	if err != nil {
		return err
	}
	pl.seen.Store(&st)
	if lost {
		return nil
	}
	// Each function's share goes to its lanes.
	var unitGrants []int
	k := 0
	for i, m := range pl.members {
		n := len(memberUnits[i])
		unitGrants = append(unitGrants, m.splitLanes(grants[i], memberUnits[i], loads[k:k+n], now)...)
		k += n
	}
	caps := pl.apply(ctx, int(st.Limit), units, unitGrants, loads)
	for i, u := range units {
		// Only this leader raises a cap: one that is 0 with nothing in
		// flight, and not to be raised (which may fail half done), stays
		// so until it does.
		u.capZero = caps[i] == 0 && unitGrants[i] == 0 && loads[i].InFlight == 0
	}
	// Record the caps now enforced, for the status pages.
	k = 0
	for i, m := range pl.members {
		sum := 0
		for range memberUnits[i] {
			sum += caps[k]
			k++
		}
		mm := st.Members[m.fn.Name]
		mm.Cap = sum
		st.Members[m.fn.Name] = mm
	}
	pl.seen.Store(&st)
	return nil
}

// refreshWaiting reads, every tenth round, since when the oldest job of
// each lane with a backlog has waited, for the aging of priorities.
func (pl *poolLoop) refreshWaiting(ctx context.Context, units []*laneUnit, loads []buffer.Load, now time.Time) {
	pl.round++
	for i, u := range units {
		if u.lane == nil || u.lane.Priority == sluicev1.Priority_HIGH {
			continue
		}
		if loads[i].Backlog == 0 {
			u.waitingSince.Store(0)
			continue
		}
		if pl.round%10 != 1 && u.waitingSince.Load() != 0 {
			continue
		}
		since, err := u.cons.WaitingSince(ctx)
		switch {
		case err == nil:
			u.waitingSince.Store(since.UnixNano())
		case errors.Is(err, buffer.ErrNotFound):
			u.waitingSince.Store(0)
		}
	}
}

// recover moves the limit back toward the configured concurrency after
// throttles (and to it after a change of configuration).
func (pl *poolLoop) recover(p *shared.Pool, now time.Time) {
	conc := float64(pl.pool.Concurrency)
	switch {
	case p.Limit <= 0 || p.Limit > conc:
		p.Limit = conc
	case p.Limit < conc && now.Sub(p.LastThrottle) >= poolRecoverAfter:
		dt := min(max(now.Sub(p.Updated), 0), time.Second)
		p.Limit = min(conc, p.Limit+conc/20*dt.Seconds())
	}
	p.Limit = max(p.Limit, float64(len(pl.members)))
}

// capOf is what a consumer's cap counts for: nothing while paused.
func capOf(l buffer.Load) int {
	if l.Paused {
		return 0
	}
	return l.MaxInFlight
}

// apply moves the consumers' caps toward grants without the pool's count
// (the sum of max(cap, in flight)) ever exceeding limit: lowering first,
// then raising by what is free. loads are as read before grants were
// computed; they can only overstate the count. It returns the caps now set.
func (pl *poolLoop) apply(ctx context.Context, limit int, units []*laneUnit, grants []int, loads []buffer.Load) []int {
	caps := make([]int, len(units))
	for i, u := range units {
		caps[i] = capOf(loads[i])
		if grants[i] < caps[i] {
			if err := u.cons.SetPooledCap(ctx, grants[i], loads[i]); err != nil {
				pl.log.Warn("lower cap", "consumer", u.name, "err", err)
				continue
			}
			caps[i] = grants[i]
		}
	}
	used := 0
	for i := range units {
		used += max(caps[i], loads[i].InFlight)
	}
	free := limit - used
	// Raise those furthest below their share first.
	order := make([]int, 0, len(units))
	for i := range units {
		if grants[i] > caps[i] {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return (caps[a] - grants[a]) - (caps[b] - grants[b])
	})
	for _, i := range order {
		if free <= 0 {
			break
		}
		occupied := max(caps[i], loads[i].InFlight)
		next := min(grants[i], occupied+free)
		if next <= caps[i] || next < 1 {
			continue
		}
		if err := units[i].cons.SetPooledCap(ctx, next, loads[i]); err != nil {
			pl.log.Warn("raise cap", "consumer", units[i].name, "err", err)
			continue // counted as raised: it may have been applied
		}
		free -= max(next, loads[i].InFlight) - occupied
		caps[i] = next
	}
	return caps
}

// throttled shrinks the pool's limit after a member was throttled: to 90%
// of what was in flight (by half at most), once per poolShrinkEvery, never
// below one slot per member.
func (pl *poolLoop) throttled(ctx context.Context, now time.Time) {
	st, err := pl.src.UpdatePool(ctx, pl.pool.Name, func(p *shared.Pool) bool {
		if now.Sub(p.LastThrottle) < poolShrinkEvery {
			return false
		}
		inFlight := 0
		for _, m := range p.Members {
			inFlight += m.InFlight
		}
		if p.Limit <= 0 {
			p.Limit = float64(pl.pool.Concurrency)
		}
		// To 90% of what ran, but by half at most: the view of what ran
		// is the leader's last, and may have caught a pause.
		p.Limit = max(float64(len(pl.members)), math.Floor(min(p.Limit, max(float64(inFlight), p.Limit/2))*0.9))
		p.LastThrottle = now
		return true
	})
	if err != nil {
		pl.log.Error("shrink pool after throttle", "err", err)
		return
	}
	pl.seen.Store(&st)
}

// checkPools checks the pools against the functions that name them.
func checkPools(pools []Pool, fns []Function) error {
	byName := make(map[string]int, len(pools))
	for i, p := range pools {
		if p.Name == "" || p.Concurrency < 1 {
			return fmt.Errorf("dispatch: pool %q needs a name and concurrency ≥ 1", p.Name)
		}
		if _, dup := byName[p.Name]; dup {
			return fmt.Errorf("dispatch: pool %q is named twice", p.Name)
		}
		byName[p.Name] = i
	}
	members := make([]int, len(pools))
	reserved := make([]int, len(pools))
	for _, f := range fns {
		if f.Pool == "" {
			if f.Reserved != 0 {
				return fmt.Errorf("dispatch: function %q reserves a share of no pool", f.Name)
			}
			continue
		}
		i, ok := byName[f.Pool]
		if !ok {
			return fmt.Errorf("dispatch: function %q: no pool %q", f.Name, f.Pool)
		}
		if f.Reserved < 0 || f.Reserved > f.Concurrency {
			return fmt.Errorf("dispatch: function %q: reserved %d is out of range: 0 to its concurrency", f.Name, f.Reserved)
		}
		members[i]++
		reserved[i] += f.Reserved
	}
	for i, p := range pools {
		if members[i] > p.Concurrency || reserved[i] > p.Concurrency {
			return fmt.Errorf("dispatch: pool %q: its %d functions reserve %d, more than its concurrency of %d (each holds one slot at least)",
				p.Name, members[i], reserved[i], p.Concurrency)
		}
	}
	return nil
}
