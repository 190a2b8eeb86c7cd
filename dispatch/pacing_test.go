package dispatch

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
)

var t0 = time.Unix(1_800_000_000, 0)

func pacingFor(concurrency int, cfg Pacing) *Pacing {
	cfg.setDefaults(concurrency)
	return &cfg
}

func TestWindowRampsAtScalingRate(t *testing.T) {
	cfg := pacingFor(50, Pacing{Initial: 10, PerMinute: 600, RampLag: time.Nanosecond})
	var p buffer.Pacing
	busy := buffer.Load{Backlog: 1000, InFlight: 10}
	stepWindow(&p, cfg, 50, busy, t0)
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
		stepWindow(&p, cfg, 50, busy, t0.Add(tc.after))
		if p.Window < tc.want-0.01 || p.Window > tc.want+0.01 {
			t.Errorf("window after %v = %.2f, want %v", tc.after, p.Window, tc.want)
		}
	}
	if p.Reason != ReasonAtLimit {
		t.Errorf("reason = %q, want %q", p.Reason, ReasonAtLimit)
	}
}

func TestWindowWaitsForSaturationAndDecaysWhenIdle(t *testing.T) {
	cfg := pacingFor(50, Pacing{Initial: 10, PerMinute: 600, IdleReap: 10 * time.Minute, RampLag: time.Nanosecond})
	var p buffer.Pacing
	// Work, but not enough to fill the window: no growth.
	stepWindow(&p, cfg, 50, buffer.Load{Backlog: 0, InFlight: 4}, t0)
	stepWindow(&p, cfg, 50, buffer.Load{Backlog: 0, InFlight: 4}, t0.Add(5*time.Second))
	if p.Window != 10 {
		t.Fatalf("window without backlog = %v, want 10", p.Window)
	}
	// A burst ramps it, then it idles past the reap time.
	stepWindow(&p, cfg, 50, buffer.Load{Backlog: 500, InFlight: 10}, t0.Add(6*time.Second))
	stepWindow(&p, cfg, 50, buffer.Load{Backlog: 500, InFlight: 10}, t0.Add(8*time.Second))
	if math.Abs(p.Window-30) > 0.01 {
		t.Fatalf("window after a 2s ramp = %v, want 30", p.Window)
	}
	stepWindow(&p, cfg, 50, buffer.Load{}, t0.Add(9*time.Second))
	stepWindow(&p, cfg, 50, buffer.Load{}, t0.Add(9*time.Second+10*time.Minute))
	if p.Window != 10 || p.Reason != ReasonIdle {
		t.Fatalf("after idling past the reap time window = %v (%s), want 10 (idle)", p.Window, p.Reason)
	}
}

func TestThrottleShrinksAndPauses(t *testing.T) {
	t.Run("adaptive learns the limit and probes above it", func(t *testing.T) {
		cfg := pacingFor(100, Pacing{Initial: 10, PerMinute: 600, Adaptive: true, RampLag: time.Nanosecond})
		p := buffer.Pacing{Window: 41}
		throttleWindow(&p, cfg, 100, 2*time.Second, t0)
		if p.Ceiling != 40 || p.Window != 36 || !p.PausedUntil.Equal(t0.Add(2*time.Second)) {
			t.Fatalf("after a throttle at 41: %+v, want ceiling 40, window 36, paused 2s", p)
		}
		// A second 429 from the same overload does not shrink it again.
		throttleWindow(&p, cfg, 100, time.Second, t0.Add(10*time.Millisecond))
		if p.Window != 36 {
			t.Errorf("second throttle of one overload shrank the window to %v", p.Window)
		}
		load := buffer.Load{Backlog: 1000, InFlight: 36}
		stepWindow(&p, cfg, 100, load, t0.Add(time.Second))
		if p.Window != 36 || p.Reason != ReasonThrottled {
			t.Errorf("during the pause window = %v (%s), want 36, throttled", p.Window, p.Reason)
		}
		load.InFlight = 40
		stepWindow(&p, cfg, 100, load, t0.Add(5*time.Second))
		if p.Window != 40 || p.Reason != ReasonAtLearned {
			t.Errorf("after the pause window = %v (%s), want back at the learned 40", p.Window, p.Reason)
		}
		stepWindow(&p, cfg, 100, load, t0.Add(31*time.Second))
		if p.Window != 41 || p.Ceiling != 41 {
			t.Errorf("after 30s without throttles window = %v, ceiling %d; want a probe at 41", p.Window, p.Ceiling)
		}
	})
	t.Run("not adaptive halves", func(t *testing.T) {
		cfg := pacingFor(100, Pacing{Initial: 10, PerMinute: 600})
		p := buffer.Pacing{Window: 40}
		throttleWindow(&p, cfg, 100, time.Hour, t0)
		if p.Window != 20 || p.Ceiling != 0 || !p.PausedUntil.Equal(t0.Add(5*time.Minute)) {
			t.Errorf("after a throttle: %+v, want window 20 and the pause capped at 5m", p)
		}
	})
}

func TestThrottleOf(t *testing.T) {
	now := t0
	for _, tc := range []struct {
		name      string
		resp      Response
		throttled bool
		wait      time.Duration
	}{
		{"429 with seconds", Response{Status: 429, RetryAfter: "3"}, true, 3 * time.Second},
		{"429 without Retry-After", Response{Status: 429}, true, time.Second},
		{"429 with a date", Response{Status: 429, RetryAfter: now.Add(7 * time.Second).UTC().Format(http.TimeFormat)}, true, 7 * time.Second},
		{"503 with Retry-After", Response{Status: 503, RetryAfter: "2"}, true, 2 * time.Second},
		{"503 without Retry-After is a failure", Response{Status: 503}, false, 0},
		{"500", Response{Status: 500, RetryAfter: "2"}, false, 0},
		{"429 with garbage", Response{Status: 429, RetryAfter: "soon"}, true, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wait, throttled := throttleOf(&tc.resp, now)
			if throttled != tc.throttled || wait != tc.wait {
				t.Errorf("throttleOf = %v, %v; want %v, %v", wait, throttled, tc.wait, tc.throttled)
			}
		})
	}
}

func TestColdStartsByLatency(t *testing.T) {
	var c coldStarts
	for range 10 {
		c.observe(100*time.Millisecond, nil)
	}
	if !c.observe(600*time.Millisecond, nil) {
		t.Error("600ms against a 100ms baseline was not judged cold")
	}
	if c.observe(150*time.Millisecond, nil) {
		t.Error("150ms against a 100ms baseline was judged cold")
	}
	yes, no := true, false
	if !c.observe(time.Millisecond, &yes) || c.observe(time.Hour, &no) {
		t.Error("the platform's word did not win over latency")
	}
	if cold, warm := c.take(); cold != 2 || warm != 12 {
		t.Errorf("counts = %d cold, %d warm; want 2, 12", cold, warm)
	}
}
