package pacing

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/target"
)

// Policy describes how fast a function's platform can take invocations.
// Every field is optional; the zero value dispatches up to the function's
// concurrency at once and, when the platform throttles, learns its real
// limit.
//
// The window (invocations in flight, across every gateway process) is
// bounded three ways: by the platform's scaling ramp (Initial, PerMinute),
// by the configured concurrency, and by a ceiling that throttles teach. A
// throttle tells how many invocations were in flight when the platform
// refused one; that number bounds its limit at that moment, so the
// ceiling drops to it at once. After ProbeAfter without throttles (long
// enough that probing costs about one throttle in a hundred Invocations)
// the ceiling grows again, by 1, 2, 4, … per invocation time while there
// is a backlog to use it, so a limit that was restored is found within
// seconds; the ramp still bounds it when PerMinute is set. Throttles that
// come while clearly fewer invocations are in flight than were recently
// taken say that the platform limits starts per second, not invocations in
// flight: dispatch then learns that rate instead and keeps to it.
type Policy struct {
	// Initial is how many invocations may start at once: the environments
	// the platform has ready. Zero means the function's concurrency.
	Initial int
	// PerMinute is how many more environments the platform adds per minute
	// while all are busy; the window grows no faster, after a throttle too.
	// Zero means the window starts at the concurrency limit.
	PerMinute int
	// IdleReap is how long the platform keeps an idle environment: after the
	// function has had no work that long, the window falls back to Initial
	// and a later burst ramps again. Zero means never.
	IdleReap time.Duration
	// Adaptive learns the platform's limits from what it saw when it
	// throttled: the ceiling drops to the number in flight then, and a
	// rate limit is learned when throttles come with fewer in flight.
	// Without it a throttle halves the ceiling and growth comes back one
	// invocation per invocation time (additive increase): slower to find
	// a limit, but it assumes nothing about the platform.
	Adaptive bool
	// RetryAfter says what a throttle's Retry-After pauses:
	// [RetryAfterJob] (the default) or [RetryAfterFunction].
	RetryAfter RetryAfterScope
	// MaxPause caps a Retry-After. Zero means 5m.
	MaxPause time.Duration
	// RampLag holds growth back this long after the ramp starts, so the
	// window trails the platform's own clock rather than leads it. Zero
	// means 100ms; the ramp is seen to start a pacing tick late besides.
	RampLag time.Duration
}

// RetryAfterScope says what a throttle's Retry-After pauses.
type RetryAfterScope int

const (
	// RetryAfterJob holds only the refused job back for the Retry-After;
	// the function's other jobs go on within the window the throttle
	// taught, which already keeps them under the platform's limit. Only
	// when nothing else was in flight (the platform had no room even for
	// one) does the whole function pause. It is the default: measured with
	// `sluice bench pacing`, pausing the whole function for every
	// throttle's Retry-After leaves the platform idle for most of each
	// second a 429 names, and drains a burst far slower.
	RetryAfterJob RetryAfterScope = iota
	// RetryAfterFunction pauses every dispatch to the function for each
	// throttle's Retry-After: for platforms whose Retry-After is a promise
	// about the whole function (a maintenance window, say).
	RetryAfterFunction
)

// Defaults the controller starts from, where nothing is known yet.
const (
	// DefaultMaxPause caps a Retry-After.
	DefaultMaxPause = 5 * time.Minute
	// defaultRampLag: see Policy.RampLag.
	defaultRampLag = 100 * time.Millisecond
	// probeShare is the share of invocations probing may cost in
	// throttles: growth waits for 1/probeShare invocations after a
	// throttle.
	probeShare = 0.01
	// minProbeAfter and maxProbeAfter bound the quiet time before growth.
	minProbeAfter = 500 * time.Millisecond
	maxProbeAfter = 10 * time.Second
	// minGrowEvery is the shortest time between growth steps; a step waits
	// at least one invocation time, for the step before it to show.
	minGrowEvery = 100 * time.Millisecond
	// throttleWithout is the wait after a 429 that names no Retry-After.
	throttleWithout = time.Second
	// rateGrowth is the share of the learned rate the first growth step
	// adds; each later step adds twice the one before.
	rateGrowth = 0.05
	// rateMargin is the share of the rate the platform took when it
	// throttled that dispatch keeps to: a little under, so that starts
	// bunched by the network do not meet an empty bucket.
	rateMargin = 0.95
)

