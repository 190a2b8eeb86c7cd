package buffer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/keyed"
)

// ConsumerConfig describes how one function's jobs are pulled.
type ConsumerConfig struct {
	// Function is the function's name. Required.
	Function string
	// MaxInFlight is the most jobs delivered and not yet finished, across
	// every process pulling this function's jobs: the server enforces it
	// (MaxAckPending), so it holds globally. Required, at least 1.
	MaxInFlight int
	// AckWait is how long a delivered job may stay unfinished before the
	// server hands it to another puller, which is how the jobs of a crashed
	// process get run. It must exceed the longest invocation. Required.
	AckWait time.Duration
	// Pooled hands the cap to a pool's leader: a consumer that exists is
	// bound as it stands, its MaxAckPending untouched (writing MaxInFlight
	// over it could raise a cap the leader lowered to lend slots to another
	// function); a new one is created paused, delivering nothing until the
	// leader's first SetPooledCap. MaxInFlight is then ignored.
	Pooled bool
	// Lane, if set, pulls only that lane of the function's jobs, for
	// fair dispatch; nil pulls all of them in the order they came.
	Lane *Lane
	// IdleLife, if set, keeps the consumer only while its jobs are pulled:
	// the server removes it once nothing has pulled for this long, and it
	// is made again when jobs wait for it (see [Consumer.Load]) or it is
	// pulled from. A removed consumer's finished jobs must have been
	// removed first (RemoveFinished), or the new one delivers them again,
	// to be skipped as finished. Zero keeps it for good.
	IdleLife time.Duration
}

// Consumer pulls one function's jobs. It is safe for concurrent use.
type Consumer struct {
	q   *Queue
	cfg ConsumerConfig

	mu          sync.Mutex
	cons        jetstream.Consumer // nil until made, and once removed while idle (see IdleLife)
	want        int                // the cap to make it with: the last asked for
	maxInFlight int                // last MaxAckPending written or read, 0 if unknown

	ackFloor  atomic.Uint64 // the consumer's ack floor as Load last read it
	delivered atomic.Uint64 // the last stream sequence it delivered, likewise
	// serverOffset is the server's clock less this process's, as Load last
	// saw it (a time.Duration).
	serverOffset atomicDuration
	removedTo    atomic.Uint64 // RemoveFinished has purged up to here
	removedAt    atomic.Int64  // when RemoveFinished last purged, Unix nanoseconds
}

// ConsumerName is the durable consumer that dispatches function's jobs.
func ConsumerName(function string) string { return "sluice-dispatch-" + function }

