package pacing

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/target"
)

var t0 = time.Unix(1_800_000_000, 0)

func pacingFor(concurrency int, cfg Policy) *Policy {
	cfg.SetDefaults(concurrency)
	return &cfg
}

func TestWindowRampsAtScalingRate(t *testing.T) {
	cfg := pacingFor(50, Policy{Initial: 10, PerMinute: 600, RampLag: time.Nanosecond})
	var p shared.PacingState
	busy := buffer.Load{Backlog: 1000, InFlight: 10}
	Step(&p, cfg, 50, busy, t0)
	if p.Window != 10 {
		t.Fatalf("first window = %v, want the initial 10", p.Window)
	}
	for _, tc := range []struct {
		after time.Duration
		want  float64
	}{
		{time.Second, 20},      // 600/min = 10/s
		{2 * time.Second, 30},  //
		{10 * time.Second, 50}, // capped by concurrency
		{time.Minute, 50},      //
	} {
		busy.InFlight = int(p.Window)
		Step(&p, cfg, 50, busy, t0.Add(tc.after))
		if p.Window < tc.want-0.01 || p.Window > tc.want+0.01 {
			t.Errorf("window after %v = %.2f, want %v", tc.after, p.Window, tc.want)
		}
	}
	if p.Reason != ReasonAtLimit {
		t.Errorf("reason = %q, want %q", p.Reason, ReasonAtLimit)
	}
}

func TestWindowWaitsForSaturationAndDecaysWhenIdle(t *testing.T) {
	cfg := pacingFor(50, Policy{Initial: 10, PerMinute: 600, IdleReap: 10 * time.Minute, RampLag: time.Nanosecond})
	var p shared.PacingState
	// Work, but not enough to fill the window: no growth.
	Step(&p, cfg, 50, buffer.Load{Backlog: 0, InFlight: 4}, t0)
	Step(&p, cfg, 50, buffer.Load{Backlog: 0, InFlight: 4}, t0.Add(5*time.Second))
	if p.Window != 10 {
		t.Fatalf("window without backlog = %v, want 10", p.Window)
	}
	// A burst ramps it, then it idles past the reap time.
	Step(&p, cfg, 50, buffer.Load{Backlog: 500, InFlight: 10}, t0.Add(6*time.Second))
	Step(&p, cfg, 50, buffer.Load{Backlog: 500, InFlight: 10}, t0.Add(8*time.Second))
	if math.Abs(p.Window-30) > 0.01 {
		t.Fatalf("window after a 2s ramp = %v, want 30", p.Window)
	}
	Step(&p, cfg, 50, buffer.Load{}, t0.Add(9*time.Second))
	Step(&p, cfg, 50, buffer.Load{}, t0.Add(9*time.Second+10*time.Minute))
	if p.Window != 10 || p.Reason != ReasonIdle {
		t.Fatalf("after idling past the reap time window = %v (%s), want 10 (idle)", p.Window, p.Reason)
	}
}

// saturatedSteps steps the window every d for the given time with a
// backlog that fills whatever window there is, and returns how long it
// took the window to reach want (or -1).
func saturatedSteps(p *shared.PacingState, cfg *Policy, concurrency int, from time.Time, d, within time.Duration, want float64) time.Duration {
	for t := time.Duration(0); t <= within; t += d {
		Step(p, cfg, concurrency, buffer.Load{Backlog: 1000, InFlight: int(p.Window)}, from.Add(t))
		if p.Window >= want {
			return t
		}
	}
	return -1
}

