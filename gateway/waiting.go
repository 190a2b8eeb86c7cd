package gateway

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
)

// explainWait says, on a QUEUED job, what holds it and when it should
// start. It reads the function's shared dispatch state; when that cannot
// be read it leaves the job as it is: an explanation is not worth failing
// a GetJob over.
func (s *Service) explainWait(ctx context.Context, job *sluicev1.Job) {
	if s.dispatch == nil || job.GetState() != sluicev1.Job_QUEUED {
		return
	}
	p, err := s.dispatch.Pacing(ctx, job.Function)
	if err != nil {
		return
	}
	now := time.Now()
	// Pollers ask often: the load is the one admission keeps, not a fresh
	// read per request.
	load, started, err := s.admission.load(ctx, s.dispatch, job.Function, now)
	switch {
	case err != nil:
		return
	case !started:
		job.WaitingReason = "dispatch has not started for the function yet"
		return
	}
	job.WaitingReason = waitingReason(job, p, load, s.functions[job.Function], now)
	if r := s.admission.drain.rate(job.Function, now); r > 0 {
		ahead := max(load.Backlog-1, 0) // it is among the backlog itself
		job.EstimatedStartTime = timestamppb.New(now.Add(time.Duration(float64(ahead) / r * float64(time.Second))))
	}
}

// waitingReason is what holds a queued job of f, most binding first.
func waitingReason(job *sluicev1.Job, p shared.PacingState, load buffer.Load, f Function, now time.Time) string {
	limit := f.Concurrency
	window := int(p.Window)
	if window == 0 {
		window = load.MaxInFlight
	}
	switch {
	case p.Circuit.State == shared.CircuitOpen:
		return fmt.Sprintf("circuit breaker open until %s: most of the function's recent attempts failed (%s)",
			p.Circuit.Until.UTC().Format(time.RFC3339), p.Circuit.Reason)
	case p.Circuit.State == shared.CircuitHalfOpen:
		return "circuit breaker half-open: one probe job is being tried before others are let through"
	case p.PausedUntil.After(now):
		return fmt.Sprintf("the platform asked to wait (Retry-After) until %s", p.PausedUntil.UTC().Format(time.RFC3339))
	case job.GetAttempts() > 0 && job.GetError() != "":
		return fmt.Sprintf("backoff before retrying: attempt %d failed (%s)", job.GetAttempts(), job.GetError())
	case load.InFlight >= window && window < limit && !p.RampStart.IsZero():
		return fmt.Sprintf("scaling ramp: %d in flight, the window of %d is growing toward the limit of %d as the platform scales", load.InFlight, window, limit)
	case load.InFlight >= window && p.Ceiling > 0 && window < limit:
		return fmt.Sprintf("concurrency window full: %d in flight, held at %d below the learned limit of %d the platform throttled at", load.InFlight, window, p.Ceiling)
	case load.InFlight >= window:
		return fmt.Sprintf("concurrency window full: %d of %d in flight", load.InFlight, window)
	case p.LearnedRate > 0 && p.StartRate(f.RatePerSecond) < p.LearnedRate:
		return fmt.Sprintf("paced at the configured rate of %s/s, below the learned rate of %s/s", perSecond(f.RatePerSecond), perSecond(p.LearnedRate))
	case p.LearnedRate > 0:
		return fmt.Sprintf("paced at the learned rate of %s/s: the platform throttled while fewer than the learned limit were in flight", perSecond(p.LearnedRate))
	}
	return fmt.Sprintf("next in line: %d in flight of a window of %d", load.InFlight, window)
}

// perSecond formats a rate for people, as the dashboard does: whole from
// 10 up, to a tenth below.
func perSecond(r float64) string {
	if r >= 10 {
		return strconv.FormatFloat(math.Round(r), 'f', 0, 64)
	}
	return strconv.FormatFloat(math.Round(r*10)/10, 'f', 1, 64)
}