// Consumer creates or updates the durable consumer for a function's jobs;
// with IdleLife, it binds to one that exists and leaves it to be made when
// jobs come otherwise.
func (q *Queue) Consumer(ctx context.Context, cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Function == "" || cfg.MaxInFlight < 1 || cfg.AckWait <= 0 || cfg.IdleLife < 0 {
		return nil, fmt.Errorf("buffer: consumer config %+v: function, max in flight and ack wait are required", cfg)
	}
	c := &Consumer{q: q, cfg: cfg, want: cfg.MaxInFlight}
	if cfg.Lane == nil || cfg.Lane.Default() {
		if err := q.startAfreshIfRelaid(ctx, cfg.Function, c.filter()); err != nil {
			return nil, err
		}
	}
	if cfg.IdleLife > 0 {
		_, err := q.stream.Consumer(ctx, c.name())
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return c, nil
		}
		if err != nil {
			return nil, fmt.Errorf("buffer: consumer for %s: %w", cfg.Function, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.make(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// make creates the consumer, or binds to it and brings its settings up to
// date. c.mu is held.
func (c *Consumer) make(ctx context.Context) error {
	if c.cfg.Pooled {
		return c.bindPooled(ctx)
	}
	cons, err := c.q.stream.CreateOrUpdateConsumer(ctx, c.jsConfig(c.want))
	if err != nil {
		return fmt.Errorf("buffer: consumer for %s: %w", c.cfg.Function, err)
	}
	if cons.CachedInfo().Paused {
		// Left paused by a pool's leader (the function was pooled or fair
		// before): an update keeps a pause, so lift it. The pulls to come
		// wake its delivery.
		if _, err := c.q.js.ResumeConsumer(ctx, StreamName, c.name()); err != nil {
			return fmt.Errorf("buffer: resume consumer for %s: %w", c.cfg.Function, err)
		}
	}
	c.cons, c.maxInFlight = cons, c.want
	return nil
}

// bound is the consumer, made first if it does not exist (yet, or any
// more).
func (c *Consumer) bound(ctx context.Context) (jetstream.Consumer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cons == nil {
		if err := c.make(ctx); err != nil {
			return nil, err
		}
	}
	return c.cons, nil
}

// gone forgets the consumer if err says the server has it no more (removed
// while idle: see IdleLife), so that it is made again when needed; it
// reports whether it did.
func (c *Consumer) gone(err error) bool {
	if !consumerGone(err) {
		return false
	}
	c.mu.Lock()
	c.cons, c.maxInFlight = nil, 0
	c.mu.Unlock()
	return true
}

// consumerGone says whether err means the server has the consumer no more.
func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDoesNotExist) ||
		errors.Is(err, jetstream.ErrConsumerDeleted)
}

// info reads the consumer's state, making the consumer first if it does
// not exist and jobs wait for it; nil when it does not and none does.
func (c *Consumer) info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	for range 2 {
		c.mu.Lock()
		cons := c.cons
		c.mu.Unlock()
		if cons == nil {
			if waiting, err := c.q.holds(ctx, c.filter()); err != nil || !waiting {
				return nil, err
			}
			var err error
			if cons, err = c.bound(ctx); err != nil {
				return nil, err
			}
		}
		info, err := cons.Info(ctx)
		if c.gone(err) {
			continue // removed while idle just now: jobs may have come since
		}
		return info, err
	}
	return nil, fmt.Errorf("buffer: consumer for %s: removed as it was made", c.cfg.Function)
}

// holds reports whether any job message matches filter (finished ones not
// yet removed included).
func (q *Queue) holds(ctx context.Context, filter string) (bool, error) {
	_, err := q.stream.GetLastMsgForSubject(ctx, filter)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("buffer: jobs on %s: %w", filter, err)
}

// startAfreshIfRelaid removes the function's consumers when its own reads
// another set of subjects than filter: fairness was turned on (filter is
// its default lane's) or off (filter is all its jobs). JetStream keeps a
// consumer's place in the stream when its filter changes, so the function's
// consumer, made fair, would hold on to lane jobs it had delivered (and
// count them in flight forever, stalling the lanes), and made unfair would
// never deliver the lane jobs below its place, and would remove them as
// finished; lane consumers left from an earlier fair time would deliver
// again jobs the unfair one ran. So each is removed, after its finished jobs (those below
// its ack floor) are, and the consumers are made anew, delivering every
// unfinished job once: a job cut off by the restart runs again, as after
// any restart, and one waiting out a retry's backoff is retried at once.
// The lanes go first and the function's own consumer last, so that a
// crash in between leaves the change to be seen again.
//
// A process still dispatching with the old setting could have a job in
// flight that the new consumers deliver again: change fairness with the
// function's dispatch stopped (every gateway restarted at once).
func (q *Queue) startAfreshIfRelaid(ctx context.Context, function, filter string) error {
	own := ConsumerName(function)
	cons, err := q.stream.Consumer(ctx, own)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("buffer: consumer for %s: %w", function, err)
	case cons.CachedInfo().Config.FilterSubject == filter:
		return nil
	}
	var names []string
	lister := q.stream.ConsumerNames(ctx)
	for name := range lister.Name() {
		if strings.HasPrefix(name, own+"~") {
			names = append(names, name)
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("buffer: lanes of %s: %w", function, err)
	}
	for _, name := range append(names, own) {
		c, err := q.stream.Consumer(ctx, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // another process got here first
		}
		if err != nil {
			return fmt.Errorf("buffer: consumer %s: %w", name, err)
		}
		info := c.CachedInfo()
		if floor := info.AckFloor.Stream; floor > 0 {
			if err := q.stream.Purge(ctx, jetstream.WithPurgeSubject(info.Config.FilterSubject), jetstream.WithPurgeSequence(floor+1)); err != nil {
				return fmt.Errorf("buffer: remove finished jobs of %s: %w", name, err)
			}
		}
		if err := q.stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("buffer: remove consumer %s: %w", name, err)
		}
	}
	return nil
}