// SetDefaults fills in the fields left zero, for a function whose
// concurrency is concurrency; Initial above it is cut to it.
func (p *Policy) SetDefaults(concurrency int) {
	if p.Initial == 0 || p.Initial > concurrency {
		p.Initial = concurrency
	}
	if p.MaxPause == 0 {
		p.MaxPause = DefaultMaxPause
	}
	if p.RampLag == 0 {
		p.RampLag = defaultRampLag
	}
}

// Reasons a window is where it is, as GET /v1/functions/{name} shows them.
const (
	ReasonStarting      = "starting: the platform's initial environments"
	ReasonRamping       = "ramping: growing at the platform's scaling rate"
	ReasonAtLimit       = "at its limit: the configured concurrency"
	ReasonAtLearned     = "at the learned limit: the platform throttled with this many in flight"
	ReasonProbing       = "probing: growing above the learned limit, no throttle for a while"
	ReasonBackingOff    = "backing off: halved by a throttle, growing back as invocations succeed"
	ReasonAtLearnedRate = "at the learned rate: the platform throttled with fewer than the learned limit in flight, so it limits requests per second"
	ReasonThrottled     = "throttled: paused for the platform's Retry-After"
	ReasonIdle          = "idle: the platform has reaped its environments"
	ReasonWaitingDemand = "waiting: no backlog to grow for"
)

// Evidence is what dispatch saw around one throttle: [Invocations.Evidence]
// gathers it, and the caller adds the throttle's Retry-After.
type Evidence struct {
	// InFlight is how many invocations were in flight at the platform,
	// across processes, when the refused one was sent (not counting it).
	InFlight int
	// TakenAbove: an invocation sent shortly before the refused one, with
	// clearly more in flight, was taken. A concurrency limit would have
	// refused that one too.
	TakenAbove bool
	// SpreadSaysRate: recent throttles came at in-flight counts far apart
	// while the start rate stayed put; InFlightSeen is the most of those
	// counts.
	SpreadSaysRate bool
	InFlightSeen   int
	// StartRate is how many invocations per second the platform took over
	// the last second, across processes.
	StartRate float64
	// Took is a typical invocation's duration; zero while unknown.
	Took time.Duration
	// RetryAfter is the throttle's Retry-After (given or not: see Given).
	RetryAfter time.Duration
	Given      bool
}

// windowCap is the most the window may reach now: the concurrency, or the
// ceiling throttles taught.
func windowCap(p *shared.PacingState, concurrency int) float64 {
	if p.Ceiling > 0 {
		return float64(min(concurrency, p.Ceiling))
	}
	return float64(concurrency)
}

