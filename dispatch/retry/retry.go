// Package retry says which failed attempts of a job are tried again, and
// when: the policy (attempts, exponential backoff with full jitter) and
// which answers are worth another attempt.
package retry

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/dispatch/target"
)

// Policy says which failed attempts are tried again and when. The
// zero value is [DefaultPolicy]: five attempts, waits from 1s
// doubling up to 5m, with full jitter.
type Policy struct {
	// MaxAttempts is the most attempts a job gets, throttles not counted;
	// 1 tries each job once. Zero means 5.
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

// DefaultPolicy returns what each zero field of a Policy means.
func DefaultPolicy() Policy {
	return Policy{MaxAttempts: 5, InitialBackoff: time.Second, MaxBackoff: 5 * time.Minute, Multiplier: 2}
}

// SetDefaults sets each zero field to its default (see [DefaultPolicy]).
func (r *Policy) SetDefaults() {
	d := DefaultPolicy()
	if r.MaxAttempts == 0 {
		r.MaxAttempts = d.MaxAttempts
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = d.InitialBackoff
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = d.MaxBackoff
	}
	if r.Multiplier == 0 {
		r.Multiplier = d.Multiplier
	}
}

// Backoff is the ceiling of the wait after the given failed attempt
// (counted from 1): InitialBackoff × Multiplier^(attempt-1), capped at
// MaxBackoff; zero fields take their defaults.
func (r Policy) Backoff(attempt int) time.Duration {
	r.SetDefaults()
	d := float64(r.InitialBackoff) * math.Pow(r.Multiplier, float64(max(attempt-1, 0)))
	if d >= float64(r.MaxBackoff) || math.IsInf(d, 0) || math.IsNaN(d) {
		return r.MaxBackoff
	}
	return time.Duration(d)
}

// Delay is the wait after the given failed attempt: the backoff, jittered,
// and never shorter than the function's own Retry-After.
func (r Policy) Delay(attempt int, retryAfter time.Duration) time.Duration {
	d := r.Backoff(attempt)
	if !r.NoJitter && d > 0 {
		d = rand.N(d + 1)
	}
	return max(d, min(retryAfter, r.MaxBackoff))
}

// RetryableStatus reports whether an attempt answered with status may
// succeed if tried again: 5xx but 501 Not Implemented, and 408.
func RetryableStatus(status int) bool {
	switch {
	case status == http.StatusNotImplemented:
		return false
	case status >= 500, status == http.StatusRequestTimeout:
		return true
	}
	return false
}

// RetryableError reports whether an attempt that got no answer may succeed
// if tried again: timeouts and connection failures may; a response too
// large to keep will not get smaller.
func RetryableError(err error) bool {
	return !errors.Is(err, target.ErrResponseTooLarge) && !errors.Is(err, context.Canceled)
}