// pooledMark ends the description of a consumer a pool's leader keeps.
const pooledMark = " (pooled)"

// reconfigure brings a bound pooled consumer's filter and ack wait up to
// date (after a change of configuration: fair dispatch turned on, a longer
// timeout), and takes over one that was not pooled before, whose cap no
// leader has counted yet. It pauses the consumer as it does so, which only ever lowers
// what it may deliver, whatever the leader set meanwhile; the leader
// resumes it at its next round.
func (c *Consumer) reconfigure(ctx context.Context) error {
	have := c.cons.CachedInfo().Config
	if have.FilterSubject == c.filter() && have.AckWait == c.cfg.AckWait && have.InactiveThreshold == c.cfg.IdleLife &&
		strings.HasSuffix(have.Description, pooledMark) {
		return nil
	}
	if _, err := c.q.js.PauseConsumer(ctx, StreamName, c.name(), pausedUntil); err != nil {
		return fmt.Errorf("buffer: pause consumer for %s: %w", c.cfg.Function, err)
	}
	cfg := c.jsConfig(max(1, have.MaxAckPending))
	cfg.PauseUntil = &pausedUntil
	cons, err := c.q.stream.UpdateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("buffer: reconfigure consumer for %s: %w", c.cfg.Function, err)
	}
	c.cons = cons
	return nil
}

// pausedUntil is when a new pooled consumer would resume by itself: never,
// in practice; the pool's leader resumes it.
var pausedUntil = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// bindPooled binds to the function's consumer without changing its cap, or
// creates it paused with a cap of 1.
func (c *Consumer) bindPooled(ctx context.Context) error {
	for range 3 {
		cons, err := c.q.stream.Consumer(ctx, c.name())
		if err == nil {
			c.cons = cons
			return c.reconfigure(ctx)
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("buffer: consumer for %s: %w", c.cfg.Function, err)
		}
		cfg := c.jsConfig(1)
		cfg.PauseUntil = &pausedUntil
		cons, err = c.q.stream.CreateConsumer(ctx, cfg)
		if err == nil {
			c.cons = cons
			return nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("buffer: consumer for %s: %w", c.cfg.Function, err)
		}
		// Another process created it meanwhile: bind to that one.
	}
	return fmt.Errorf("buffer: consumer for %s: created and removed concurrently", c.cfg.Function)
}

// name is the consumer's durable name.
func (c *Consumer) name() string {
	if c.cfg.Lane != nil {
		return laneConsumerName(c.cfg.Function, *c.cfg.Lane)
	}
	return ConsumerName(c.cfg.Function)
}

// filter matches the job messages the consumer pulls.
func (c *Consumer) filter() string {
	if c.cfg.Lane != nil {
		return laneSubjects(c.cfg.Function, *c.cfg.Lane)
	}
	return functionSubjects(c.cfg.Function)
}

