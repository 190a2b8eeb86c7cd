package dispatch

import (
	"context"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/circuit"
)

// admit lets a job through the circuit breaker: at once while the circuit
// is closed; as the probe once the cooldown has passed and this process
// claims it; otherwise it holds the job until it may go, or hands it back
// for later, spending no attempt. It reports whether the job may be invoked
// now, and whether as the probe. A job handed back comes again no later
// than expiresIn, so that it expires on time.
func (l *functionLoop) admit(runCtx context.Context, dv *buffer.Delivery, expiresIn time.Duration) (probe, ok bool) {
	for {
		now := l.cfg.Now()
		c := l.pacing.Load().Circuit
		if c.State == shared.CircuitClosed {
			return false, true
		}
		if !now.Before(c.Until) {
			ctx, cancel := context.WithTimeout(runCtx, 10*time.Second)
			claimed := false
			p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool {
				claimed = circuit.ClaimProbe(p, now, l.fn.Timeout+15*time.Second)
				return claimed
			})
			cancel()
			if err == nil {
				l.pacing.Store(&p)
				c = p.Circuit
			}
			switch {
			case claimed:
				l.jobLog(dv).Info("circuit half-open: letting one probe job through")
				return true, true
			case err == nil && c.State == shared.CircuitClosed:
				return false, true
			}
		}
		wait, _ := circuit.Wait(c, now)
		if wait > l.fn.Timeout/2 {
			wait = max(min(wait, expiresIn+10*time.Millisecond), 10*time.Millisecond)
			l.settle(func(context.Context) error { return dv.Defer(wait) }, dv)
			return false, false
		}
		if sleep(runCtx, wait); runCtx.Err() != nil {
			l.settle(dv.Release, dv)
			return false, false
		}
	}
}

// judge feeds an attempt's outcome to the circuit breaker: whether it
// failed in a way that says the function is down, and why. For the probe,
// it closes the circuit unless the probe failed, and reports whether it
// did; for any other attempt it opens the circuit when most recent ones
// failed, and reports false.
func (l *functionLoop) judge(probe, failed bool, reason string) (failedProbe bool) {
	if l.fn.Circuit.Disabled {
		return false
	}
	now := l.cfg.Now()
	var change func(*shared.PacingState) bool
	switch {
	case probe && failed:
		change = func(p *shared.PacingState) bool { return circuit.ProbeFailed(p, &l.fn.Circuit, now) }
	case probe:
		change = func(p *shared.PacingState) bool { return circuit.ProbeSucceeded(p, now) }
	default:
		open, failures, total := l.recent.Add(&l.fn.Circuit, now, failed)
		if !open {
			return false
		}
		change = func(p *shared.PacingState) bool { return circuit.Open(p, &l.fn.Circuit, now, failures, total) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := l.src.UpdatePacing(ctx, l.fn.Name, change)
	if err != nil {
		l.log.Error("update circuit breaker", "err", err)
		return probe && failed
	}
	l.pacing.Store(&p)
	if c := p.Circuit; c.Changed.Equal(now) {
		log := l.log
		if probe && failed {
			log = log.With("probe_error", reason)
		}
		log.Warn("circuit breaker", "state", stateName(c.State), "reason", c.Reason, "cooldown", c.Cooldown)
	}
	return probe && failed
}

// probeFailed hands the probe's job back without counting its attempt, to
// come back once the circuit may let a job through again.
func (l *functionLoop) probeFailed(dv *buffer.Delivery, rec *sluicev1.Attempt) {
	rec.Error += " (circuit breaker probe: not counted as an attempt)"
	wait, _ := circuit.Wait(l.pacing.Load().Circuit, l.cfg.Now())
	l.settle(func(ctx context.Context) error { return dv.ProbeFailed(ctx, max(wait, 50*time.Millisecond)) }, dv)
}

func stateName(s string) string {
	if s == shared.CircuitClosed {
		return "closed"
	}
	return s
}
