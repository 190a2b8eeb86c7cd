// Package circuit is a function's circuit breaker: the policy that says
// when it opens, a process's record of recent Outcomes that judges it, and
// the changes of the shared state (shared.PacingState's Circuit) that open
// it, let one probe through, and close or reopen it. dispatch applies it
// around each attempt; every change is a pure function of the state, made
// by compare-and-set so that all gateway processes share one breaker.
package circuit

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sluicehq/sluice/buffer/shared"
)

// Policy says when a function's circuit breaker opens. While it is
// open nothing is dispatched to the function and queued jobs wait without
// spending attempts; after a cooldown one probe job is let through
// (half-open): its success closes the circuit, its failure reopens it for
// twice as long. The zero value is on, with [DefaultPolicy]'s
// settings.
type Policy struct {
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

// DefaultPolicy returns what each zero field of a Policy
// means.
func DefaultPolicy() Policy {
	return Policy{FailureRatio: 0.5, MinAttempts: 10, Window: 30 * time.Second, Cooldown: 5 * time.Second, MaxCooldown: 5 * time.Minute}
}

// SetDefaults gives each zero field its default.
func (c *Policy) SetDefaults() {
	d := DefaultPolicy()
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

// Outcomes is a process's record of a function's recent attempts: whether
// each failed, and when. It is safe for concurrent use.
type Outcomes struct {
	mu     sync.Mutex
	recent []outcome // oldest first
}

type outcome struct {
	at     time.Time
	failed bool
}

// Add records an attempt and reports whether the recent ones call for the
// circuit to open, with the counts that say so. Once it says so, it forgets
// them, so that a closed circuit is judged on attempts made since.
func (o *Outcomes) Add(p *Policy, now time.Time, failed bool) (open bool, failures, total int) {
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

// Open opens a closed circuit. It reports whether it changed
// anything (another process may have opened it first).
func Open(p *shared.PacingState, policy *Policy, now time.Time, failures, total int) bool {
	c := &p.Circuit
	if c.State != shared.CircuitClosed {
		return false
	}
	c.State, c.Cooldown, c.Until, c.Changed = shared.CircuitOpen, policy.Cooldown, now.Add(policy.Cooldown), now
	c.Opens++
	c.Reason = fmt.Sprintf("%d of the last %d attempts failed", failures, total)
	return true
}

// ClaimProbe turns an open circuit whose cooldown has passed half-open, for
// one probe that must end by lease; also a half-open one whose probe's
// lease lapsed. It reports whether the caller got the probe.
func ClaimProbe(p *shared.PacingState, now time.Time, lease time.Duration) bool {
	c := &p.Circuit
	if c.State == shared.CircuitClosed || now.Before(c.Until) {
		return false
	}
	c.State, c.Until, c.Changed = shared.CircuitHalfOpen, now.Add(lease), now
	c.Reason = "one probe job let through"
	return true
}

// ProbeSucceeded closes the circuit.
func ProbeSucceeded(p *shared.PacingState, now time.Time) bool {
	c := &p.Circuit
	if c.State == shared.CircuitClosed {
		return false
	}
	opens := c.Opens
	*c = shared.Circuit{Changed: now, Reason: "the probe job got an answer", Opens: opens}
	return true
}

// Wait is how long a job should wait before the circuit may let it
// through, and whether it must: zero and false when the circuit is closed.
// Jobs are spread over a second past the reopening, so that they do not
// all come back at once.
func Wait(c shared.Circuit, now time.Time) (time.Duration, bool) {
	if c.State == shared.CircuitClosed {
		return 0, false
	}
	return max(0, c.Until.Sub(now)) + rand.N(time.Second), true
}

// ProbeFailed reopens the circuit for twice as long as the last time. Its
// reason does not say why the probe failed: every tenant that may use the
// function reads it, and the probe's job, with the function's answer to
// it, is one tenant's. The process's log has the answer.
func ProbeFailed(p *shared.PacingState, policy *Policy, now time.Time) bool {
	c := &p.Circuit
	if c.State != shared.CircuitHalfOpen {
		return false
	}
	c.Cooldown = min(max(2*c.Cooldown, policy.Cooldown), policy.MaxCooldown)
	c.State, c.Until, c.Changed = shared.CircuitOpen, now.Add(c.Cooldown), now
	c.Opens++
	c.Reason = "the probe job failed"
	return true
}