func (c *Consumer) jsConfig(maxInFlight int) jetstream.ConsumerConfig {
	desc := "Sluice: dispatch of " + c.cfg.Function
	if c.cfg.Pooled {
		// Marks a consumer whose cap a pool's leader keeps.
		desc += pooledMark
	}
	return jetstream.ConsumerConfig{
		Durable:       c.name(),
		Description:   desc,
		FilterSubject: c.filter(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxAckPending: maxInFlight,
		// Attempts are counted in the job's state, not by redeliveries.
		MaxDeliver: -1,
		// Each process keeps a pull or two open; leave headroom for many.
		MaxWaiting:        512,
		InactiveThreshold: c.cfg.IdleLife,
	}
}

// Consume pulls continuously, keeping up to maxBuffered jobs requested
// ahead, and calls handle with each job as it arrives, until ctx ends. The
// server still delivers no more than MaxInFlight unfinished jobs, so a
// finished job's place is refilled without a pull round trip. Jobs that
// arrive after ctx ended are handed straight back. It returns nil once ctx
// has ended, or the error that stopped it.
func (c *Consumer) Consume(ctx context.Context, maxBuffered int, handle func(*Delivery)) error {
	var opts []jetstream.PullMessagesOpt
	if c.cfg.Pooled {
		// A resumed consumer may need a fresh pull to wake it: see
		// SetPooledCap.
		opts = append(opts, jetstream.PullExpiry(time.Second))
	}
	cons, err := c.bound(ctx)
	if err != nil {
		return err
	}
	err = consume(ctx, cons, maxBuffered, func(msg jetstream.Msg) { handle(newDelivery(c.q, msg)) }, opts...)
	if c.gone(err) {
		return fmt.Errorf("buffer: consume %s: removed meanwhile; it is made again at the next pull: %w", c.cfg.Function, err)
	}
	if err != nil {
		return fmt.Errorf("buffer: consume %s: %w", c.cfg.Function, err)
	}
	return nil
}

// consume pulls from cons continuously, keeping up to maxBuffered messages
// requested ahead, and calls handle with each, until ctx ends. Messages
// that arrive after ctx ended are handed straight back. It returns nil once
// ctx has ended, or the error that stopped it.
func consume(ctx context.Context, cons jetstream.Consumer, maxBuffered int, handle func(jetstream.Msg), opts ...jetstream.PullMessagesOpt) error {
	it, err := cons.Messages(append([]jetstream.PullMessagesOpt{jetstream.PullMaxMessages(max(maxBuffered, 1))}, opts...)...)
	if err != nil {
		return err
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Drain() // buffered messages are still returned by Next, then it closes
	}()
	for {
		msg, err := it.Next()
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if ctx.Err() != nil {
				return nil
			}
			return err
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			// Missed heartbeats and the like: the iterator carries on.
			continue
		}
		if ctx.Err() != nil {
			msg.Nak() //nolint:errcheck // at worst it returns after AckWait
			continue
		}
		handle(msg)
	}
}

// Delivery is one job handed to a dispatcher. Exactly one of Succeed,
// Fail, Release or Skip should end it.
type Delivery struct {
	q   *Queue
	msg jetstream.Msg
	// JobID is the job's ID.
	JobID string
	// Function is the function the job is for.
	Function string
	// ContentType is the payload's content type.
	ContentType string
	// Payload is the job's payload.
	Payload []byte
	// CreateTime is when the job was accepted.
	CreateTime time.Time
	// CallbackURL is where the finished job is POSTed; "" for none.
	CallbackURL string
	// Tenant is the tenant the job belongs to; "" without tenants.
	Tenant string
	// Priority is the job's priority; unset for normal.
	Priority sluicev1.Priority
	// ConcurrencyKey is the job's concurrency key; "" for none.
	ConcurrencyKey string

	begun     bool                // Begin was called: Release must put the state back.
	redrives  int32               // which redrive of the job the message is of: 0 for the submit's
	stale     bool                // the job was redriven since this message: it is not to run
	last      *snapshot           // the job's state as this delivery last read or wrote it
	invokedAt time.Time           // when the attempt started, if Begin did not record it
	record    *sluicev1.Attempt   // added to the job's history by the closing write
	throttled []*sluicev1.Attempt // throttles held in process, added by the closing write
}

func newDelivery(q *Queue, msg jetstream.Msg) *Delivery {
	h := msg.Headers()
	function, _, _ := strings.Cut(msg.Subject()[len(SubjectPrefix):], ".")
	return &Delivery{
		q:           q,
		msg:         msg,
		JobID:       h.Get(headerJobID),
		Function:    function,
		ContentType: h.Get(headerContentTyp),
		Payload:     msg.Data(),
		CreateTime:  timeHeader(h, headerCreateTime),
		CallbackURL: h.Get(headerCallbackURL),
		Tenant:      h.Get(headerTenant),
		Priority:    headerPriorityOf(h),
		redrives:    headerRedrivesOf(h),

		ConcurrencyKey: h.Get(keyed.Header),
	}
}

// headerRedrivesOf reads which redrive a job message is of: 0 for the
// message its submit stored.
func headerRedrivesOf(h nats.Header) int32 {
	n, err := strconv.ParseInt(h.Get(headerRedrives), 10, 32)
	if err != nil || n < 0 {
		return 0
	}
	return int32(n)
}

// TraceContext is ctx carrying the trace of the submit that stored the job,
// so that dispatch spans join it.
func (d *Delivery) TraceContext(ctx context.Context) context.Context {
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(d.msg.Headers()))
}

