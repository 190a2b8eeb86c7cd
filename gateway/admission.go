package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// Ingress limits submits, to a function or from a tenant. The zero value
// limits nothing.
type Ingress struct {
	// PerSecond is the most submits per second, in each gateway process;
	// zero for no limit.
	PerSecond float64
	// Burst is how many submits may come at once. Zero means
	// ceil(PerSecond).
	Burst int
	// MaxQueued is the most jobs waiting or running. For a function it
	// holds across gateway processes (while its backlog cannot be read for
	// more than maxLoadAge, its submits are refused with UNAVAILABLE); for
	// a tenant, in each process (it counts the tenant's jobs this process
	// accepted and has not seen finish). Zero for no limit.
	MaxQueued int64
}

func (in Ingress) limiter() *rate.Limiter {
	if in.PerSecond <= 0 {
		return nil
	}
	burst := in.Burst
	if burst <= 0 {
		burst = int(math.Ceil(in.PerSecond))
	}
	return rate.NewLimiter(rate.Limit(in.PerSecond), burst)
}

// Bounds on the Retry-After that admission answers with.
const (
	minRetryAfter = time.Second
	maxRetryAfter = 5 * time.Minute
	// unknownDrainRetryAfter is the Retry-After when nothing has been seen
	// to drain yet.
	unknownDrainRetryAfter = 10 * time.Second
	// loadTTL is how stale a function's cached backlog may be.
	loadTTL = 250 * time.Millisecond
	// maxLoadAge is how stale it may be while it cannot be read (JetStream
	// slow to answer, a leader election): the last load read, plus the
	// submits admitted since, still enforces max_queued. Past it a function
	// with max_queued refuses submits with 503 until the load reads again.
	maxLoadAge = 5 * time.Second
	// drainWindow is how far back the drain rate looks.
	drainWindow = 30 * time.Second
)

// admission decides whether a submit may be stored now: rate limits, queue
// quotas, and whether the job could start within its max age. It is safe
// for concurrent use.
type admission struct {
	fnLimiters     map[string]*rate.Limiter // by function; absent: no limit
	tenantLimiters map[string]*rate.Limiter // by tenant
	drain          drainMeter
	loads          sync.Map // function → *cachedLoad
	tenantQueued   tenantCounts
}

// takeTokens takes one token from each limiter, or none: when any of them
// has none to give now, it puts back what it took and says how long until
// all would.
func takeTokens(now time.Time, limiters ...*rate.Limiter) (wait time.Duration, ok bool) {
	var taken []*rate.Reservation
	for _, l := range limiters {
		if l == nil {
			continue
		}
		r := l.ReserveN(now, 1)
		if !r.OK() {
			wait = maxRetryAfter
		} else {
			taken = append(taken, r)
			wait = max(wait, r.DelayFrom(now))
		}
	}
	if wait == 0 {
		return 0, true
	}
	for _, r := range taken {
		r.CancelAt(now)
	}
	return wait, false
}

// cachedLoad is a function's backlog as last read, so that a submit does
// not cost a round trip to the server each, plus the jobs this process
// admitted since, which the read could not count yet.
type cachedLoad struct {
	mu    sync.Mutex
	tried time.Time   // when the load was last asked for
	read  time.Time   // when it was last read; zero: never
	load  buffer.Load // as last read
	// started: dispatch has started for the function, so load is its
	// consumer's; before, load is empty and added counts every job this
	// process admitted.
	started bool
	added   int   // jobs admitted since load was read
	failed  error // why the last read failed; nil if it did not
}

// errLoadUnknown: the function's load could not be read within maxLoadAge.
var errLoadUnknown = errors.New("gateway: function load unknown")

// reserve returns the function's queued jobs (read at most loadTTL ago,
// or maxLoadAge while reads fail, plus those admitted since) and counts one
// more, if queued is below limit (0: no limit); ok false when it is not.
// It returns errLoadUnknown when no read succeeded within maxLoadAge.
func (a *admission) reserve(ctx context.Context, d Dispatch, function string, limit int64, now time.Time) (load buffer.Load, queued int64, ok bool, err error) {
	c := a.cachedLoad(function)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refresh(ctx, d, function, now); err != nil {
		return buffer.Load{}, 0, false, err
	}
	queued = int64(c.load.Backlog + c.load.InFlight + c.added)
	if limit > 0 && queued >= limit {
		return c.load, queued, false, nil
	}
	c.added++
	return c.load, queued, true, nil
}

