package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/target"
)

// keepWarm sends a round of keep-warm pings every KeepWarm.Every while the
// function has no work. Processes claim each round in the shared pacing
// state, so only one of them sends it. Pings take places in the window as
// invocations do, so that with the jobs that come meanwhile they stay
// within it: a round sends as many as there is room for then, none if
// there is none; in a pool, no more than the function's share of it.
func (l *functionLoop) keepWarm(ctx context.Context) {
	kw := l.fn.KeepWarm
	tick := time.NewTicker(kw.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		load, err := l.load(ctx)
		if err != nil || load.Backlog > 0 || load.InFlight > 0 {
			continue // busy: real work keeps it warm
		}
		// A round is claimed until it ends (at most the function's
		// timeout, should its process die meanwhile); the next is due an
		// interval after this one began, and not before it ended: a round
		// slower than the interval must not overlap the next, sent by
		// another process.
		now := l.cfg.Now()
		claimed := false
		if _, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool {
			claimed = now.Sub(p.LastWarm) >= kw.Every*9/10
			if claimed {
				p.LastWarm = now.Add(l.fn.Timeout)
			}
			return claimed
		}); err != nil || !claimed {
			continue
		}
		limit := 0
		if l.pool != nil && !l.pool.implicit {
			// The function's share of its pool, which its consumers' caps
			// hold; a fair function's own pool is its window.
			limit = load.MaxInFlight
		}
		n := 0
		if l.pool == nil || l.pool.implicit || limit > 0 {
			n = l.inv.StartPings(kw.Instances, limit)
		}
		if n == 0 {
			l.log.Debug("keep-warm round skipped: no room in the window")
			l.endWarmRound(ctx, now)
			continue
		}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				defer l.inv.PingsDone(1)
				pingCtx, cancel := context.WithTimeout(ctx, l.fn.Timeout)
				defer cancel()
				if _, err := l.fn.Invoker.Invoke(pingCtx, &target.Invocation{Function: l.fn.Name, Warmup: true}); err != nil && ctx.Err() == nil {
					l.log.Debug("keep-warm ping failed", "err", err)
				}
			})
		}
		wg.Wait()
		l.endWarmRound(ctx, now)
		l.log.Debug("keep-warm round sent", "instances", n)
	}
}

// endWarmRound gives up the claim of the keep-warm round that began at
// began: the next is due an interval after that.
func (l *functionLoop) endWarmRound(ctx context.Context, began time.Time) {
	l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool { //nolint:errcheck // at worst the claim lapses after the timeout
		p.LastWarm = began
		return true
	})
}
