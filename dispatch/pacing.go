package dispatch

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/buffer"
)

// Pacing describes how fast a function's platform can take invocations.
// Every field is optional; the zero value dispatches up to the function's
// concurrency at once.
type Pacing struct {
	// Initial is how many invocations may start at once: the environments
	// the platform has ready. Zero means the function's concurrency.
	Initial int
	// PerMinute is how many more environments the platform adds per minute
	// while all are busy; the window grows no faster. Zero means the window
	// starts at the concurrency limit.
	PerMinute int
	// IdleReap is how long the platform keeps an idle environment: after the
	// function has had no work that long, the window falls back to Initial
	// and a later burst ramps again. Zero means never.
	IdleReap time.Duration
	// Adaptive learns the real limit from throttles: the window stops just
	// under the level that was throttled and probes one above it every
	// ProbeEvery, instead of halving on each throttle.
	Adaptive bool
	// ProbeEvery is how often an adaptive window tries one more than its
	// learned limit. Zero means 30s.
	ProbeEvery time.Duration
	// MaxPause caps a Retry-After. Zero means 5m.
	MaxPause time.Duration
	// RampLag holds growth back this long after the ramp starts, so the
	// window trails the platform's own clock rather than leads it. Zero
	// means 100ms; the ramp is seen to start a pacing tick late besides.
	RampLag time.Duration
}

func (p *Pacing) setDefaults(concurrency int) {
	if p.Initial == 0 || p.Initial > concurrency {
		p.Initial = concurrency
	}
	if p.ProbeEvery == 0 {
		p.ProbeEvery = 30 * time.Second
	}
	if p.MaxPause == 0 {
		p.MaxPause = 5 * time.Minute
	}
	if p.RampLag == 0 {
		p.RampLag = 100 * time.Millisecond
	}
}

// Reasons a window is where it is, as GET /v1/functions/{name} shows them.
const (
	ReasonStarting      = "starting: the platform's initial environments"
	ReasonRamping       = "ramping: growing at the platform's scaling rate"
	ReasonAtLimit       = "at its limit: the configured concurrency"
	ReasonAtLearned     = "at the learned limit: the platform throttled above it"
	ReasonThrottled     = "throttled: paused for the platform's Retry-After"
	ReasonIdle          = "idle: the platform has reaped its environments"
	ReasonWaitingDemand = "waiting: no backlog to grow for"
)

// windowCap is the most the window may reach now.
func windowCap(p *buffer.Pacing, cfg *Pacing, concurrency int) float64 {
	if cfg.Adaptive && p.Ceiling > 0 {
		return float64(min(concurrency, p.Ceiling))
	}
	return float64(concurrency)
}

// stepWindow moves the shared window for the load seen now. It is a pure
// function of its inputs, so every process computes the same ramp; it
// reports whether it changed p.
func stepWindow(p *buffer.Pacing, cfg *Pacing, concurrency int, load buffer.Load, now time.Time) bool {
	before := *p
	if p.Window == 0 {
		p.Window = float64(cfg.Initial)
		p.Reason = ReasonStarting
	}
	if cfg.PerMinute == 0 {
		p.Window = windowCap(p, cfg, concurrency)
	}
	busy := load.Backlog > 0 || load.InFlight > 0
	switch {
	case busy:
		p.LastActive = now
	case cfg.IdleReap > 0 && !p.LastActive.IsZero() && now.Sub(p.LastActive) >= cfg.IdleReap && cfg.PerMinute > 0:
		if p.Window != float64(cfg.Initial) || !p.RampStart.IsZero() {
			p.Window, p.RampStart, p.RampBase = float64(cfg.Initial), time.Time{}, 0
		}
		p.Reason = ReasonIdle
	}
	if load.InFlight == 0 && load.Backlog == 0 {
		// The platform stops scaling when nothing runs.
		p.RampStart, p.RampBase = time.Time{}, 0
	}
	limit := windowCap(p, cfg, concurrency)
	saturated := load.Backlog > 0 && float64(load.InFlight) >= math.Floor(p.Window)
	if cfg.PerMinute > 0 {
		if p.RampStart.IsZero() && saturated {
			p.RampStart, p.RampBase = now, p.Window
		}
		if !p.RampStart.IsZero() {
			elapsed := now.Sub(p.RampStart) - cfg.RampLag
			if elapsed > 0 {
				grown := p.RampBase + elapsed.Minutes()*float64(cfg.PerMinute)
				p.Window = max(p.Window, min(limit, grown))
			}
		}
	}
	// Probe one above a learned limit now and then: the platform may have
	// been given more, or the throttle may have been a passing one.
	if cfg.Adaptive && p.Ceiling > 0 && p.Ceiling < concurrency && saturated && p.Window >= limit &&
		now.Sub(later(p.LastThrottle, p.LastProbe)) >= cfg.ProbeEvery {
		p.Ceiling++
		p.LastProbe = now
		limit = windowCap(p, cfg, concurrency)
		p.Window = limit
	}
	p.Window = min(p.Window, limit)
	switch {
	case now.Before(p.PausedUntil):
		p.Reason = ReasonThrottled
	case p.Reason == ReasonIdle && !busy:
	case p.Window >= float64(concurrency):
		p.Reason = ReasonAtLimit
	case p.Window >= limit:
		p.Reason = ReasonAtLearned
	case saturated:
		p.Reason = ReasonRamping
	case !busy && p.Reason != ReasonStarting:
		p.Reason = ReasonWaitingDemand
	}
	return *p != before
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// throttleWindow shrinks the window for a throttle and pauses the function
// for retryAfter (capped). Throttles close together (one overload seen by
// several in-flight invocations) shrink it once.
func throttleWindow(p *buffer.Pacing, cfg *Pacing, concurrency int, retryAfter time.Duration, now time.Time) bool {
	retryAfter = min(max(retryAfter, 0), cfg.MaxPause)
	if until := now.Add(retryAfter); until.After(p.PausedUntil) {
		p.PausedUntil = until
	}
	p.Reason = ReasonThrottled
	if now.Sub(p.LastThrottle) < time.Second {
		return true
	}
	if p.Window == 0 {
		p.Window = float64(cfg.Initial)
	}
	if cfg.Adaptive {
		// The platform refused at this level: its limit is below it.
		p.Ceiling = max(1, int(math.Floor(p.Window))-1)
		p.Window = max(1, math.Floor(float64(p.Ceiling)*0.9))
	} else {
		p.Window = max(1, math.Floor(p.Window/2))
	}
	p.LastThrottle = now
	// Growth resumes from here after the pause, at the scaling rate.
	if cfg.PerMinute > 0 {
		p.RampStart, p.RampBase = p.PausedUntil, p.Window
	}
	return true
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// It returns ok false for an empty or malformed value.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(min(secs, 7*24*3600)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}