// seed is the job's state as its message gives it: the state entry is first
// written when dispatch starts the job.
func (d *Delivery) seed() *sluicev1.Job {
	return &sluicev1.Job{
		Id:          d.JobID,
		Function:    d.Function,
		State:       sluicev1.Job_QUEUED,
		CreateTime:  timestamppb.New(d.CreateTime),
		ContentType: d.ContentType,
		PayloadSize: int64(len(d.Payload)),
		CallbackUrl: d.CallbackURL,
		Tenant:      d.Tenant,
		Priority:    d.Priority,

		ConcurrencyKey: d.ConcurrencyKey,
	}
}

// change writes a change to the job's state, starting from what this
// delivery last read or wrote, and remembers the result. A job redriven
// since this message was stored is left alone, as finished (see
// [Delivery.Prepare]).
func (d *Delivery) change(ctx context.Context, change func(*sluicev1.Job) error) (*sluicev1.Job, error) {
	snap, err := d.q.update(ctx, d.JobID, d.last, d.seed, func(j *sluicev1.Job) error {
		if d.outdated(j) {
			return ErrFinished
		}
		return change(j)
	})
	if snap != nil {
		d.last = snap
	}
	if snap == nil {
		return nil, err
	}
	return proto.CloneOf(snap.job), err
}

// Prepare reads the job's state before an attempt, without writing: the
// returned job is as it stands (its Attempts not yet counting this one).
// It returns [ErrFinished] for a job that already reached a terminal state
// (a redelivery after a crash, say), and for a message from before the
// job's last redrive (its run ended in the dead letters, and the redrive
// stored a message of its own, which runs it): call Skip then. Begin may
// then run concurrently with the invocation, off its critical path.
func (d *Delivery) Prepare(ctx context.Context) (*sluicev1.Job, error) {
	job, rev, err := d.q.get(ctx, d.JobID)
	switch {
	case errors.Is(err, ErrNotFound):
		job, rev = d.seed(), 0
	case err != nil:
		return nil, err
	}
	d.last = &snapshot{job: job, rev: rev}
	if Terminal(job.State) || d.outdated(job) {
		return nil, ErrFinished
	}
	return proto.CloneOf(job), nil
}

// outdated reports whether j, the job's state, was redriven since this
// delivery's message was stored, and remembers it: such a message is only
// to be removed.
func (d *Delivery) outdated(j *sluicev1.Job) bool {
	if j.Redrives > d.redrives {
		d.stale = true
	}
	return d.stale
}

// Redelivered reports whether the job's message was delivered before: after
// a crash, a throttle or a hand-back.
func (d *Delivery) Redelivered() bool {
	md, err := d.msg.Metadata()
	return err != nil || md.NumDelivered > 1
}

// maxHistory bounds a job's history, so that its state stays small.
const maxHistory = 20

// Recorded is the account Record kept; nil if none.
func (d *Delivery) Recorded() *sluicev1.Attempt { return d.record }

// Record keeps the account of this delivery's invocation; the write that
// closes the delivery (Succeed, Fail, Retry or Throttled) adds it to the
// job's history.
func (d *Delivery) Record(a *sluicev1.Attempt) { d.record = a }

// NoteThrottled keeps the account Record kept as a throttle that this
// process holds the job through, to try it again itself: the closing write
// adds it to the job's history and counts it, with no write of its own.
// A throttle is no attempt. Call it only before Begin.
func (d *Delivery) NoteThrottled() {
	if d.record != nil {
		d.throttled = append(d.throttled, d.record)
		d.record = nil
	}
}

// SaveThrottles writes the throttles NoteThrottled kept into the job's
// state now, for a job held long enough that a reader should see why. It
// returns [ErrFinished] for a job that finished meanwhile: call Skip then.
func (d *Delivery) SaveThrottles(ctx context.Context) error {
	if len(d.throttled) == 0 {
		return nil
	}
	_, err := d.change(ctx, func(j *sluicev1.Job) error {
		if Terminal(j.State) {
			return ErrFinished
		}
		j.Throttles += int32(len(d.throttled))
		j.History = append(j.History, d.throttled...)
		if n := len(j.History); n > maxHistory {
			j.History = j.History[n-maxHistory:]
		}
		return nil
	})
	if err == nil {
		d.throttled = nil
	}
	return err
}

