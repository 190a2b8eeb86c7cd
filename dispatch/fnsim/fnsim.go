// Package fnsim simulates a serverless platform serving one function, for
// tests, benchmarks and the quickstart. It models what makes bursts hurt:
//
//   - execution environments, each serving one invocation at a time;
//   - a concurrency limit on environments, above which requests get 429;
//   - a scaling rate: InitialBurst environments may exist at once; from the
//     moment they are all busy, ScalePerMinute more are allowed per minute
//     until nothing has run for a second (AWS Lambda's burst-then-ramp);
//   - cold starts: a new environment spends ColdStart before its first
//     invocation;
//   - idle reaping: an environment idle for IdleReap is torn down, so a later
//     burst meets cold starts and the scaling limit again;
//   - a schedule: the concurrency limit may change over time, measured from
//     the first invocation request, as when other functions of the account
//     take or give back their share of it;
//   - a rate limit: requests beyond RatePerSecond (a token bucket) get 429
//     whatever the concurrency, as API gateways and function URLs answer;
//   - an outage: for its first DownFor it answers every invocation 503
//     without Retry-After, as a broken deployment behind a load balancer.
//
// A request above the current capacity is answered 429 with Retry-After,
// as AWS Lambda answers TooManyRequestsException, or without it if
// OmitRetryAfter is set. Every response carries Fnsim-Cold-Start: true or
// false. Stats count what the platform saw.
package fnsim