// load returns the function's load, read at most loadTTL ago (maxLoadAge
// while reads fail), its backlog counting the jobs this process admitted
// since, and whether dispatch has started for it.
func (a *admission) load(ctx context.Context, d Dispatch, function string, now time.Time) (buffer.Load, bool, error) {
	c := a.cachedLoad(function)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refresh(ctx, d, function, now); err != nil {
		return buffer.Load{}, false, err
	}
	load := c.load
	load.Backlog += c.added
	return load, c.started, nil
}

func (a *admission) cachedLoad(function string) *cachedLoad {
	v, _ := a.loads.LoadOrStore(function, new(cachedLoad))
	return v.(*cachedLoad)
}

// refresh reads the load again once it is loadTTL old; while reads fail it
// asks again every loadTTL, keeping the last load read (and counting the
// jobs admitted since) for up to maxLoadAge, then returns errLoadUnknown.
// c.mu is held.
func (c *cachedLoad) refresh(ctx context.Context, d Dispatch, function string, now time.Time) error {
	if now.Sub(c.tried) > loadTTL {
		c.tried = now
		load, err := d.FunctionLoad(ctx, function)
		c.failed = err
		switch {
		case err == nil:
			c.load, c.read, c.started, c.added = load, now, true, 0
		case errors.Is(err, buffer.ErrNotFound):
			// No consumer yet: nothing has been dispatched, so every job
			// admitted is still queued. Count them from here on.
			if c.started || c.read.IsZero() {
				c.load, c.started, c.added = buffer.Load{}, false, 0
			}
			c.read, c.failed = now, nil
		}
	}
	if now.Sub(c.read) > maxLoadAge {
		return fmt.Errorf("%w: %w", errLoadUnknown, c.failed)
	}
	return nil
}

// retryAfterFor is how long until n jobs of the function have drained, at
// the rate seen lately.
func (a *admission) retryAfterFor(function string, n int64, now time.Time) time.Duration {
	r := a.drain.rate(function, now)
	if r <= 0 {
		return unknownDrainRetryAfter
	}
	return time.Duration(float64(max(n, 1)) / r * float64(time.Second))
}

// drainMeter counts finished jobs per function per second, over the last
// drainWindow. It is safe for concurrent use.
type drainMeter struct {
	mu sync.Mutex
	by map[string]*drainCounts
}

type drainCounts struct {
	first   time.Time                              // the first finish seen
	buckets [int(drainWindow / time.Second)]uint32 // finishes by second, modulo the window
	stamp   [int(drainWindow / time.Second)]int64  // the unix second each bucket counts
}

// finished records that a job of the function finished at t.
func (m *drainMeter) finished(function string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.by == nil {
		m.by = make(map[string]*drainCounts)
	}
	c := m.by[function]
	if c == nil {
		c = &drainCounts{first: t}
		m.by[function] = c
	}
	sec := t.Unix()
	i := int(sec % int64(len(c.buckets)))
	if c.stamp[i] != sec {
		c.stamp[i], c.buckets[i] = sec, 0
	}
	c.buckets[i]++
}

// rate is the function's finishes per second lately; 0 when none were seen.
func (m *drainMeter) rate(function string, now time.Time) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.by[function]
	if c == nil {
		return 0
	}
	sec := now.Unix()
	var n uint32
	for i, s := range c.stamp {
		if sec-s < int64(len(c.buckets)) && s <= sec {
			n += c.buckets[i]
		}
	}
	span := min(now.Sub(c.first), drainWindow)
	return float64(n) / max(span.Seconds(), 1)
}

