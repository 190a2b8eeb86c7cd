package buffer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PacingBucket is the key-value bucket holding each function's dispatch
// window, keyed by function name, shared by every gateway process.
const PacingBucket = "sluice-pacing"

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

// Circuit states, as PacingState stores them; the zero value is closed.
const (
	CircuitClosed   = ""
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)

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

// Pacing returns the function's shared window; the zero PacingState if none
// has been written yet.
func (q *Queue) Pacing(ctx context.Context, function string) (PacingState, error) {
	p, _, err := q.pacing(ctx, function)
	return p, err
}

func (q *Queue) pacing(ctx context.Context, function string) (PacingState, uint64, error) {
	return readDoc[PacingState](ctx, q.pacingKV, function, "pacing of "+function)
}

// UpdatePacing applies change to the function's shared window with
// compare-and-set, retrying when another process changed it in between.
// change reports whether it changed anything; if not, nothing is written.
func (q *Queue) UpdatePacing(ctx context.Context, function string, change func(*PacingState) bool) (PacingState, error) {
	return updateDoc(ctx, q.pacingKV, function, "pacing of "+function, change)
}

// readDoc reads the JSON document under key; the zero value and revision
// 0 when there is none. what names it in errors.
func readDoc[T any](ctx context.Context, kv jetstream.KeyValue, key, what string) (T, uint64, error) {
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

// updateDoc applies change to the JSON document under key with
// compare-and-set, retrying on a fresh read when another process changed
// it in between. change reports whether it changed anything; if not,
// nothing is written.
func updateDoc[T any](ctx context.Context, kv jetstream.KeyValue, key, what string, change func(*T) bool) (T, error) {
	for {
		v, rev, err := readDoc[T](ctx, kv, key, what)
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
		if !isConflict(err) {
			return v, fmt.Errorf("buffer: write %s: %w", what, err)
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
	}
}

// Load is how much work one function has right now, across processes.
type Load struct {
	// Backlog is the number of jobs waiting to be delivered.
	Backlog int
	// InFlight is the number delivered and not yet finished.
	InFlight int
	// MaxInFlight is the server-enforced cap on InFlight now.
	MaxInFlight int
	// Paused: the server delivers nothing now (a pooled consumer its
	// pool's leader has not resumed yet).
	Paused bool
}

// Load reads the function's backlog and in-flight count from its consumer.
func (c *Consumer) Load(ctx context.Context) (Load, error) {
	info, err := c.cons.Info(ctx)
	if err != nil {
		return Load{}, fmt.Errorf("buffer: consumer info of %s: %w", c.cfg.Function, err)
	}
	c.ackFloor.Store(info.AckFloor.Stream)
	c.delivered.Store(info.Delivered.Stream)
	// The cap as the server has it: another process may have written it
	// since this one did, and SetMaxInFlight writes only what differs.
	c.mu.Lock()
	c.maxInFlight = info.Config.MaxAckPending
	c.mu.Unlock()
	if !info.TimeStamp.IsZero() {
		c.serverOffset.Store(time.Until(info.TimeStamp))
	}
	return Load{
		Backlog:     int(info.NumPending),
		InFlight:    info.NumAckPending,
		MaxInFlight: info.Config.MaxAckPending,
		Paused:      info.Paused,
	}, nil
}

// Oldest is when the oldest job of the function still in the queue
// (waiting or running) was stored; [ErrNotFound] when there is none.
func (c *Consumer) Oldest(ctx context.Context) (time.Time, error) {
	info, err := c.cons.Info(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("buffer: consumer info of %s: %w", c.cfg.Function, err)
	}
	// Every job at or below the ack floor is finished; the one after it
	// is the oldest that is not.
	msg, err := c.q.stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(c.filter()))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, ErrNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("buffer: oldest job of %s: %w", c.cfg.Function, err)
	}
	return msg.Time, nil
}

// WaitingSince is when the oldest job the consumer has not delivered yet
// was stored, as of the last Load; [ErrNotFound] when none waits.
func (c *Consumer) WaitingSince(ctx context.Context) (time.Time, error) {
	msg, err := c.q.stream.GetMsg(ctx, c.delivered.Load()+1, jetstream.WithGetMsgSubject(c.filter()))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, ErrNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("buffer: oldest waiting job of %s: %w", c.cfg.Function, err)
	}
	return msg.Time, nil
}