// Begun says whether Begin was called: the job's state says RUNNING and
// counts the attempt.
func (d *Delivery) Begun() bool { return d.begun }

func (d *Delivery) addRecord(j *sluicev1.Job) {
	j.Throttles += int32(len(d.throttled))
	j.History = append(j.History, d.throttled...)
	if d.record != nil {
		j.History = append(j.History, d.record)
	}
	if n := len(j.History); n > maxHistory {
		j.History = j.History[n-maxHistory:]
	}
}

// Invoked records when the attempt started. Succeed and Fail count an
// attempt that Begin did not, with this start time.
func (d *Delivery) Invoked(at time.Time) { d.invokedAt = at }

// Begin marks the job RUNNING and counts the attempt. It returns
// [ErrFinished] for a job that already reached a terminal state: call Skip
// then.
//
// Call it only once the attempt is being sent: a job cancelled as it was
// taken up is then recorded as cancelled while running (see
// [Queue.Cancel]), and Begin returns ErrFinished.
func (d *Delivery) Begin(ctx context.Context) (*sluicev1.Job, error) {
	d.begun = true
	var amended bool
	job, err := d.change(ctx, func(j *sluicev1.Job) error {
		amended = false
		if Terminal(j.State) {
			if amended = amendCancelled(j, d.q.now()); amended {
				return nil
			}
			return ErrFinished
		}
		j.State = sluicev1.Job_RUNNING
		j.Attempts++
		j.StartTime = timestamppb.New(d.q.now())
		return nil
	})
	if err == nil && amended {
		return job, ErrFinished
	}
	return job, err
}

// amendCancelled makes a job that a cancel ended as dispatch took it up
// (cancelledTakenUp, or cancelledBeforeRun when the delivery came between
// the cancel's look and its write) say what a cancel of a running job
// says, for an attempt that was sent: counted, started at start, its
// outcome discarded. It reports whether it changed j.
func amendCancelled(j *sluicev1.Job, start time.Time) bool {
	if j.State != sluicev1.Job_CANCELLED || j.Error != cancelledTakenUp && j.Error != cancelledBeforeRun {
		return false
	}
	j.Attempts++
	j.StartTime = timestamppb.New(start)
	j.Error = cancelledRunning
	return true
}

// amendCancelledAttempt is amendCancelled for the attempt this delivery
// sent, when Begin did not record it (Begin amends on its own).
func (d *Delivery) amendCancelledAttempt(j *sluicev1.Job) bool {
	return !d.begun && !d.invokedAt.IsZero() && amendCancelled(j, d.invokedAt)
}

// Succeed stores the function's result, marks the job SUCCEEDED and removes
// it from the queue.
func (d *Delivery) Succeed(ctx context.Context, result *sluicev1.JobResult) error {
	return d.finish(ctx, func(j *sluicev1.Job) {
		j.State = sluicev1.Job_SUCCEEDED
		j.Result = result
	})
}

// Fail marks the job FAILED with the reason (and the function's response,
// if it sent one), moves it to the dead letters and removes it from the
// queue.
func (d *Delivery) Fail(ctx context.Context, reason string, result *sluicev1.JobResult) error {
	return d.finish(ctx, func(j *sluicev1.Job) {
		j.State = sluicev1.Job_FAILED
		j.Error = reason
		j.Result = result
	})
}

func (d *Delivery) finish(ctx context.Context, set func(*sluicev1.Job)) error {
	var amended bool
	write := func(keepResult bool) error {
		_, err := d.change(ctx, func(j *sluicev1.Job) error {
			amended = false
			if Terminal(j.State) {
				if amended = d.amendCancelledAttempt(j); amended {
					return nil
				}
				return ErrFinished
			}
			d.countQuickAttempt(j)
			d.addRecord(j)
			set(j)
			j.FinishTime = timestamppb.New(d.q.now())
			if deadLettered(j.State) {
				j.DeadLetterTime = j.FinishTime
			}
			if r := j.GetResult(); !keepResult && len(r.GetBody()) > 0 {
				j.Notice = fmt.Sprintf("the function's response (%d bytes) was not kept: the job-state store was full or past its high water mark", len(r.Body))
				r.Body = nil
			}
			return nil
		})
		return err
	}
	// Past the state store's high water mark, the room left is for
	// accepted jobs' outcomes, not for large responses.
	err := write(!d.q.stateTight(ctx))
	// The function has run: a state store too full for its outcome must
	// not turn into running it again (which a delivery left to come back
	// would). Keep the outcome without the response, and failing that
	// hold the delivery until the store has room (job states expire).
	for wait := stateFullFirstWait; stateFull(err); wait = min(2*wait, stateFullMaxWait) {
		if err = write(false); !stateFull(err) {
			break
		}
		d.msg.InProgress() //nolint:errcheck // at worst the job comes back after AckWait
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil && !errors.Is(err, ErrFinished) {
		// The message stays unacknowledged and comes back after AckWait.
		return err
	}
	return d.settleFinished(ctx, err == nil && !amended)
}

// How long a finished job whose state cannot be stored, the store being
// full, waits between tries.
const (
	stateFullFirstWait = 100 * time.Millisecond
	stateFullMaxWait   = 5 * time.Second
)

// stateFull says a write was refused for the store being at its limits.
func stateFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStoreFull
}

