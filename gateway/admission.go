package gateway

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

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
	// holds across gateway processes; for a tenant, in each process (it
	// counts the tenant's jobs this process accepted and has not seen
	// finish). Zero for no limit.
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
	at    time.Time
	load  buffer.Load
	err   error
	added int
}

// reserve returns the function's queued jobs (read at most loadTTL ago,
// plus those admitted since) and counts one more, if queued is below
// limit (0: no limit); ok false when it is not.
func (a *admission) reserve(ctx context.Context, d Dispatch, function string, limit int64, now time.Time) (load buffer.Load, queued int64, ok bool, err error) {
	c := a.cachedLoad(function)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refresh(ctx, d, function, now); err != nil {
		return c.load, 0, true, err
	}
	queued = int64(c.load.Backlog + c.load.InFlight + c.added)
	if limit > 0 && queued >= limit {
		return c.load, queued, false, nil
	}
	c.added++
	return c.load, queued, true, nil
}

// load returns the function's load, read at most loadTTL ago, its backlog
// counting the jobs this process admitted since.
func (a *admission) load(ctx context.Context, d Dispatch, function string, now time.Time) (buffer.Load, error) {
	c := a.cachedLoad(function)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refresh(ctx, d, function, now); err != nil {
		return buffer.Load{}, err
	}
	load := c.load
	load.Backlog += c.added
	return load, nil
}

func (a *admission) cachedLoad(function string) *cachedLoad {
	v, _ := a.loads.LoadOrStore(function, new(cachedLoad))
	return v.(*cachedLoad)
}

// refresh reads the load again once it is loadTTL old. c.mu is held.
func (c *cachedLoad) refresh(ctx context.Context, d Dispatch, function string, now time.Time) error {
	if now.Sub(c.at) > loadTTL {
		c.load, c.err = d.FunctionLoad(ctx, function)
		c.at, c.added = now, 0
	}
	if c.err != nil {
		c.at = time.Time{} // ask again next time: dispatch may be starting up
	}
	return c.err
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
// has not yet seen finish. It is safe for concurrent use.
type tenantCounts struct {
	mu    sync.Mutex
	jobs  map[string]string // job ID → tenant
	count map[string]int64
}

func (tc *tenantCounts) queued(tenant string) int64 {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.count[tenant]
}

func (tc *tenantCounts) accepted(id, tenant string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.jobs == nil {
		tc.jobs, tc.count = make(map[string]string), make(map[string]int64)
	}
	if _, ok := tc.jobs[id]; !ok {
		tc.jobs[id] = tenant
		tc.count[tenant]++
	}
}

func (tc *tenantCounts) finished(id string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tenant, ok := tc.jobs[id]; ok {
		delete(tc.jobs, id)
		tc.count[tenant]--
	}
}

// observe feeds a job state written by any process to the drain meter and
// the tenants' counts.
func (a *admission) observe(job *sluicev1.Job) {
	if !buffer.Terminal(job.GetState()) {
		return
	}
	a.tenantQueued.finished(job.GetId())
	// A later write to a finished job (its dead letter discarded, say) is
	// not another finish.
	if t := job.GetFinishTime().AsTime(); time.Since(t) < 10*time.Second {
		a.drain.finished(job.GetFunction(), t)
	}
}

// admit decides whether a job for f from the request's tenant may be
// stored now, and when it would start. It returns a status error for a
// refusal.
func (s *Service) admit(ctx context.Context, f Function) (estimatedStart time.Time, err error) {
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
		return time.Time{}, overLimit(wait, "over the submit rate limit of %s", who)
	}
	if t != nil && t.Ingress.MaxQueued > 0 {
		if n := a.tenantQueued.queued(t.Name); n >= t.Ingress.MaxQueued {
			return time.Time{}, overLimit(a.retryAfterFor(f.Name, n-t.Ingress.MaxQueued+1, now),
				"tenant %q has %d jobs queued, its limit", t.Name, n)
		}
	}
	if s.dispatch == nil {
		return time.Time{}, nil
	}
	load, queued, ok, err := a.reserve(ctx, s.dispatch, f.Name, f.Ingress.MaxQueued, now)
	if err != nil {
		// Before dispatch has started for the function there is no load
		// to judge by; admission must not fail submits for it.
		return time.Time{}, nil //nolint:nilerr // see above
	}
	if !ok {
		return time.Time{}, overLimit(a.retryAfterFor(f.Name, queued-f.Ingress.MaxQueued+1, now),
			"function %q has %d jobs queued, its limit", f.Name, queued)
	}
	r := a.drain.rate(f.Name, now)
	if r <= 0 {
		return time.Time{}, nil
	}
	waiting := queued - int64(load.InFlight)
	wait := time.Duration(float64(max(waiting, 0)) / r * float64(time.Second))
	if f.MaxAge > 0 && wait > f.MaxAge {
		return time.Time{}, overLimit(wait-f.MaxAge,
			"function %q has %d jobs waiting, draining at %.1f/s: a job submitted now would not start within its max age of %s",
			f.Name, waiting, r, f.MaxAge)
	}
	return now.Add(wait), nil
}