// FunctionLoad reads a function's load without a Consumer of one's own, for
// status pages: of all its lanes, for a fair function. It returns
// [ErrNotFound] before the function's consumer exists.
func (q *Queue) FunctionLoad(ctx context.Context, function string) (Load, error) {
	cons, err := q.stream.Consumer(ctx, ConsumerName(function))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return Load{}, ErrNotFound
	}
	if err != nil {
		return Load{}, fmt.Errorf("buffer: consumer of %s: %w", function, err)
	}
	load, err := (&Consumer{q: q, cons: cons, cfg: ConsumerConfig{Function: function}}).Load(ctx)
	if err != nil || cons.CachedInfo().Config.FilterSubject == functionSubjects(function) {
		return load, err
	}
	// A fair function: add its other lanes.
	names := q.stream.ConsumerNames(ctx)
	prefix := ConsumerName(function) + "~"
	for name := range names.Name() {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		lc, err := q.stream.Consumer(ctx, name)
		if err != nil {
			continue // removed meanwhile
		}
		l, err := (&Consumer{q: q, cons: lc, cfg: ConsumerConfig{Function: function}}).Load(ctx)
		if err != nil {
			return Load{}, err
		}
		load.Backlog += l.Backlog
		load.InFlight += l.InFlight
		load.MaxInFlight += l.MaxInFlight
	}
	if err := names.Err(); err != nil {
		return Load{}, fmt.Errorf("buffer: lanes of %s: %w", function, err)
	}
	return load, nil
}

// RemoveFinished removes the messages of the function's finished jobs, up
// to the ack floor Load last read (every job at or below it is finished),
// in one purge: one fsync for all of them, where a work queue spends one per
// job. Finished jobs above the floor wait for a later call. Unless all is
// set, it waits to have a batch (see removeBatch).
func (c *Consumer) RemoveFinished(ctx context.Context, all bool) error {
	floor := c.ackFloor.Load()
	if floor <= c.removedTo.Load() {
		return nil
	}
	// Each purge costs the server a pass and an fsync: batch them, a
	// thousand finished jobs or a second's worth at least.
	now := time.Now().UnixNano()
	if !all && floor-c.removedTo.Load() < removeBatch && time.Duration(now-c.removedAt.Load()) < removeEvery {
		return nil
	}
	c.removedAt.Store(now)
	if err := c.q.stream.Purge(ctx, jetstream.WithPurgeSubject(c.filter()), jetstream.WithPurgeSequence(floor+1)); err != nil {
		return fmt.Errorf("buffer: remove finished jobs of %s: %w", c.cfg.Function, err)
	}
	c.removedTo.Store(floor)
	return nil
}

// RemoveFinished purges when this many finished jobs wait to be removed,
// or removeEvery has passed since the last purge.
const (
	removeBatch = 1000
	removeEvery = time.Second
)

// SetMaxInFlight changes the server-enforced cap on jobs in flight. The
// server applies it to every process pulling this function's jobs at once;
// lowering it below the current count stops new deliveries until enough
// finish, and takes nothing back.
func (c *Consumer) SetMaxInFlight(ctx context.Context, n int) error {
	if n < 1 {
		n = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxInFlight == n {
		return nil
	}
	cfg := c.jsConfig(n)
	if _, err := c.q.stream.UpdateConsumer(ctx, cfg); err != nil {
		return fmt.Errorf("buffer: set max in flight of %s to %d: %w", c.cfg.Function, n, err)
	}
	c.maxInFlight = n
	return nil
}

// SetPooledCap sets the cap of a pooled consumer and resumes it if it was
// created paused. Only the pool's leader calls it, with load just read: it
// writes only when the server's cap (or pause) differs.
//
// A cap of 0 pauses the consumer: it delivers nothing more, and what it
// delivered still counts in its load until finished.
func (c *Consumer) SetPooledCap(ctx context.Context, n int, load Load) error {
	switch {
	case n <= 0 && load.Paused, n > 0 && load.MaxInFlight == n && !load.Paused:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= 0 {
		if _, err := c.q.js.PauseConsumer(ctx, StreamName, c.name(), pausedUntil); err != nil {
			return fmt.Errorf("buffer: pause %s: %w", c.name(), err)
		}
		return nil
	}
	// The cap first (an update keeps a pause), then the pause lifted:
	// never more than n delivered.
	if load.MaxInFlight != n {
		if _, err := c.q.stream.UpdateConsumer(ctx, c.jsConfig(n)); err != nil {
			return fmt.Errorf("buffer: set max in flight of %s to %d: %w", c.name(), n, err)
		}
		c.maxInFlight = n
	}
	if load.Paused {
		// A pause lifted by the API leaves the server's delivery loop
		// asleep until something else wakes it; a pause that ends by
		// itself wakes it. So it is made to end a moment from now by the
		// server's clock. (Should that moment have passed already, the
		// pullers' next pull, within a second, wakes it.)
		until := time.Now().Add(c.serverOffset.Load() + resumeIn)
		if _, err := c.q.js.PauseConsumer(ctx, StreamName, c.name(), until); err != nil {
			return fmt.Errorf("buffer: resume %s: %w", c.name(), err)
		}
	}
	return nil
}

// resumeIn is how soon a paused consumer resumes, by the server's clock.
const resumeIn = 20 * time.Millisecond

// PauseDelay is how long a throttled job waits before it is delivered
// again, at least: until the function's pause ends.
func PauseDelay(p PacingState, now time.Time) time.Duration {
	return max(0, p.PausedUntil.Sub(now))
}