// settleFinished makes sure of what the finished job leads to (its dead
// letter, its callback) and then removes its message. written says whether
// this delivery wrote the terminal state. A message from before the job's
// last redrive is only removed: what the job leads to now is its current
// message's business.
func (d *Delivery) settleFinished(ctx context.Context, written bool) error {
	if d.stale {
		return d.ack()
	}
	if err := d.settleDone(ctx, written); err != nil {
		return err
	}
	// Its key's next job may go now: after the acknowledgement, so that
	// the job's place in the window is free meanwhile. Should this fail,
	// or the process stop first, the next settle of the key finds the
	// job finished and lets its slot go (see keyed.Gate.Settle).
	if err := d.settleKey(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrKeyNotSettled, err)
	}
	return nil
}

// ErrKeyNotSettled: a finished job's message is acknowledged, but its
// concurrency key's next job was not let go yet; a later settle of the key
// does it.
var ErrKeyNotSettled = errors.New("buffer: the job is finished, but its key's next job is not let go yet")

// settleDone makes sure of what the finished job leads to and acknowledges
// its message: the part of settleFinished that holds the job's place.
func (d *Delivery) settleDone(ctx context.Context, written bool) error {
	if d.last != nil && Terminal(d.last.job.State) {
		err := d.q.afterFinish(ctx, d.last.job, d.Payload, written)
		var full *storeFullError
		if errors.As(err, &full) {
			// A full store must not keep the job in its function's
			// window: park what is pending, and let the job go.
			err = d.park(ctx, full)
		}
		if err != nil {
			return err // the message comes back after AckWait, and this is tried again
		}
		if d.last.job.GetDeadLetterTime() != nil {
			return d.ackConfirmed(ctx)
		}
	}
	return d.ack()
}

// countQuickAttempt counts an attempt that was invoked but ended before
// Begin wrote it.
func (d *Delivery) countQuickAttempt(j *sluicev1.Job) {
	if d.begun || d.invokedAt.IsZero() {
		return
	}
	j.Attempts++
	j.StartTime = timestamppb.New(d.invokedAt)
}

// Expire ends a job that ran out of time as EXPIRED with the reason, moves
// it to the dead letters and removes it from the queue.
func (d *Delivery) Expire(ctx context.Context, reason string) error {
	return d.finish(ctx, func(j *sluicev1.Job) {
		j.State = sluicev1.Job_EXPIRED
		j.Error = reason
	})
}

// Retry hands a job whose attempt failed back to the queue, to be
// delivered again after delay at the earliest. The attempt counts; the
// job is QUEUED again with the attempt's error (and response, if any).
func (d *Delivery) Retry(ctx context.Context, reason string, result *sluicev1.JobResult, delay time.Duration) error {
	return d.handBack(ctx, func(j *sluicev1.Job) error {
		if Terminal(j.State) {
			if d.amendCancelledAttempt(j) {
				return nil
			}
			return ErrFinished
		}
		d.countQuickAttempt(j)
		d.addRecord(j)
		j.State = sluicev1.Job_QUEUED
		j.Error = reason
		j.Result = result
		return nil
	}, delay)
}

