// Package fnsim is a simulated serverless function: an HTTP handler that
// echoes its payload after a delay and, like a platform at its concurrency
// limit, answers 429 Too Many Requests when too many invocations are in
// flight. It counts what it sees, so tests and benchmarks can check what a
// function behind Sluice experienced.
package fnsim

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Config describes the simulated function. The zero value echoes at once
// and never throttles.
type Config struct {
	// Delay is how long each invocation takes before it answers.
	Delay time.Duration
	// Concurrency is the most invocations served at once; one more is
	// answered 429 at once. Zero means no limit.
	Concurrency int
	// RetryAfter is the Retry-After sent with a 429. Zero means 1s.
	RetryAfter time.Duration
	// MaxPayload bounds the request body it reads. Zero means 8 MiB.
	MaxPayload int64
}

// Stats is what the function has seen so far.
type Stats struct {
	// Invocations counts requests answered with the echo.
	Invocations int
	// Throttled counts requests answered 429.
	Throttled int
	// InFlight is the number of invocations running now.
	InFlight int
	// MaxInFlight is the most invocations that ran at once.
	MaxInFlight int
}

// Function is the simulated function. It is safe for concurrent use.
type Function struct {
	cfg Config

	mu    sync.Mutex
	stats Stats
	jobs  map[string]int // invocations per Sluice-Job-Id
}

var _ http.Handler = (*Function)(nil)

// New returns a simulated function.
func New(cfg Config) *Function {
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = 8 << 20
	}
	return &Function{cfg: cfg, jobs: make(map[string]int)}
}

// ServeHTTP answers one invocation: after Delay, the request body with its
// Content-Type; above Concurrency, 429 with Retry-After.
func (f *Function) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !f.enter() {
		w.Header().Set("Retry-After", strconv.Itoa(int(f.cfg.RetryAfter.Round(time.Second)/time.Second)))
		http.Error(w, "too many concurrent invocations", http.StatusTooManyRequests)
		return
	}
	defer f.leave()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, f.cfg.MaxPayload))
	if err != nil {
		http.Error(w, "cannot read payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	if f.cfg.Delay > 0 {
		t := time.NewTimer(f.cfg.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	f.stats.Invocations++
	if id := r.Header.Get("Sluice-Job-Id"); id != "" {
		f.jobs[id]++
	}
	f.mu.Unlock()
	if ct := r.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Write(body) //nolint:errcheck // the caller may have gone; nothing to do
}

func (f *Function) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg.Concurrency > 0 && f.stats.InFlight >= f.cfg.Concurrency {
		f.stats.Throttled++
		return false
	}
	f.stats.InFlight++
	f.stats.MaxInFlight = max(f.stats.MaxInFlight, f.stats.InFlight)
	return true
}

func (f *Function) leave() {
	f.mu.Lock()
	f.stats.InFlight--
	f.mu.Unlock()
}

// Stats returns what the function has seen so far.
func (f *Function) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// JobInvocations returns how many times the job with that Sluice-Job-Id
// was answered with the echo.
func (f *Function) JobInvocations(jobID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[jobID]
}
