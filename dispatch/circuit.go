package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// CircuitPolicy says when a function's circuit breaker opens. While it is
// open nothing is dispatched to the function and queued jobs wait without
// spending attempts; after a cooldown one probe job is let through
// (half-open): its success closes the circuit, its failure reopens it for
// twice as long. The zero value is on, with [DefaultCircuitPolicy]'s
// settings.
type CircuitPolicy struct {
	// Disabled turns the breaker off: every job is tried whatever the
	// function's health.
	Disabled bool
	// FailureRatio opens the circuit when at least this share of the recent
	// attempts failed (5xx but 501, 408, timeouts, connection failures;
	// throttles are not counted either way). Zero means 0.5.
	FailureRatio float64
	// MinAttempts is how many recent attempts it takes to judge. Zero
	// means 10.
	MinAttempts int
	// Window is how far back "recent" goes. Zero means 30s.
	Window time.Duration
	// Cooldown is how long the circuit first stays open. Zero means 5s.
	Cooldown time.Duration
	// MaxCooldown caps the cooldown as failed probes double it. Zero means
	// 5m.
	MaxCooldown time.Duration
}

// DefaultCircuitPolicy returns what each zero field of a CircuitPolicy
// means.
func DefaultCircuitPolicy() CircuitPolicy {
	return CircuitPolicy{FailureRatio: 0.5, MinAttempts: 10, Window: 30 * time.Second, Cooldown: 5 * time.Second, MaxCooldown: 5 * time.Minute}
}

func (c *CircuitPolicy) setDefaults() {
	d := DefaultCircuitPolicy()
	if c.FailureRatio == 0 {
		c.FailureRatio = d.FailureRatio
	}
	if c.MinAttempts == 0 {
		c.MinAttempts = d.MinAttempts
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Cooldown == 0 {
		c.Cooldown = d.Cooldown
	}
	if c.MaxCooldown == 0 {
		c.MaxCooldown = d.MaxCooldown
	}
}

// outcomes is a process's record of a function's recent attempts: whether
// each failed, and when. It is safe for concurrent use.
type outcomes struct {
	mu     sync.Mutex
	recent []outcome // oldest first
}

type outcome struct {
	at     time.Time
	failed bool
}

// add records an attempt and reports whether the recent ones call for the
// circuit to open, with the counts that say so. Once it says so, it forgets
// them, so that a closed circuit is judged on attempts made since.
func (o *outcomes) add(p *CircuitPolicy, now time.Time, failed bool) (open bool, failures, total int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cut := 0
	for cut < len(o.recent) && now.Sub(o.recent[cut].at) > p.Window {
		cut++
	}
	o.recent = append(o.recent[cut:], outcome{at: now, failed: failed})
	if over := len(o.recent) - 4*p.MinAttempts; over > 0 {
		o.recent = o.recent[over:] // enough to judge by; bounded memory
	}
	for _, r := range o.recent {
		if r.failed {
			failures++
		}
	}
	total = len(o.recent)
	if total >= p.MinAttempts && float64(failures) >= p.FailureRatio*float64(total) {
		o.recent = o.recent[:0]
		return true, failures, total
	}
	return false, failures, total
}

// openCircuit opens a closed circuit. It reports whether it changed
// anything (another process may have opened it first).
func openCircuit(p *buffer.PacingState, policy *CircuitPolicy, now time.Time, failures, total int) bool {
	c := &p.Circuit
	if c.State != buffer.CircuitClosed {
		return false
	}
	c.State, c.Cooldown, c.Until, c.Changed = buffer.CircuitOpen, policy.Cooldown, now.Add(policy.Cooldown), now
	c.Opens++
	c.Reason = fmt.Sprintf("%d of the last %d attempts failed", failures, total)
	return true
}

// claimProbe turns an open circuit whose cooldown has passed half-open, for
// one probe that must end by lease; also a half-open one whose probe's
// lease lapsed. It reports whether the caller got the probe.
func claimProbe(p *buffer.PacingState, now time.Time, lease time.Duration) bool {
	c := &p.Circuit
	if c.State == buffer.CircuitClosed || now.Before(c.Until) {
		return false
	}
	c.State, c.Until, c.Changed = buffer.CircuitHalfOpen, now.Add(lease), now
	c.Reason = "one probe job let through"
	return true
}

// probeSucceeded closes the circuit.
func probeSucceeded(p *buffer.PacingState, now time.Time) bool {
	c := &p.Circuit
	if c.State == buffer.CircuitClosed {
		return false
	}
	opens := c.Opens
	*c = buffer.Circuit{Changed: now, Reason: "the probe job got an answer", Opens: opens}
	return true
}

// probeFailed reopens the circuit for twice as long as the last time. Its
// reason does not say why the probe failed: every tenant that may use the
// function reads it, and the probe's job, with the function's answer to
// it, is one tenant's. The process's log has the answer.
func probeFailed(p *buffer.PacingState, policy *CircuitPolicy, now time.Time) bool {
	c := &p.Circuit
	if c.State != buffer.CircuitHalfOpen {
		return false
	}
	c.Cooldown = min(max(2*c.Cooldown, policy.Cooldown), policy.MaxCooldown)
	c.State, c.Until, c.Changed = buffer.CircuitOpen, now.Add(c.Cooldown), now
	c.Opens++
	c.Reason = "the probe job failed"
	return true
}

// circuitWait is how long a job should wait before the circuit may let it
// through, and whether it must: zero and false when the circuit is closed.
// Jobs are spread over a second past the reopening, so that they do not
// all come back at once.
func circuitWait(c buffer.Circuit, now time.Time) (time.Duration, bool) {
	if c.State == buffer.CircuitClosed {
		return 0, false
	}
	return max(0, c.Until.Sub(now)) + rand.N(time.Second), true
}

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
		if c.State == buffer.CircuitClosed {
			return false, true
		}
		if !now.Before(c.Until) {
			ctx, cancel := context.WithTimeout(runCtx, 10*time.Second)
			claimed := false
			p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *buffer.PacingState) bool {
				claimed = claimProbe(p, now, l.fn.Timeout+15*time.Second)
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
			case err == nil && c.State == buffer.CircuitClosed:
				return false, true
			}
		}
		wait, _ := circuitWait(c, now)
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
	var change func(*buffer.PacingState) bool
	switch {
	case probe && failed:
		change = func(p *buffer.PacingState) bool { return probeFailed(p, &l.fn.Circuit, now) }
	case probe:
		change = func(p *buffer.PacingState) bool { return probeSucceeded(p, now) }
	default:
		open, failures, total := l.recent.add(&l.fn.Circuit, now, failed)
		if !open {
			return false
		}
		change = func(p *buffer.PacingState) bool { return openCircuit(p, &l.fn.Circuit, now, failures, total) }
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
	wait, _ := circuitWait(l.pacing.Load().Circuit, l.cfg.Now())
	l.settle(func(ctx context.Context) error { return dv.ProbeFailed(ctx, max(wait, 50*time.Millisecond)) }, dv)
}

func stateName(s string) string {
	if s == buffer.CircuitClosed {
		return "closed"
	}
	return s
}