// Release hands an unfinished job back to the queue to run again at once:
// for work cut short by a shutdown. Its state returns to QUEUED.
func (d *Delivery) Release(ctx context.Context) error {
	if d.begun {
		_, err := d.change(ctx, func(j *sluicev1.Job) error {
			if Terminal(j.State) {
				return ErrFinished
			}
			j.State = sluicev1.Job_QUEUED
			return nil
		})
		if err != nil && !errors.Is(err, ErrFinished) {
			return err
		}
	}
	if err := d.msg.Nak(); err != nil {
		return fmt.Errorf("buffer: release job %s: %w", d.JobID, err)
	}
	return nil
}

// Throttled hands a job back after the platform refused it for capacity
// (429, or 503 with Retry-After): the attempt Begin counted is taken back,
// since a throttle is not a failure, and the job is delivered again after
// delay at the earliest.
func (d *Delivery) Throttled(ctx context.Context, delay time.Duration) error {
	return d.uncounted(ctx, delay, true)
}

// ProbeFailed hands a job back whose attempt was a circuit breaker's probe
// and failed: that the function is still down is no fault of the job's, so
// the attempt is not counted. It is delivered again after delay at the
// earliest.
func (d *Delivery) ProbeFailed(ctx context.Context, delay time.Duration) error {
	return d.uncounted(ctx, delay, false)
}

func (d *Delivery) uncounted(ctx context.Context, delay time.Duration, throttle bool) error {
	return d.handBack(ctx, func(j *sluicev1.Job) error {
		if Terminal(j.State) {
			if !throttle && d.amendCancelledAttempt(j) {
				return nil // a probe's attempt was sent: the function ran it
			}
			return ErrFinished
		}
		j.State = sluicev1.Job_QUEUED
		if d.begun && j.Attempts > 0 {
			j.Attempts--
		}
		if throttle {
			j.Throttles++
		}
		d.addRecord(j)
		return nil
	}, delay)
}

// handBack writes change to the job's state and hands its message back, to
// be delivered again after delay at the earliest; a job found finished
// meanwhile is settled instead.
func (d *Delivery) handBack(ctx context.Context, change func(*sluicev1.Job) error, delay time.Duration) error {
	_, err := d.change(ctx, change)
	if errors.Is(err, ErrFinished) || err == nil && Terminal(d.last.job.State) {
		// Finished meanwhile (and perhaps amended by change): nothing to
		// hand back.
		return d.settleFinished(ctx, false)
	}
	if err != nil {
		return err
	}
	if err := d.msg.NakWithDelay(delay); err != nil {
		return fmt.Errorf("buffer: hand back job %s: %w", d.JobID, err)
	}
	return nil
}

// Defer hands a job back untouched, to be delivered again after delay at
// the earliest: for a job that cannot start yet.
func (d *Delivery) Defer(delay time.Duration) error {
	if err := d.msg.NakWithDelay(delay); err != nil {
		return fmt.Errorf("buffer: defer job %s: %w", d.JobID, err)
	}
	return nil
}

// Skip removes a job that is already finished from the queue, once what
// its finish leads to (dead letter, callback) is surely stored.
func (d *Delivery) Skip(ctx context.Context) error { return d.settleFinished(ctx, false) }

// ack removes the job's message. It does not wait for the server's
// confirmation: a lost ack only brings the finished job back, and Prepare
// then reports ErrFinished.
func (d *Delivery) ack() error {
	if err := d.msg.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return fmt.Errorf("buffer: ack job %s: %w", d.JobID, err)
	}
	return nil
}

// ackConfirmed removes the message of a dead-lettered job and waits for the
// server to confirm it. A dead-lettered job can be redriven at any moment;
// should the ack be lost all the same, the message comes back, and Prepare
// finds it older than the redrive (or the job still dead-lettered) and it
// is only removed. An unconfirmed ack is an error: the message comes back
// after AckWait and is settled again.
func (d *Delivery) ackConfirmed(ctx context.Context) error {
	if err := d.msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return fmt.Errorf("buffer: ack dead-lettered job %s: %w", d.JobID, err)
	}
	return nil
}

// atomicDuration is a time.Duration safe for concurrent use.
type atomicDuration struct{ v atomic.Int64 }

func (d *atomicDuration) Load() time.Duration   { return time.Duration(d.v.Load()) }
func (d *atomicDuration) Store(v time.Duration) { d.v.Store(int64(v)) }