func TestThrottleTeachesTheLimit(t *testing.T) {
	ev := func(inFlight int) Evidence {
		return Evidence{InFlight: inFlight, Took: 100 * time.Millisecond, RetryAfter: time.Second, Given: true}
	}
	t.Run("the ceiling drops to what was in flight, at once", func(t *testing.T) {
		cfg := pacingFor(100, Policy{Adaptive: true})
		var p shared.PacingState
		Step(&p, cfg, 100, buffer.Load{Backlog: 3000}, t0)
		if p.Window != 100 {
			t.Fatalf("first window = %v, want the concurrency", p.Window)
		}
		Throttle(&p, cfg, 100, ev(40), t0.Add(time.Millisecond))
		// Later refusals of the same burst were sent with more in flight.
		Throttle(&p, cfg, 100, ev(73), t0.Add(2*time.Millisecond))
		if p.Ceiling != 40 || p.Window != 40 {
			t.Fatalf("after throttles at 40 and 73 in flight: ceiling %d, window %v; want 40, 40", p.Ceiling, p.Window)
		}
		if !p.PausedUntil.IsZero() {
			t.Errorf("the function paused until %v; only the refused job should wait", p.PausedUntil)
		}
		// Without scaling the next step must not put the window back at
		// the configured concurrency.
		Step(&p, cfg, 100, buffer.Load{Backlog: 3000, InFlight: 40}, t0.Add(100*time.Millisecond))
		if p.Window != 40 || p.Reason != ReasonAtLearned {
			t.Errorf("next step: window %v (%s), want 40 at the learned limit", p.Window, p.Reason)
		}
	})
	t.Run("a limit restored is found within seconds", func(t *testing.T) {
		cfg := pacingFor(100, Policy{Adaptive: true})
		p := shared.PacingState{Window: 50}
		Throttle(&p, cfg, 100, ev(20), t0)
		if p.ProbeAfter < minProbeAfter || p.ProbeAfter > time.Second {
			t.Errorf("probe after %v, want between %v and 1s for 20 in flight at 100ms", p.ProbeAfter, minProbeAfter)
		}
		took := saturatedSteps(&p, cfg, 100, t0, 100*time.Millisecond, 10*time.Second, 50)
		if took < 0 || took > 2*time.Second {
			t.Errorf("window reached 50 after %v, want within 2s", took)
		}
	})
	t.Run("growth never outruns the scaling rate", func(t *testing.T) {
		cfg := pacingFor(100, Policy{Adaptive: true, Initial: 100, PerMinute: 600, RampLag: time.Nanosecond})
		p := shared.PacingState{Window: 50}
		Throttle(&p, cfg, 100, ev(20), t0)
		took := saturatedSteps(&p, cfg, 100, t0, 100*time.Millisecond, 10*time.Second, 50)
		// 600/min is 10 a second: 30 more take at least 3s.
		if took < 3*time.Second {
			t.Errorf("window reached 50 after %v; at +10/s it cannot before 3s", took)
		}
	})
	t.Run("not adaptive halves and earns growth back", func(t *testing.T) {
		cfg := pacingFor(100, Policy{})
		p := shared.PacingState{Window: 100}
		Throttle(&p, cfg, 100, ev(40), t0)
		Throttle(&p, cfg, 100, ev(40), t0.Add(10*time.Millisecond))
		if p.Window != 50 {
			t.Fatalf("after one overload window = %v, want halved once to 50", p.Window)
		}
		Step(&p, cfg, 100, buffer.Load{Backlog: 3000, InFlight: 50}, t0.Add(100*time.Millisecond))
		if p.Window > 51 {
			t.Fatalf("next step: window %v, want it to stay shrunk", p.Window)
		}
		saturatedSteps(&p, cfg, 100, t0.Add(200*time.Millisecond), 100*time.Millisecond, time.Second, 100)
		if p.Window < 55 || p.Window > 62 {
			t.Errorf("after 1s of success window = %v, want about 60: one more per step", p.Window)
		}
	})
	t.Run("refused with fewer in flight than were just taken: a rate", func(t *testing.T) {
		cfg := pacingFor(100, Policy{Adaptive: true})
		p := shared.PacingState{Window: 100}
		e := ev(12)
		e.TakenAbove, e.StartRate = true, 200
		Throttle(&p, cfg, 100, e, t0)
		if p.LearnedRate != 200*rateMargin || p.Ceiling != 0 || p.Window != 100 {
			t.Errorf("after a rate throttle: rate %v, ceiling %d, window %v; want a little under 200/s and the window untouched", p.LearnedRate, p.Ceiling, p.Window)
		}
		if r := p.StartRate(150); r != 150 {
			t.Errorf("start rate with 150/s configured = %v, want the lower 150", r)
		}
		if p.Reason != ReasonAtLearnedRate {
			t.Errorf("reason %q, want %q", p.Reason, ReasonAtLearnedRate)
		}
		// It grows back once no throttle came for a while, and is
		// forgotten at twice what was learned.
		for d := time.Duration(0); d < 20*time.Second && p.LearnedRate > 0; d += 100 * time.Millisecond {
			Step(&p, cfg, 100, buffer.Load{Backlog: 100, InFlight: 20}, t0.Add(d))
		}
		if p.LearnedRate != 0 {
			t.Errorf("learned rate %v after 20s without throttles, want forgotten", p.LearnedRate)
		}
	})
	t.Run("refused with nothing in flight pauses the function", func(t *testing.T) {
		cfg := pacingFor(100, Policy{Adaptive: true})
		p := shared.PacingState{Window: 10}
		Throttle(&p, cfg, 100, Evidence{RetryAfter: 2 * time.Second, Given: true}, t0)
		if !p.PausedUntil.Equal(t0.Add(2*time.Second)) || p.Window != 1 {
			t.Errorf("paused until %v, window %v; want 2s and 1", p.PausedUntil, p.Window)
		}
	})
	t.Run("RetryAfterFunction pauses for every throttle, capped", func(t *testing.T) {
		cfg := pacingFor(100, Policy{Adaptive: true, RetryAfter: RetryAfterFunction})
		p := shared.PacingState{Window: 100}
		e := ev(40)
		e.RetryAfter = time.Hour
		Throttle(&p, cfg, 100, e, t0)
		if !p.PausedUntil.Equal(t0.Add(DefaultMaxPause)) {
			t.Errorf("paused until %v, want the pause capped at %v", p.PausedUntil, DefaultMaxPause)
		}
	})
}

func TestThrottleOf(t *testing.T) {
	now := t0
	for _, tc := range []struct {
		name      string
		resp      target.Response
		throttled bool
		wait      time.Duration
	}{
		{"429 with seconds", target.Response{Status: 429, RetryAfter: "3"}, true, 3 * time.Second},
		{"429 without Retry-After", target.Response{Status: 429}, true, time.Second},
		{"429 with a date", target.Response{Status: 429, RetryAfter: now.Add(7 * time.Second).UTC().Format(http.TimeFormat)}, true, 7 * time.Second},
		{"503 with Retry-After", target.Response{Status: 503, RetryAfter: "2"}, true, 2 * time.Second},
		{"503 without Retry-After is a failure", target.Response{Status: 503}, false, 0},
		{"500", target.Response{Status: 500, RetryAfter: "2"}, false, 0},
		{"429 with garbage", target.Response{Status: 429, RetryAfter: "soon"}, true, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wait, _, throttled := ThrottleOf(&tc.resp, now)
			if throttled != tc.throttled || wait != tc.wait {
				t.Errorf("ThrottleOf = %v, %v; want %v, %v", wait, throttled, tc.wait, tc.throttled)
			}
		})
	}
}
