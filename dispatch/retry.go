package dispatch

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// RetryPolicy says which failed attempts are tried again and when. The
// zero value tries each job once.
type RetryPolicy struct {
	// MaxAttempts is the most attempts a job gets, throttles not counted.
	// Zero means 1: no retries.
	MaxAttempts int
	// InitialBackoff is the wait before the second attempt. Zero means 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between attempts. Zero means 5m.
	MaxBackoff time.Duration
	// Multiplier grows the wait after each attempt. Zero means 2.
	Multiplier float64
	// NoJitter waits the computed backoff exactly; by default the wait is
	// drawn uniformly from zero to it ("full jitter"), so that retries of
	// many jobs do not arrive together.
	NoJitter bool
}

func (r *RetryPolicy) setDefaults() {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 1
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = time.Second
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = 5 * time.Minute
	}
	if r.Multiplier == 0 {
		r.Multiplier = 2
	}
}

// Backoff is the ceiling of the wait after the given failed attempt
// (counted from 1): InitialBackoff × Multiplier^(attempt-1), capped at
// MaxBackoff; zero fields take their defaults.
func (r RetryPolicy) Backoff(attempt int) time.Duration {
	r.setDefaults()
	d := float64(r.InitialBackoff) * math.Pow(r.Multiplier, float64(max(attempt-1, 0)))
	if d >= float64(r.MaxBackoff) || math.IsInf(d, 0) || math.IsNaN(d) {
		return r.MaxBackoff
	}
	return time.Duration(d)
}

// delay is the wait after the given failed attempt: the backoff, jittered,
// and never shorter than the function's own Retry-After.
func (r RetryPolicy) delay(attempt int, retryAfter time.Duration) time.Duration {
	d := r.Backoff(attempt)
	if !r.NoJitter && d > 0 {
		d = rand.N(d + 1)
	}
	return max(d, min(retryAfter, r.MaxBackoff))
}

// retryableStatus reports whether an attempt answered with status may
// succeed if tried again: 5xx but 501 Not Implemented, and 408.
func retryableStatus(status int) bool {
	switch {
	case status == http.StatusNotImplemented:
		return false
	case status >= 500, status == http.StatusRequestTimeout:
		return true
	}
	return false
}

// retryableError reports whether an attempt that got no answer may succeed
// if tried again: timeouts and connection failures may; a response too
// large to keep will not get smaller.
func retryableError(err error) bool {
	return !errors.Is(err, ErrResponseTooLarge) && !errors.Is(err, context.Canceled)
}
