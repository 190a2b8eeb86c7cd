package buffer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/shared"
)

// PacingBucket is the key-value bucket holding each function's dispatch
// window, keyed by function name, shared by every gateway process.
const PacingBucket = "sluice-pacing"

// Pacing returns the function's shared window; the zero shared.PacingState if none
// has been written yet.
func (q *Queue) Pacing(ctx context.Context, function string) (shared.PacingState, error) {
	p, _, err := q.pacing(ctx, function)
	return p, err
}

func (q *Queue) pacing(ctx context.Context, function string) (shared.PacingState, uint64, error) {
	return shared.Read[shared.PacingState](ctx, q.pacingKV, function, "pacing of "+function)
}

// UpdatePacing applies change to the function's shared window with
// compare-and-set, retrying when another process changed it in between.
// change reports whether it changed anything; if not, nothing is written.
func (q *Queue) UpdatePacing(ctx context.Context, function string, change func(*shared.PacingState) bool) (shared.PacingState, error) {
	return shared.Update(ctx, q.pacingKV, function, "pacing of "+function, change)
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
	info, err := c.info(ctx)
	if err != nil {
		return Load{}, fmt.Errorf("buffer: consumer info of %s: %w", c.cfg.Function, err)
	}
	if info == nil {
		return Load{Paused: true}, nil // not made, and no job waits: it delivers nothing
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
	info, err := c.info(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("buffer: consumer info of %s: %w", c.cfg.Function, err)
	}
	if info == nil {
		return time.Time{}, ErrNotFound
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
	c.want = n
	if c.cons == nil || c.maxInFlight == n {
		return nil // one not made yet is made with n
	}
	cfg := c.jsConfig(n)
	if _, err := c.q.stream.UpdateConsumer(ctx, cfg); err != nil {
		if consumerGone(err) {
			c.cons, c.maxInFlight = nil, 0 // removed while idle: made again with n
			return nil
		}
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
	if _, err := c.bound(ctx); err != nil { // made paused if it was not
		return err
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