// Step moves the shared window for the load seen now. It is a pure
// function of its inputs, so every process computes the same ramp; it
// reports whether it changed p.
func Step(p *shared.PacingState, cfg *Policy, concurrency int, load buffer.Load, now time.Time) bool {
	before := p.Scalars()
	if p.Window == 0 {
		p.Window = float64(cfg.Initial)
		p.Reason = ReasonStarting
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
	if !busy {
		// The platform stops scaling when nothing runs.
		p.RampStart, p.RampBase = time.Time{}, 0
	}
	// In flight means at the platform: the processes' reports say how many
	// of the jobs delivered are (the others wait for the rate, or record
	// their outcome).
	inFlight, starts, reported := load.InFlight, 0.0, p.Procs != nil
	if reported {
		all, _ := p.Others("", now.Add(-ReportFresh))
		inFlight, starts = min(inFlight, all.Invoking), all.Starts
	}
	saturated := load.Backlog > 0 && float64(inFlight) >= math.Floor(p.Window)
	growCeiling(p, cfg, concurrency, saturated, now)
	rateBound := load.Backlog > 0 && (!reported || starts >= p.LearnedRate*0.9)
	growRate(p, rateBound, now)
	limit := windowCap(p, concurrency)
	if cfg.PerMinute == 0 {
		p.Window = limit
	} else {
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
		p.Window = min(p.Window, limit)
	}
	p.Window = max(p.Window, 1)
	p.Reason = reason(p, cfg, concurrency, saturated, busy, now)
	return p.Scalars() != before
}

// reason says, for people, why the window is where it is.
func reason(p *shared.PacingState, cfg *Policy, concurrency int, saturated, busy bool, now time.Time) string {
	switch {
	case now.Before(p.PausedUntil):
		return ReasonThrottled
	case p.Reason == ReasonIdle && !busy:
		return ReasonIdle
	case p.LearnedRate > 0 && busy:
		return ReasonAtLearnedRate
	case p.Window >= float64(concurrency):
		return ReasonAtLimit
	case p.Ceiling > 0 && p.Window >= float64(p.Ceiling) && !cfg.Adaptive:
		return ReasonBackingOff
	case p.Ceiling > p.CeilingBase && p.Window >= float64(p.Ceiling):
		return ReasonProbing
	case p.Ceiling > 0 && p.Window >= float64(p.Ceiling):
		return ReasonAtLearned
	case saturated:
		return ReasonRamping
	case !busy && p.Reason != ReasonStarting:
		return ReasonWaitingDemand
	}
	return p.Reason
}

// growCeiling raises a ceiling that throttles set, once ProbeAfter has
// passed without one and while the window is in full use: adaptively by
// 1, 2, 4, … per step, otherwise by one per step. A ceiling grown back to
// the concurrency is forgotten.
func growCeiling(p *shared.PacingState, cfg *Policy, concurrency int, saturated bool, now time.Time) {
	if p.Ceiling == 0 || !saturated || float64(p.Ceiling) > p.Window {
		return
	}
	quiet := now.Sub(p.LastThrottle) - p.ProbeAfter
	if quiet < 0 || now.Sub(p.LastGrow) < growEvery(p) {
		return
	}
	step := 1
	if cfg.Adaptive {
		step = max(1, p.Ceiling-p.CeilingBase)
	}
	p.Ceiling += step
	p.LastGrow = now
	if p.Ceiling >= concurrency {
		p.Ceiling, p.CeilingBase = 0, 0
	}
}

// growRate raises a learned rate once ProbeAfter has passed without a rate
// throttle while dispatch keeps to it (jobs wait, and start at the rate):
// by 5%, 10%, 20%, … of the rate the throttle left. A rate grown to twice
// that is forgotten: the limit it stood for is gone; so is one that has
// not bound for maxProbeAfter.
func growRate(p *shared.PacingState, rateBound bool, now time.Time) {
	if p.LearnedRate == 0 {
		return
	}
	if !rateBound {
		// A rate that has not bound for a long while says nothing now
		// (it may have been learned from a limit that moved).
		if now.Sub(p.LastRateThrottle) >= maxProbeAfter && now.Sub(p.LastRateGrow) >= maxProbeAfter {
			p.LearnedRate, p.RateBase = 0, 0
		}
		return
	}
	if now.Sub(p.LastRateThrottle) < p.ProbeAfter || now.Sub(p.LastRateGrow) < growEvery(p) {
		return
	}
	step := max(rateGrowth*p.RateBase, p.LearnedRate-p.RateBase)
	p.LearnedRate += step
	p.LastRateGrow = now
	if p.LearnedRate >= 2*p.RateBase {
		p.LearnedRate, p.RateBase = 0, 0
	}
}

// growEvery is the time between growth steps: an invocation's duration, so
// that each step is seen before the next.
func growEvery(p *shared.PacingState) time.Duration {
	return max(p.Took, minGrowEvery)
}

// probeAfter is how long growth waits after a throttle: about 1/probeShare
// invocations at this many per second, so that a probe that finds the
// limit again costs about one throttle in 1/probeShare invocations.
func probeAfter(perSecond float64) time.Duration {
	if perSecond <= 0 {
		return maxProbeAfter
	}
	d := time.Duration(float64(time.Second) / (perSecond * probeShare))
	return min(max(d, minProbeAfter), maxProbeAfter)
}

// Throttle learns from one throttle: it lowers the ceiling to what
// was in flight (or halves it, without Adaptive), or learns a rate, and
// pauses the function when the platform had no room even for one (or
// always, with RetryAfterFunction). It reports whether it changed p.
func Throttle(p *shared.PacingState, cfg *Policy, concurrency int, ev Evidence, now time.Time) bool {
	before := p.Scalars()
	if ev.Took > 0 {
		p.Took = ev.Took
	}
	pause := min(max(ev.RetryAfter, 0), cfg.MaxPause)
	if cfg.RetryAfter == RetryAfterFunction || ev.InFlight == 0 {
		if !ev.Given {
			pause = throttleWithout
		}
		if until := now.Add(pause); until.After(p.PausedUntil) {
			p.PausedUntil = until
		}
	}
	if p.Window == 0 {
		p.Window = float64(cfg.Initial)
	}
	took := growEvery(p)
	switch {
	case !cfg.Adaptive:
		// One overload seen by several invocations at once halves once.
		if now.Sub(p.LastThrottle) < took {
			break
		}
		p.Ceiling = max(1, int(math.Floor(min(p.Window, windowCap(p, concurrency))/2)))
		p.CeilingBase = p.Ceiling
		p.LastThrottle, p.LastGrow = now, now
		p.ProbeAfter = 0 // growth is earned step by step from here
	case isRateThrottle(ev):
		// Taken with more in flight a moment ago, refused with fewer now:
		// not a limit on invocations in flight. Keep to the rate the
		// platform took; a later throttle of the same kind only lowers it.
		r := ev.StartRate * rateMargin
		if p.LearnedRate == 0 || r < p.LearnedRate || now.Sub(p.LastRateThrottle) >= took {
			p.LearnedRate = r
		}
		p.RateBase = p.LearnedRate
		p.LastRateThrottle, p.LastRateGrow = now, now
		p.ProbeAfter = probeAfter(p.LearnedRate)
		if ev.SpreadSaysRate && p.Ceiling > 0 {
			// The rate binds, not the ceiling those throttles lowered:
			// put it back where the counts they came at cannot reach.
			p.Ceiling = max(p.Ceiling, min(concurrency, ev.InFlightSeen+max(1, ev.InFlightSeen/4)))
			p.CeilingBase = p.Ceiling
		}
	default:
		// The platform refused with ev.InFlight in flight: its limit is at
		// most that, now. Throttles of one overload each lower it to what
		// they saw; it only rises by growth.
		p.Ceiling = min(max(1, ev.InFlight), int(windowCap(p, concurrency)))
		p.CeilingBase = p.Ceiling
		p.LastThrottle, p.LastGrow = now, now
		perSecond := float64(p.Ceiling) / took.Seconds()
		p.ProbeAfter = probeAfter(perSecond)
	}
	if p.Ceiling > 0 {
		p.Window = min(p.Window, float64(p.Ceiling))
		if cfg.PerMinute > 0 {
			// Growth resumes from here at the scaling rate at most.
			p.RampStart, p.RampBase = now, p.Window
		}
	}
	p.Window = max(p.Window, 1)
	if now.Before(p.PausedUntil) {
		p.Reason = ReasonThrottled
	} else {
		p.Reason = reason(p, cfg, concurrency, false, true, now)
	}
	return p.Scalars() != before
}

// isRateThrottle tells a throttle of a rate limit from one of a limit on
// invocations in flight: an invocation sent a moment before with clearly
// more in flight was taken, or recent throttles came at in-flight counts
// far apart at one start rate. (Fewer in flight than the window alone is
// no sign: a limit that fell looks the same.)
func isRateThrottle(ev Evidence) bool {
	return (ev.TakenAbove || ev.SpreadSaysRate) && ev.StartRate > 0
}

// ThrottleOf tells whether the platform refused an invocation for capacity
// (429, or 503 with Retry-After), how long it asked us to wait, and
// whether it said.
func ThrottleOf(resp *target.Response, now time.Time) (wait time.Duration, given, throttled bool) {
	retryAfter, given := ParseRetryAfter(resp.RetryAfter, now)
	switch {
	case resp.Status == http.StatusTooManyRequests:
		if !given {
			retryAfter = throttleWithout
		}
		return retryAfter, given, true
	case resp.Status == http.StatusServiceUnavailable && given:
		return retryAfter, true, true
	}
	return 0, false, false
}

// ParseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// It returns ok false for an empty or malformed value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
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
