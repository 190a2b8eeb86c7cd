// Package shared holds what the gateway processes share about dispatch, in
// the pacing bucket: each function's pacing state (its window, what
// throttles taught, each process's report, its circuit breaker) and each
// pool's. Dispatch owns their meaning; this package only says what they
// hold, and reads and changes them by compare-and-set, so that concurrent
// processes make one ramp, not several.
package shared

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/jsapi"
)

// PacingState is one function's dispatch window as every gateway process
// sees it: the state that pacing.Policy (in dispatch/pacing), the policy,
// moves. The dispatcher owns its meaning; buffer only stores it, changing
// it by compare-and-set so that concurrent processes make one ramp, not
// several.
type PacingState struct {
	// Window is how many invocations may be in flight, across processes.
	Window float64 `json:"window"`
	// Ceiling is the concurrency limit learned from throttles: how many
	// invocations were in flight, across processes, when the platform
	// refused one; 0 while none is known.
	Ceiling int `json:"ceiling,omitempty"`
	// CeilingBase is the ceiling as the last concurrency throttle left it;
	// growth above it is earned by time without throttles (see ProbeAfter).
	CeilingBase int `json:"ceiling_base,omitempty"`
	// LearnedRate is the rate of invocation starts per second, across
	// processes, that the platform took when it throttled while fewer than
	// the learned limit were in flight: it limits requests per second, not
	// in flight. 0 while none is known.
	LearnedRate float64 `json:"learned_rate,omitempty"`
	// RateBase is the learned rate as the last rate throttle left it.
	RateBase float64 `json:"rate_base,omitempty"`
	// LastRateThrottle is when the learned rate last fell for a throttle.
	LastRateThrottle time.Time `json:"last_rate_throttle,omitzero"`
	// ProbeAfter is how long after a throttle the window (or rate) may
	// start to grow again: long enough that probing costs few throttles.
	ProbeAfter time.Duration `json:"probe_after,omitempty"`
	// LastGrow and LastRateGrow are when the ceiling and the learned rate
	// last grew.
	LastGrow     time.Time `json:"last_grow,omitzero"`
	LastRateGrow time.Time `json:"last_rate_grow,omitzero"`
	// Took is a typical invocation's duration, as dispatch last measured
	// it when throttled: growth steps wait this long for the step before
	// to show.
	Took time.Duration `json:"took,omitempty"`
	// Procs is what each gateway process dispatching the function last
	// reported of itself, by process ID: the platform's in-flight count and
	// start rate are their sums. A pointer, so that PacingState stays
	// comparable.
	Procs *ProcLoads `json:"procs,omitempty"`
	// RampStart is when the current ramp began; zero while not ramping.
	RampStart time.Time `json:"ramp_start,omitzero"`
	// RampBase is the window the current ramp began from.
	RampBase float64 `json:"ramp_base,omitempty"`
	// PausedUntil: no invocation starts before it (the platform's
	// Retry-After).
	PausedUntil time.Time `json:"paused_until,omitzero"`
	// LastThrottle is when the window last shrank for a throttle.
	LastThrottle time.Time `json:"last_throttle,omitzero"`
	// LastProbe is when the window last tried one above the ceiling.
	LastProbe time.Time `json:"last_probe,omitzero"`
	// LastActive is when the function last had work queued or in flight.
	LastActive time.Time `json:"last_active,omitzero"`
	// Reason says, for people, why the window is where it is.
	Reason string `json:"reason,omitempty"`
	// LastWarm is when keep-warm pings were last sent, by any process.
	LastWarm time.Time `json:"last_warm,omitzero"`
	// ColdStarts and WarmStarts count invocations by whether they met a
	// new environment, across processes.
	ColdStarts int64 `json:"cold_starts,omitempty"`
	WarmStarts int64 `json:"warm_starts,omitempty"`
	// Circuit is the function's circuit breaker.
	Circuit Circuit `json:"circuit,omitzero"`
	// Counts are running totals of what dispatch did, across processes.
	Counts Counts `json:"counts,omitzero"`
}

// ProcLoads are the gateway processes' reports, by process ID.
type ProcLoads map[string]ProcLoad

// ProcLoad is one gateway process's share of a function's dispatch, as it
// last reported it.
type ProcLoad struct {
	// Invoking is the number of invocations it has in flight at the
	// platform.
	Invoking int `json:"invoking"`
	// Starts is the rate of invocations per second it started, of those
	// the platform took, over the last second.
	Starts float64 `json:"starts"`
	// Held is the number of jobs it has delivered that are not at the
	// platform (held back after a throttle, or recording their outcome):
	// the consumer's cap is the window plus these, so that they do not
	// shrink the window.
	Held int `json:"held,omitempty"`
	// At is when it reported.
	At time.Time `json:"at"`
}

// StartRate is the rate of invocation starts dispatch keeps to now,
// across processes: the configured one or the learned one, whichever is
// lower, ignoring either while it is 0; 0 for no limit.
func (p *PacingState) StartRate(configured float64) float64 {
	switch {
	case configured <= 0:
		return max(p.LearnedRate, 0)
	case p.LearnedRate <= 0:
		return configured
	}
	return min(configured, p.LearnedRate)
}

// Idle says the process has nothing of the function's: nothing in flight,
// nothing aside, no starts in the last second.
func (r ProcLoad) Idle() bool { return r.Invoking == 0 && r.Held == 0 && r.Starts == 0 }

// Scalars is p without Procs, for comparing what a change did to the rest.
func (p PacingState) Scalars() PacingState {
	p.Procs = nil
	return p
}