// tenantCounts counts, per tenant, the jobs this process accepted that it
// has not yet seen finish, and its submits in flight. A submit takes its
// place (reserve) before its job is stored, so that submits at once cannot
// pass the limit together, and gives it back if the job was not stored or
// binds it to the job's ID if it was. A job can finish before the submit
// that stored it returns (dispatch pulls it as soon as JetStream has it):
// finishes of a tenant's jobs not counted yet are kept while that tenant
// has submits in flight that began before them, so that the place is
// given back when the submit binds it. It is safe for concurrent use.
type tenantCounts struct {
	mu   sync.Mutex
	jobs map[string]string // job ID → tenant: accepted, not seen finish
	by   map[string]*tenantCount
}

// tenantCount is one tenant's count.
type tenantCount struct {
	n int64 // jobs accepted and not seen finish, plus submits in flight
	// seq numbers the finishes kept in ended: the latest one's.
	seq uint64
	// inFlight counts the submits in flight by the seq when they began.
	inFlight map[uint64]int
	// ended are jobs seen finish that were not counted, while submits
	// were in flight, by ID: the seq of the finish; endedOrder is them in
	// that order, to drop once no submit that began before them is in
	// flight.
	ended      map[string]uint64
	endedOrder []endedJob
}

type endedJob struct {
	id  string
	seq uint64
}

// reservation is a submit's place in its tenant's count.
type reservation struct {
	tenant string
	began  uint64 // the tenant's seq when the submit began
}

// reserve takes a place for a submit of the tenant if it has fewer than
// limit jobs queued; queued is how many it has.
func (tc *tenantCounts) reserve(tenant string, limit int64) (r reservation, queued int64, ok bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.by == nil {
		tc.jobs, tc.by = make(map[string]string), make(map[string]*tenantCount)
	}
	c := tc.by[tenant]
	if c == nil {
		c = &tenantCount{inFlight: make(map[uint64]int), ended: make(map[string]uint64)}
		tc.by[tenant] = c
	}
	if c.n >= limit {
		return reservation{}, c.n, false
	}
	c.n++
	c.inFlight[c.seq]++
	return reservation{tenant: tenant, began: c.seq}, c.n - 1, true
}

// cancel gives back the place of a submit that stored no job (or
// returned one another submit stored).
func (tc *tenantCounts) cancel(r reservation) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	c := tc.by[r.tenant]
	c.n--
	c.done(r.began)
}

// accepted binds a submit's place to the job it stored; if the job has
// already been seen finish, it gives the place back.
func (tc *tenantCounts) accepted(r reservation, id string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	c := tc.by[r.tenant]
	if _, ended := c.ended[id]; ended {
		delete(c.ended, id)
		c.n--
	} else if _, dup := tc.jobs[id]; dup {
		c.n-- // counted already (not expected: a new job's ID is new)
	} else {
		tc.jobs[id] = r.tenant
	}
	c.done(r.began)
}

// done ends a submit in flight that began at seq, and drops the finishes
// no submit in flight can be waiting to bind.
func (c *tenantCount) done(began uint64) {
	if c.inFlight[began]--; c.inFlight[began] > 0 {
		return
	}
	delete(c.inFlight, began)
	if len(c.inFlight) == 0 {
		clear(c.ended)
		c.endedOrder = c.endedOrder[:0]
		return
	}
	oldest := uint64(math.MaxUint64)
	for b := range c.inFlight {
		oldest = min(oldest, b)
	}
	// A submit that began at b can bind only jobs whose finish came after
	// it: seq > b.
	n := 0
	for n < len(c.endedOrder) && c.endedOrder[n].seq <= oldest {
		if e := c.endedOrder[n]; c.ended[e.id] == e.seq {
			delete(c.ended, e.id)
		}
		n++
	}
	c.endedOrder = c.endedOrder[n:]
}

// finished records that the job, the tenant's, finished.
func (tc *tenantCounts) finished(id, tenant string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if t, ok := tc.jobs[id]; ok {
		delete(tc.jobs, id)
		tc.by[t].n--
		return
	}
	if c := tc.by[tenant]; c != nil && len(c.inFlight) > 0 {
		if _, seen := c.ended[id]; !seen {
			c.seq++
			c.ended[id] = c.seq
			c.endedOrder = append(c.endedOrder, endedJob{id, c.seq})
		}
	}
}