import (
	"cmp"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// HeaderColdStart is set to "true" on responses from an invocation that
// started a new environment, "false" otherwise.
const HeaderColdStart = "Fnsim-Cold-Start"

// HeaderWarmup marks a keep-warm ping: it occupies an environment (starting
// one if needed) but runs no handler and is not counted as an invocation.
const HeaderWarmup = "Sluice-Warmup"

// Config describes the simulated platform and function. The zero value
// echoes at once, never throttles and has no cold starts.
type Config struct {
	// Concurrency is the most invocations in flight, so the most
	// environments that are started for them, until the first step of
	// Schedule. Zero means no limit.
	Concurrency int
	// Schedule changes the concurrency limit over time: from each step's
	// After, measured from the platform's first invocation request (not
	// from New, so a benchmark's submit phase does not shift it), the
	// limit is the step's Concurrency. New sorts the steps by After. A
	// falling limit stops no invocation: it refuses new ones while as many
	// as the new limit are in flight, however many environments are idle.
	// A rising one lets new environments start, within ScalePerMinute.
	// Nil: Concurrency throughout.
	Schedule []Step
	// InitialBurst is how many environments may exist before scaling
	// limits apply. Zero means the concurrency limit in force (no ramp).
	InitialBurst int
	// ScalePerMinute is how many environments are added per minute beyond
	// InitialBurst once all are busy, while any is. Zero means no limit.
	ScalePerMinute int
	// ColdStart is the start-up time of a new environment.
	ColdStart time.Duration
	// IdleReap tears down an environment idle this long. Zero: never.
	IdleReap time.Duration
	// Duration is the handler's run time per invocation.
	Duration time.Duration
	// Jitter spreads Duration uniformly over ±Jitter.
	Jitter time.Duration
	// ErrorRate is the fraction of invocations answered 500, in [0, 1].
	ErrorRate float64
	// RatePerSecond limits requests per second with a token bucket that
	// starts full: a request that finds no token gets 429, whatever the
	// concurrency. A request refused for concurrency has still spent its
	// token. Zero means no rate limit.
	RatePerSecond float64
	// RateBurst is the token bucket's size. Zero means a tenth of a
	// second's worth of RatePerSecond, at least 1.
	RateBurst int
	// RetryAfter is the Retry-After sent with a 429, rounded up to whole
	// seconds. Zero means 1s.
	RetryAfter time.Duration
	// OmitRetryAfter sends 429s without Retry-After, as function URLs and
	// API gateways often do. False: every 429 carries RetryAfter.
	OmitRetryAfter bool
	// MaxPayload bounds the request body it reads. Zero means 8 MiB.
	MaxPayload int64
	// DownFor answers every invocation 503 (no Retry-After: a failure, not
	// a throttle) until this long after New.
	DownFor time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Step is one change of the concurrency limit in [Config.Schedule].
type Step struct {
	// After is when the step takes effect, measured from the platform's
	// first invocation request.
	After time.Duration
	// Concurrency is the limit from then on. Zero means no limit.
	Concurrency int
}

// Stats is what the platform has seen so far.
type Stats struct {
	// Invocations counts invocations that ran the handler.
	Invocations int `json:"invocations"`
	// Errors counts invocations answered 500 by ErrorRate.
	Errors int `json:"errors"`
	// Throttled counts requests answered 429, for concurrency or rate.
	Throttled int `json:"throttled"`
	// RateLimited counts the requests of Throttled that found no token
	// under RatePerSecond.
	RateLimited int `json:"rate_limited"`
	// Unavailable counts invocations answered 503 during DownFor.
	Unavailable int `json:"unavailable"`
	// ColdStarts counts environments started.
	ColdStarts int `json:"cold_starts"`
	// Warmups counts keep-warm pings.
	Warmups int `json:"warmups"`
	// InFlight is the number of requests being served now.
	InFlight int `json:"in_flight"`
	// MaxConcurrent is the most requests served at once.
	MaxConcurrent int `json:"max_concurrent"`
	// MaxStartsPerSecond is the most invocations admitted (the handler
	// ran; keep-warm pings do not count) in any one-second sliding window.
	MaxStartsPerSecond int `json:"max_starts_per_second"`
	// Environments is the number of environments alive now.
	Environments int `json:"environments"`
	// Limit is the concurrency limit in force now; 0 means none.
	Limit int `json:"limit"`
	// TimeToUse is how long after the most recent rise of the limit (a
	// step of Schedule) the requests in flight first exceeded the limit
	// before it: how soon the caller used the new capacity. Zero while
	// there was no rise or it is not used yet. In JSON, nanoseconds.
	TimeToUse time.Duration `json:"time_to_use_ns"`
}

// warmupHold is how long a keep-warm ping occupies its environment.
const warmupHold = 50 * time.Millisecond

// scalingStopsAfter is how long no environment may be busy before the
// platform stops scaling; a gap between invocations does not stop it.
const scalingStopsAfter = time.Second

// Function is the simulated platform. It is safe for concurrent use.
type Function struct {
	cfg     Config
	started time.Time

	mu        sync.Mutex
	stats     Stats
	idle      []time.Time // idle environments, by when each went idle
	busy      int         // environments serving a request
	scaling   time.Time   // when the environments first were all busy; zero while not scaling
	base      int         // environments allowed when scaling started
	idleSince time.Time   // when the last busy environment went idle
	jobs      map[string]int
	first     time.Time       // the first invocation request; zero before it
	limiter   *rate.Limiter   // RatePerSecond; nil without
	starts    []time.Time     // admitted invocations of the last second, oldest first
	used      []time.Duration // per step of Schedule: its TimeToUse; negative while not used
}

var _ http.Handler = (*Function)(nil)

// New returns a simulated platform.
func New(cfg Config) *Function {
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = 8 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Schedule = slices.Clone(cfg.Schedule)
	slices.SortStableFunc(cfg.Schedule, func(a, b Step) int { return cmp.Compare(a.After, b.After) })
	f := &Function{cfg: cfg, started: cfg.Now(), jobs: make(map[string]int), used: make([]time.Duration, len(cfg.Schedule))}
	for i := range f.used {
		f.used[i] = -1
	}
	if cfg.RatePerSecond > 0 {
		burst := cfg.RateBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(cfg.RatePerSecond/10)))
		}
		f.limiter = rate.NewLimiter(rate.Limit(cfg.RatePerSecond), burst)
	}
	return f
}