// Others sums the reports of every process but self that reported since
// then; procs is how many those are.
func (p *PacingState) Others(self string, since time.Time) (o ProcLoad, procs int) {
	if p.Procs == nil {
		return o, 0
	}
	for id, r := range *p.Procs {
		if id == self || r.At.Before(since) {
			continue
		}
		o.Invoking += r.Invoking
		o.Starts += r.Starts
		o.Held += r.Held
		procs++
	}
	return o, procs
}

// Counts are a function's running totals, across processes.
type Counts struct {
	// Succeeded counts jobs that succeeded.
	Succeeded int64 `json:"succeeded,omitempty"`
	// DeadLettered counts jobs that failed or expired.
	DeadLettered int64 `json:"dead_lettered,omitempty"`
	// Retries counts failed attempts that were retried.
	Retries int64 `json:"retries,omitempty"`
	// Throttles counts throttles received.
	Throttles int64 `json:"throttles,omitempty"`
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Succeeded += o.Succeeded
	c.DeadLettered += o.DeadLettered
	c.Retries += o.Retries
	c.Throttles += o.Throttles
}

// Circuit is a function's circuit breaker as every gateway process sees
// it. The dispatcher owns its meaning.
type Circuit struct {
	// State is CircuitClosed, CircuitOpen or CircuitHalfOpen.
	State string `json:"state,omitempty"`
	// Until is, while open, when a probe may go; while half-open, when
	// the probe's claim lapses (its process may have died).
	Until time.Time `json:"until,omitzero"`
	// Cooldown is how long the circuit stays open this time.
	Cooldown time.Duration `json:"cooldown,omitempty"`
	// Changed is when it last changed state.
	Changed time.Time `json:"changed,omitzero"`
	// Reason says, for people, why it is in this state.
	Reason string `json:"reason,omitempty"`
	// Opens counts how often it opened.
	Opens int64 `json:"opens,omitempty"`
}

// Read reads the JSON document under key; the zero value and revision
// 0 when there is none. what names it in errors.
func Read[T any](ctx context.Context, kv jetstream.KeyValue, key, what string) (T, uint64, error) {
	var v T
	entry, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, nil
	}
	if err != nil {
		return v, 0, fmt.Errorf("buffer: read %s: %w", what, err)
	}
	if err := json.Unmarshal(entry.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("buffer: decode %s: %w", what, err)
	}
	return v, entry.Revision(), nil
}

// Update applies change to the JSON document under key with
// compare-and-set, retrying on a fresh read when another process changed
// it in between. change reports whether it changed anything; if not,
// nothing is written.
func Update[T any](ctx context.Context, kv jetstream.KeyValue, key, what string, change func(*T) bool) (T, error) {
	for {
		v, rev, err := Read[T](ctx, kv, key, what)
		if err != nil {
			return v, err
		}
		if !change(&v) {
			return v, nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, fmt.Errorf("buffer: encode %s: %w", what, err)
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return v, nil
		}
		if !jsapi.Conflict(err) {
			return v, fmt.Errorf("buffer: write %s: %w", what, err)
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
	}
}

// PauseDelay is how long a throttled job waits before it is delivered
// again, at least: until the function's pause ends.
func PauseDelay(p PacingState, now time.Time) time.Duration {
	return max(0, p.PausedUntil.Sub(now))
}

// Pool is a concurrency pool shared by several functions as every gateway
// process sees it: one entry in [PacingBucket] under the key "pool.<name>"
// (function names hold no dot, so the keys never meet). The dispatcher owns
// its meaning; buffer only stores it, changing it by compare-and-set.
type Pool struct {
	// Limit is how many invocations the pool allows in flight now, across
	// its functions and processes: the configured concurrency, less what
	// the platform's throttles took off.
	Limit float64 `json:"limit"`
	// Leader is the process that sets the pool's consumer caps, and
	// LeaseUntil when its claim lapses unless renewed.
	Leader     string    `json:"leader,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// LastThrottle is when the limit last shrank for a throttle.
	LastThrottle time.Time `json:"last_throttle,omitzero"`
	// Members are the pool's functions, by name, as the leader last saw
	// and capped them.
	Members map[string]PoolMember `json:"members,omitempty"`
	// Updated is when the leader last wrote the entry.
	Updated time.Time `json:"updated,omitzero"`
}

// PoolMember is one function's share of a pool.
type PoolMember struct {
	// Reserved is the share the function is guaranteed while it has work.
	Reserved int `json:"reserved,omitempty"`
	// Granted is the cap the leader aims at for the function now.
	Granted int `json:"granted"`
	// Cap is the cap the server enforces now (its consumer's
	// MaxAckPending): below Granted while others still give slots back.
	Cap int `json:"cap"`
	// InFlight is how many of its jobs were in flight, and Backlog how
	// many waited.
	InFlight int `json:"in_flight"`
	Backlog  int `json:"backlog,omitempty"`
}

// PoolKey is the key of a pool's entry in [PacingBucket].
func PoolKey(pool string) string { return "pool." + pool }

// Borrowed is how many of the member's jobs in flight run above its
// reserved share, on slots other members lend or nobody reserved.
func (m PoolMember) Borrowed() int { return max(0, m.InFlight-m.Reserved) }

// Lent is how many of the member's reserved slots it does not use now,
// free for the others.
func (m PoolMember) Lent() int { return max(0, m.Reserved-m.InFlight) }

// Circuit states, as PacingState stores them; the zero value is closed.
const (
	CircuitClosed   = ""
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)