// queued is how many jobs the tenant has queued, submits in flight
// included.
func (tc *tenantCounts) queued(tenant string) int64 {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if c := tc.by[tenant]; c != nil {
		return c.n
	}
	return 0
}

// observe feeds a job state written by any process to the drain meter and
// the tenants' counts.
func (a *admission) observe(job *sluicev1.Job) {
	if !buffer.Terminal(job.GetState()) {
		return
	}
	a.tenantQueued.finished(job.GetId(), job.GetTenant())
	// A later write to a finished job (its dead letter discarded, say) is
	// not another finish.
	if t := job.GetFinishTime().AsTime(); time.Since(t) < 10*time.Second {
		a.drain.finished(job.GetFunction(), t)
	}
}

// admit decides whether a job for f from the request's tenant may be
// stored now, and when it would start. It returns a status error for a
// refusal. When the tenant has a max_queued, slot is the place the job
// takes in its count: the caller must give it to [tenantCounts.accepted]
// or [tenantCounts.cancel].
func (s *Service) admit(ctx context.Context, f Function) (estimatedStart time.Time, slot *reservation, err error) {
	a := s.admission
	now := time.Now()
	t := tenantOf(ctx)
	var tenantLimiter *rate.Limiter
	if t != nil {
		tenantLimiter = a.tenantLimiters[t.Name]
	}
	if wait, ok := takeTokens(now, a.fnLimiters[f.Name], tenantLimiter); !ok {
		who := fmt.Sprintf("function %q", f.Name)
		if tenantLimiter != nil && a.fnLimiters[f.Name] == nil {
			who = fmt.Sprintf("tenant %q", t.Name)
		}
		return time.Time{}, nil, overLimit(wait, "over the submit rate limit of %s", who)
	}
	// Counted only for a tenant with a limit: the count's memory is then
	// bounded by the limit, and no other tenant's jobs cost anything.
	if t != nil && t.Ingress.MaxQueued > 0 {
		r, n, ok := a.tenantQueued.reserve(t.Name, t.Ingress.MaxQueued)
		if !ok {
			return time.Time{}, nil, overLimit(a.retryAfterFor(f.Name, n-t.Ingress.MaxQueued+1, now),
				"tenant %q has %d jobs queued, its limit", t.Name, n)
		}
		slot = &r
		defer func() {
			if err != nil {
				a.tenantQueued.cancel(r)
				slot = nil
			}
		}()
	}
	if s.dispatch == nil {
		return time.Time{}, slot, nil
	}
	load, queued, ok, err := a.reserve(ctx, s.dispatch, f.Name, f.Ingress.MaxQueued, now)
	switch {
	case err != nil && f.Ingress.MaxQueued > 0:
		// Admitting without knowing the backlog would let max_queued be
		// passed without limit; the function can wait a moment.
		s.log.WarnContext(ctx, "submit refused: the function's backlog cannot be read", "function", f.Name, "err", err)
		return time.Time{}, nil, withDetails(codes.Unavailable,
			fmt.Sprintf("the backlog of function %q cannot be read now, and it has a max_queued limit; retry later", f.Name),
			&errdetails.RetryInfo{RetryDelay: durationpb.New(minRetryAfter)})
	case err != nil:
		// No limit to enforce, and no estimate to give.
		return time.Time{}, slot, nil
	case !ok:
		return time.Time{}, nil, overLimit(a.retryAfterFor(f.Name, queued-f.Ingress.MaxQueued+1, now),
			"function %q has %d jobs queued, its limit", f.Name, queued)
	}
	r := a.drain.rate(f.Name, now)
	if r <= 0 {
		return time.Time{}, slot, nil
	}
	waiting := queued - int64(load.InFlight)
	wait := time.Duration(float64(max(waiting, 0)) / r * float64(time.Second))
	if f.MaxAge > 0 && wait > f.MaxAge {
		return time.Time{}, nil, overLimit(wait-f.MaxAge,
			"function %q has %d jobs waiting, draining at %.1f/s: a job submitted now would not start within its max age of %s",
			f.Name, waiting, r, f.MaxAge)
	}
	return now.Add(wait), slot, nil
}
