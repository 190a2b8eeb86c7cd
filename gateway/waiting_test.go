package gateway

import (
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
)

func TestWaitingReason(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	queued := &sluicev1.Job{State: sluicev1.Job_QUEUED}
	retrying := &sluicev1.Job{State: sluicev1.Job_QUEUED, Attempts: 2, Error: "function answered HTTP 500"}
	for _, tc := range []struct {
		name string
		job  *sluicev1.Job
		p    shared.PacingState
		load buffer.Load
		want string
	}{
		{"circuit open", retrying, shared.PacingState{Window: 5, Circuit: shared.Circuit{State: shared.CircuitOpen, Until: now.Add(time.Minute), Reason: "9 of the last 10 attempts failed"}}, buffer.Load{}, "circuit breaker open until 2026-11-27T12:01:00Z"},
		{"half open", queued, shared.PacingState{Window: 5, Circuit: shared.Circuit{State: shared.CircuitHalfOpen}}, buffer.Load{}, "half-open"},
		{"retry-after", queued, shared.PacingState{Window: 5, PausedUntil: now.Add(3 * time.Second)}, buffer.Load{InFlight: 5}, "Retry-After) until 2026-11-27T12:00:03Z"},
		{"backoff", retrying, shared.PacingState{Window: 5}, buffer.Load{InFlight: 1}, "backoff before retrying: attempt 2 failed (function answered HTTP 500)"},
		{"ramp", queued, shared.PacingState{Window: 4, RampStart: now.Add(-time.Second)}, buffer.Load{InFlight: 4}, "scaling ramp: 4 in flight, the window of 4 is growing toward the limit of 10"},
		{"learned limit", queued, shared.PacingState{Window: 6, Ceiling: 7}, buffer.Load{InFlight: 6}, "below the learned limit of 7"},
		{"window full", queued, shared.PacingState{Window: 10}, buffer.Load{InFlight: 10}, "concurrency window full: 10 of 10 in flight"},
		{"learned rate", queued, shared.PacingState{Window: 10, Ceiling: 10, LearnedRate: 182.4}, buffer.Load{InFlight: 3}, "paced at the learned rate of 182/s: the platform throttled while fewer than the learned limit were in flight"},
		{"slow learned rate", queued, shared.PacingState{Window: 10, Ceiling: 10, LearnedRate: 2.5}, buffer.Load{InFlight: 3}, "paced at the learned rate of 2.5/s"},
		{"configured rate below learned", queued, shared.PacingState{Window: 10, Ceiling: 10, LearnedRate: 400}, buffer.Load{InFlight: 3}, "paced at the configured rate of 200/s, below the learned rate of 400/s"},
		{"learned rate, window full", queued, shared.PacingState{Window: 10, LearnedRate: 182}, buffer.Load{InFlight: 10}, "concurrency window full: 10 of 10 in flight"},
		{"room", queued, shared.PacingState{Window: 10}, buffer.Load{InFlight: 3}, "next in line"},
	} {
		if got := waitingReason(tc.job, tc.p, tc.load, Function{Concurrency: 10, RatePerSecond: 200}, now); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want it to contain %q", tc.name, got, tc.want)
		}
	}
}

func TestPaceRate(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		configured, learned, want float64
	}{
		{"neither", 0, 0, 0},
		{"configured only", 50, 0, 50},
		{"learned only", 0, 182.5, 182.5},
		{"learned lower", 200, 182.5, 182.5},
		{"configured lower", 50, 182.5, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (&shared.PacingState{LearnedRate: tc.learned}).StartRate(tc.configured); got != tc.want {
				t.Errorf("StartRate(%v) with %v learned = %v, want %v", tc.configured, tc.learned, got, tc.want)
			}
		})
	}
}
