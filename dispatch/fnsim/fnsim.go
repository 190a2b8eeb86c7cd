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
//   - an outage: for its first DownFor it answers every invocation 503
//     without Retry-After, as a broken deployment behind a load balancer.
//
// A request above the current capacity is answered 429 with Retry-After,
// as AWS Lambda answers TooManyRequestsException. Every response carries
// Fnsim-Cold-Start: true or false. Stats count what the platform saw.
package fnsim

import (
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
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
	// Concurrency is the most environments (so invocations in flight).
	// Zero means no limit.
	Concurrency int
	// InitialBurst is how many environments may exist before scaling
	// limits apply. Zero means Concurrency (no ramp).
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
	// RetryAfter is the Retry-After sent with a 429. Zero means 1s.
	RetryAfter time.Duration
	// MaxPayload bounds the request body it reads. Zero means 8 MiB.
	MaxPayload int64
	// DownFor answers every invocation 503 (no Retry-After: a failure, not
	// a throttle) until this long after New.
	DownFor time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Stats is what the platform has seen so far.
type Stats struct {
	// Invocations counts invocations that ran the handler.
	Invocations int `json:"invocations"`
	// Errors counts invocations answered 500 by ErrorRate.
	Errors int `json:"errors"`
	// Throttled counts requests answered 429.
	Throttled int `json:"throttled"`
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
	// Environments is the number of environments alive now.
	Environments int `json:"environments"`
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
	if cfg.Concurrency > 0 && (cfg.InitialBurst == 0 || cfg.InitialBurst > cfg.Concurrency) {
		cfg.InitialBurst = cfg.Concurrency
	}
	return &Function{cfg: cfg, started: cfg.Now(), jobs: make(map[string]int)}
}

// ServeHTTP serves GET /stats with the Stats as JSON, and treats any other
// request as an invocation.
func (f *Function) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/stats" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(f.Stats()) //nolint:errcheck // the caller may have gone
		return
	}
	if f.cfg.DownFor > 0 && f.cfg.Now().Sub(f.started) < f.cfg.DownFor {
		f.mu.Lock()
		f.stats.Unavailable++
		f.mu.Unlock()
		http.Error(w, "simulated outage", http.StatusServiceUnavailable)
		return
	}
	warmup := r.Header.Get(HeaderWarmup) == "1"
	cold, ok := f.acquire(warmup)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.cfg.RetryAfter.Seconds()))))
		http.Error(w, "Rate Exceeded: too many concurrent invocations", http.StatusTooManyRequests)
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
// one within capacity (cold), or none (throttle).
func (f *Function) acquire(warmup bool) (cold, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.Now()
	f.reap(now)
	if f.busy == 0 && !f.scaling.IsZero() && now.Sub(f.idleSince) >= scalingStopsAfter {
		f.scaling = time.Time{} // nothing ran for a while: scaling stops
	}
	switch {
	case len(f.idle) > 0:
		f.idle = f.idle[:len(f.idle)-1] // the most recently used: warmest
	case f.cfg.Concurrency == 0 || f.busy+len(f.idle) < f.allowed(now):
		cold = true
		f.stats.ColdStarts++
	default:
		f.stats.Throttled++
		return false, false
	}
	f.busy++
	if f.cfg.ScalePerMinute > 0 && f.scaling.IsZero() && len(f.idle) == 0 && f.busy >= f.allowed(now) {
		// Every environment allowed is busy: scaling starts.
		f.scaling, f.base = now, f.busy
	}
	if warmup {
		f.stats.Warmups++
	}
	f.stats.InFlight++
	f.stats.MaxConcurrent = max(f.stats.MaxConcurrent, f.stats.InFlight)
	return cold, true
}

// allowed is how many environments may exist now: the burst (or as many
// as are alive, if more) plus ScalePerMinute for each minute of scaling.
func (f *Function) allowed(now time.Time) int {
	if f.cfg.ScalePerMinute == 0 {
		return f.cfg.Concurrency
	}
	if f.scaling.IsZero() {
		return max(f.cfg.InitialBurst, f.busy+len(f.idle))
	}
	grown := int(now.Sub(f.scaling).Minutes() * float64(f.cfg.ScalePerMinute))
	return min(f.cfg.Concurrency, f.base+grown)
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
	return s
}

// JobInvocations returns how many times the job with that Sluice-Job-Id
// ran the handler to completion.
func (f *Function) JobInvocations(jobID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[jobID]
}