// ServeHTTP serves GET /stats with the Stats as JSON, and treats any other
// request as an invocation.
func (f *Function) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/stats" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(f.Stats()) //nolint:errcheck // the caller may have gone
		return
	}
	if now := f.cfg.Now(); f.cfg.DownFor > 0 && now.Sub(f.started) < f.cfg.DownFor {
		f.mu.Lock()
		f.arrived(now)
		f.stats.Unavailable++
		f.mu.Unlock()
		http.Error(w, "simulated outage", http.StatusServiceUnavailable)
		return
	}
	warmup := r.Header.Get(HeaderWarmup) == "1"
	cold, ok := f.acquire(warmup)
	if !ok {
		if !f.cfg.OmitRetryAfter {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.cfg.RetryAfter.Seconds()))))
		}
		http.Error(w, "Rate Exceeded.", http.StatusTooManyRequests)
		return
	}
	defer f.release()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, f.cfg.MaxPayload))
	if err != nil {
		http.Error(w, "cannot read payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	wait := f.handlerDuration()
	if cold {
		wait += f.cfg.ColdStart
	}
	if warmup {
		// A ping holds its environment briefly, as the handlers of warm-up
		// tools do, so that concurrent pings land on distinct environments.
		wait = warmupHold
		if cold {
			wait += f.cfg.ColdStart
		}
	}
	if !sleep(r, wait) {
		return
	}
	w.Header().Set(HeaderColdStart, strconv.FormatBool(cold))
	if warmup {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	f.mu.Lock()
	f.stats.Invocations++
	if id := r.Header.Get("Sluice-Job-Id"); id != "" {
		f.jobs[id]++
	}
	failed := f.cfg.ErrorRate > 0 && rand.Float64() < f.cfg.ErrorRate
	if failed {
		f.stats.Errors++
	}
	f.mu.Unlock()
	if failed {
		http.Error(w, "simulated function error", http.StatusInternalServerError)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Write(body) //nolint:errcheck // the caller may have gone; nothing to do
}

func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (f *Function) handlerDuration() time.Duration {
	d := f.cfg.Duration
	if f.cfg.Jitter > 0 {
		d += time.Duration(rand.Int64N(int64(2*f.cfg.Jitter+1))) - f.cfg.Jitter
	}
	return max(d, 0)
}

// acquire finds an environment for a request: an idle one (warm), a new
// one within capacity (cold), or none (throttle). Above the rate limit, or
// with as many in flight as the concurrency limit, it finds none.
func (f *Function) acquire(warmup bool) (cold, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.Now()
	f.arrived(now)
	f.reap(now)
	if f.busy == 0 && !f.scaling.IsZero() && now.Sub(f.idleSince) >= scalingStopsAfter {
		f.scaling = time.Time{} // nothing ran for a while: scaling stops
	}
	if f.limiter != nil && !f.limiter.AllowN(now, 1) {
		f.stats.Throttled++
		f.stats.RateLimited++
		return false, false
	}
	limit := f.limit(now)
	switch {
	case limit > 0 && f.busy >= limit:
		// However many environments are idle: the limit may have fallen.
		f.stats.Throttled++
		return false, false
	case len(f.idle) > 0:
		f.idle = f.idle[:len(f.idle)-1] // the most recently used: warmest
	case f.busy+len(f.idle) < f.allowed(now, limit):
		cold = true
		f.stats.ColdStarts++
	default:
		f.stats.Throttled++
		return false, false
	}
	f.busy++
	if f.cfg.ScalePerMinute > 0 && f.scaling.IsZero() && len(f.idle) == 0 && f.busy >= f.allowed(now, limit) {
		// Every environment allowed is busy: scaling starts.
		f.scaling, f.base = now, f.busy
	}
	if warmup {
		f.stats.Warmups++
	}
	f.stats.InFlight++
	f.stats.MaxConcurrent = max(f.stats.MaxConcurrent, f.stats.InFlight)
	if !warmup {
		f.admitted(now)
	}
	f.noteUse(now)
	return cold, true
}

// arrived notes an invocation request: the first one starts the Schedule.
// f.mu must be held.
func (f *Function) arrived(now time.Time) {
	if f.first.IsZero() {
		f.first = now
	}
}

// step is the index in the Schedule of the step in force at now; -1
// before the first.
func (f *Function) step(now time.Time) int {
	if f.first.IsZero() {
		return -1
	}
	since := now.Sub(f.first)
	i := -1
	for i+1 < len(f.cfg.Schedule) && f.cfg.Schedule[i+1].After <= since {
		i++
	}
	return i
}

// limitOf is the concurrency limit while step i (-1: none yet) is in force.
func (f *Function) limitOf(i int) int {
	if i < 0 {
		return f.cfg.Concurrency
	}
	return f.cfg.Schedule[i].Concurrency
}

// limit is the concurrency limit in force at now; 0 means none.
func (f *Function) limit(now time.Time) int { return f.limitOf(f.step(now)) }

// rose reports whether step i raised the limit, and the limit before it.
func (f *Function) rose(i int) (before int, ok bool) {
	before, after := f.limitOf(i-1), f.limitOf(i)
	return before, before > 0 && (after == 0 || after > before)
}

// noteUse records, for a step that raised the limit, when the requests in
// flight first exceeded the limit before it. f.mu must be held.
func (f *Function) noteUse(now time.Time) {
	i := f.step(now)
	if i < 0 || f.used[i] >= 0 {
		return
	}
	if before, ok := f.rose(i); ok && f.stats.InFlight > before {
		f.used[i] = now.Sub(f.first.Add(f.cfg.Schedule[i].After))
	}
}

// admitted counts an invocation start towards MaxStartsPerSecond: the
// starts of the one second up to now. f.mu must be held.
func (f *Function) admitted(now time.Time) {
	cut := now.Add(-time.Second)
	old := 0
	for old < len(f.starts) && !f.starts[old].After(cut) {
		old++
	}
	f.starts = append(f.starts[old:], now)
	f.stats.MaxStartsPerSecond = max(f.stats.MaxStartsPerSecond, len(f.starts))
}

// allowed is how many environments may exist now under limit (0: none):
// the burst (or as many as are alive, if more) plus ScalePerMinute for
// each minute of scaling, never more than limit.
func (f *Function) allowed(now time.Time, limit int) int {
	if limit == 0 {
		return math.MaxInt
	}
	if f.cfg.ScalePerMinute == 0 {
		return limit
	}
	if f.scaling.IsZero() {
		burst := f.cfg.InitialBurst
		if burst == 0 {
			burst = limit
		}
		return min(limit, max(burst, f.busy+len(f.idle)))
	}
	grown := int(now.Sub(f.scaling).Minutes() * float64(f.cfg.ScalePerMinute))
	return min(limit, f.base+grown)
}

func (f *Function) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.busy--
	if f.busy == 0 {
		f.idleSince = f.cfg.Now()
	}
	f.stats.InFlight--
	f.idle = append(f.idle, f.cfg.Now())
}

// reap tears down environments idle longer than IdleReap, so that a later
// burst meets cold starts and the scaling limit again.
func (f *Function) reap(now time.Time) {
	if f.cfg.IdleReap <= 0 {
		return
	}
	kept := f.idle[:0]
	for _, since := range f.idle {
		if now.Sub(since) < f.cfg.IdleReap {
			kept = append(kept, since)
		}
	}
	f.idle = kept
}

// Stats returns what the platform has seen so far.
func (f *Function) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Environments = f.busy + len(f.idle)
	now := f.cfg.Now()
	i := f.step(now)
	s.Limit = f.limitOf(i)
	for ; i >= 0; i-- {
		if _, ok := f.rose(i); ok {
			s.TimeToUse = max(f.used[i], 0)
			break
		}
	}
	return s
}

// JobInvocations returns how many times the job with that Sluice-Job-Id
// ran the handler to completion.
func (f *Function) JobInvocations(jobID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[jobID]
}
