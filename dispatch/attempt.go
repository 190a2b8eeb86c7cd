package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/metrics"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// Holding a throttled job in this process, instead of handing it back to
// JetStream, keeps its order and spares a state write per throttle; a
// redelivered job would also come back outside the window.
const (
	// maxHold is the longest a throttled job is held; a longer Retry-After
	// hands it back to the queue.
	maxHold = 10 * time.Second
	// holdFirst and holdMax bound the wait of a job refused without a
	// Retry-After: it doubles with each throttle of the same job.
	holdFirst = 50 * time.Millisecond
	holdMax   = 2 * time.Second
	// visibleHold: a job held this long has its throttles written at
	// once, not only with its outcome, so that GET shows why it waits.
	visibleHold = time.Second
)

// handle runs one attempt at one job and records its outcome. runCtx ends
// when dispatch stops; ctx, later, when in-flight work is cut off.
// answered is called once the function has answered, before the outcome
// is recorded.
func (l *functionLoop) handle(runCtx, ctx context.Context, dv *buffer.Delivery, answered func()) {
	// Built on first use: most attempts log nothing.
	log := l.lazyJobLog(dv)
	if !l.waitOutPause(runCtx, dv) {
		return
	}
	bookCtx, cancelBook := context.WithTimeout(context.WithoutCancel(ctx), l.fn.Timeout+10*time.Second)
	defer cancelBook()
	job, err := dv.Prepare(bookCtx)
	switch {
	case errors.Is(err, buffer.ErrFinished):
		// Redelivered after it finished (a crash before the ack, say).
		l.settle(dv.Skip, dv)
		return
	case err != nil:
		log().Error("read job", "err", err)
		l.settle(dv.Release, dv)
		return
	}
	if age := l.cfg.Now().Sub(queuedSince(job)); l.fn.MaxAge > 0 && age > l.fn.MaxAge {
		reason := fmt.Sprintf("not finished within its max age of %s", l.fn.MaxAge)
		l.countDeadLettered(metrics.ReasonExpired)
		log().Warn("job expired", "age", age, "attempts", job.Attempts)
		l.settle(func(ctx context.Context) error { return dv.Expire(ctx, reason) }, dv)
		return
	}
	probe := false
	if !l.fn.Circuit.Disabled {
		expiresIn := time.Duration(math.MaxInt64)
		if l.fn.MaxAge > 0 {
			expiresIn = l.fn.MaxAge - l.cfg.Now().Sub(queuedSince(job))
		}
		var ok bool
		if probe, ok = l.admit(runCtx, dv, expiresIn); !ok {
			return
		}
	}
	attempt := job.Attempts + 1
	for throttles := 1; ; throttles++ {
		inv, ok := l.invoke(runCtx, ctx, bookCtx, dv, job, attempt, throttles == 1)
		if !ok {
			return
		}
		if !inv.throttled {
			// Recording the outcome takes a write or two; the job's slot
			// in the window is free for the next meanwhile.
			answered()
			l.aside.Add(1)
			defer l.aside.Add(-1)
			l.conclude(ctx, dv, inv, probe, log)
			return
		}
		l.judge(probe, false, "") // a busy function is not a broken one
		probe = false
		l.finishSpan(ctx, inv)
		if !l.hold(runCtx, dv, inv, throttles) {
			return
		}
	}
}

// waitOutPause holds the job while the platform asked every dispatch to
// the function to wait (its place in the window with it); a long pause
// hands it back. It reports whether to go on.
func (l *functionLoop) waitOutPause(runCtx context.Context, dv *buffer.Delivery) bool {
	pause := shared.PauseDelay(*l.pacing.Load(), l.cfg.Now())
	if pause <= 0 {
		return true
	}
	if pause > l.fn.Timeout/2 {
		l.settle(func(context.Context) error { return dv.Defer(pause) }, dv)
		return false
	}
	if sleep(runCtx, pause); runCtx.Err() != nil {
		l.settle(dv.Release, dv)
		return false
	}
	return true
}

// invocation is one call of the function for a job, and what came of it.
type invocation struct {
	resp       *target.Response
	err        error
	rec        *sluicev1.Attempt
	span       trace.Span
	ticket     pacing.Ticket
	started    time.Time
	took       time.Duration
	throttled  bool
	retryAfter time.Duration // the throttle's
	given      bool          // the platform named retryAfter
}

// invoke calls the function once, within the window and the rate, and
// reads a throttle from the answer. It reports false when the delivery
// has been settled already (dispatch stopped, or the job finished
// elsewhere).
func (l *functionLoop) invoke(runCtx, ctx, bookCtx context.Context, dv *buffer.Delivery, job *sluicev1.Job, attempt int32, first bool) (*invocation, bool) {
	l.announce(runCtx)
	if err := l.limiter.Wait(runCtx); err != nil {
		l.settle(dv.Release, dv)
		return nil, false
	}
	others, _ := l.pacing.Load().Others(l.id, l.cfg.Now().Add(-pacing.ReportFresh))
	ticket, err := l.inv.Acquire(runCtx, others.Invoking, l.cfg.Now)
	if err != nil {
		l.settle(dv.Release, dv)
		return nil, false
	}
	// Marking the job RUNNING is one fsync'd write. It runs beside the
	// invocation, not before it, and only once the invocation has run for
	// RunningAfter (at once for a redelivery); it is joined before the
	// outcome is written.
	var (
		beginOnce    sync.Once
		beginStarted bool
		began        = make(chan error, 1)
	)
	startBegin := func() {
		beginOnce.Do(func() {
			beginStarted = true
			go func() {
				_, err := dv.Begin(bookCtx)
				began <- err
			}()
		})
	}
	if dv.Redelivered() {
		startBegin()
	} else {
		timer := time.AfterFunc(l.cfg.RunningAfter, startBegin)
		defer timer.Stop()
	}
	// The attempt's span continues the submit's trace; the invoker passes
	// it on to the function as traceparent.
	spanCtx, span := l.tel.Tracer.Start(dv.TraceContext(ctx), "invoke "+l.fn.Name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrFunction.String(l.fn.Name), attrJobID.String(dv.JobID), attrAttempt.Int(int(attempt))))
	invokeCtx, cancel := context.WithTimeout(spanCtx, l.fn.Timeout)
	defer cancel()
	inv := &invocation{span: span, ticket: ticket, started: time.Now()}
	dv.Invoked(inv.started)
	if job.Attempts == 0 && job.Throttles == 0 && first {
		l.tel.QueueWait.Record(ctx, inv.started.Sub(queuedSince(job)).Seconds(), l.attrs.Fn)
	}
	inv.resp, inv.err = l.fn.Invoker.Invoke(invokeCtx, &target.Invocation{
		JobID:       dv.JobID,
		Function:    l.fn.Name,
		Attempt:     int(attempt),
		ContentType: dv.ContentType,
		Payload:     dv.Payload,
	})
	inv.took = time.Since(inv.started)
	if inv.err == nil {
		inv.retryAfter, inv.given, inv.throttled = pacing.ThrottleOf(inv.resp, l.cfg.Now())
	}
	l.inv.Done(ticket, inv.throttled, inv.took)
	beginOnce.Do(func() {}) // too late to start it now
	if beginStarted {
		switch beginErr := <-began; {
		case errors.Is(beginErr, buffer.ErrFinished):
			span.End()
			l.settle(dv.Skip, dv) // finished elsewhere meanwhile
			return nil, false
		case beginErr != nil:
			l.jobLog(dv).Error("mark job running", "err", beginErr) // the outcome write retries from a fresh read
		}
	}
	if ctx.Err() != nil {
		// Cut off by shutdown, not by the function: run it again later.
		span.End()
		l.jobLog(dv).Info("invocation cut off by shutdown; job handed back", "attempt", attempt)
		l.settle(dv.Release, dv)
		return nil, false
	}
	inv.rec = &sluicev1.Attempt{
		Number:    attempt,
		StartTime: timestamppb.New(inv.started),
		Duration:  durationpb.New(inv.took),
		Outcome:   sluicev1.Attempt_FAILED,
	}
	dv.Record(inv.rec)
	if inv.throttled {
		inv.rec.Outcome = sluicev1.Attempt_THROTTLED
		inv.rec.HttpStatus = int32(inv.resp.Status)
		inv.rec.Error = inv.resp.Error // the platform's words, if it had any
		l.learnFromThrottle(inv)
	}
	return inv, true
}

// hold keeps a throttled job in this process and lets it go again when
// its wait is over: the platform's Retry-After, or without one a short
// backoff that doubles with each throttle of the job, and then room in the
// window. A job whose state already says RUNNING, or whose wait is long,
// is handed back to the queue instead, the throttle uncounted as an
// attempt. hold reports whether to invoke again.
func (l *functionLoop) hold(runCtx context.Context, dv *buffer.Delivery, inv *invocation, throttles int) bool {
	wait := inv.retryAfter
	if !inv.given {
		backoff := min(holdMax, holdFirst<<min(throttles-1, 10))
		wait = backoff/2 + rand.N(backoff/2+1)
	}
	wait = max(wait, shared.PauseDelay(*l.pacing.Load(), l.cfg.Now()))
	if dv.Begun() || wait > maxHold || wait > l.fn.Timeout/2 {
		l.log.Info("throttled by the platform; job handed back, attempt not counted",
			"job_id", dv.JobID, "trace_id", traceID(dv), "status", inv.resp.Status, "reason", inv.resp.Error, "retry_after", wait)
		l.settle(func(ctx context.Context) error { return dv.Throttled(ctx, max(wait, holdFirst)) }, dv)
		return false
	}
	dv.NoteThrottled()
	if wait >= visibleHold {
		// Long enough that whoever reads the job should see why it waits.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), 10*time.Second)
		err := dv.SaveThrottles(ctx)
		cancel()
		switch {
		case errors.Is(err, buffer.ErrFinished):
			l.settle(dv.Skip, dv)
			return false
		case err != nil:
			l.jobLog(dv).Warn("record throttles; the outcome's write will", "err", err)
		}
	}
	l.aside.Add(1)
	defer l.aside.Add(-1)
	if sleep(runCtx, wait); runCtx.Err() != nil {
		l.settle(dv.Release, dv)
		return false
	}
	return l.waitOutPause(runCtx, dv)
}

// learnFromThrottle moves the shared window for what the platform saw when
// it refused inv: what was in flight then, and what it took just before.
func (l *functionLoop) learnFromThrottle(inv *invocation) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.countThrottle()
	now := l.cfg.Now()
	others, _ := l.pacing.Load().Others(l.id, now.Add(-pacing.ReportFresh))
	ev := l.inv.Evidence(inv.ticket, others.Starts)
	ev.RetryAfter, ev.Given = inv.retryAfter, inv.given
	if l.fn.Pacing.Adaptive && !ev.TakenAbove {
		l.inv.RefusedWith(ev.InFlight)
	}
	p, err := l.src.UpdatePacing(ctx, l.fn.Name, func(p *shared.PacingState) bool {
		return pacing.Throttle(p, &l.fn.Pacing, l.fn.Concurrency, ev, now)
	})
	if err != nil {
		l.log.Error("shrink window after throttle", "err", err)
		return
	}
	l.storePacing(&p)
	switch {
	case l.pool != nil:
		// The pool's leader alone sets a pooled function's cap; it follows
		// the window at its next round.
		if !l.pool.implicit {
			l.pool.throttled(ctx, now)
		}
	default:
		if err := l.cons.SetMaxInFlight(ctx, l.consumerCap(&p, now)); err != nil {
			l.log.Error("shrink window after throttle", "err", err)
		}
	}
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.Debug("throttled by the platform", "in_flight", ev.InFlight, "taken_above", ev.TakenAbove,
			"start_rate", ev.StartRate, "window", p.Window, "ceiling", p.Ceiling, "learned_rate", p.LearnedRate)
	}
}

// conclude records the outcome of an invocation the platform did not
// throttle: success, a failure to retry, or the end of the job.
func (l *functionLoop) conclude(ctx context.Context, dv *buffer.Delivery, inv *invocation, probe bool, log func() *slog.Logger) {
	defer l.finishSpan(ctx, inv)
	rec, resp, attempt := inv.rec, inv.resp, int(inv.rec.Number)
	if inv.err != nil {
		reason := describeInvokeError(inv.err, l.fn.Timeout)
		rec.Error = reason
		log().Warn("invocation failed", "attempt", attempt, "reason", reason, "err", inv.err)
		if l.judge(probe, retry.RetryableError(inv.err), reason) {
			l.probeFailed(dv, rec)
			return
		}
		l.failed(dv, attempt, reason, nil, retry.RetryableError(inv.err), 0)
		return
	}
	rec.HttpStatus = int32(resp.Status)
	failedStatus := (resp.Status < 200 || resp.Status >= 300) && retry.RetryableStatus(resp.Status)
	if l.judge(probe, failedStatus, answerReason(resp)) {
		rec.Error = answerReason(resp)
		l.probeFailed(dv, rec)
		return
	}
	if rec.ColdStart = l.cold.Observe(inv.took, resp.ColdStart); rec.ColdStart {
		if l.log.Enabled(ctx, slog.LevelDebug) {
			log().Debug("cold start", "attempt", attempt, "took", inv.took)
		}
	}
	result := &sluicev1.JobResult{HttpStatus: int32(resp.Status), ContentType: resp.ContentType, Body: resp.Body}
	if len(result.ContentType) > buffer.MaxContentTypeBytes {
		result.ContentType = "" // kept in the job's state, which has room for no more
	}
	if resp.Status >= 200 && resp.Status < 300 {
		rec.Outcome = sluicev1.Attempt_SUCCEEDED
		l.counts.add(func(c *shared.Counts) { c.Succeeded++ })
		if l.log.Enabled(ctx, slog.LevelDebug) {
			log().Debug("invocation succeeded", "attempt", attempt, "status", resp.Status)
		}
		l.settle(func(ctx context.Context) error { return dv.Succeed(ctx, result) }, dv)
		return
	}
	reason := answerReason(resp)
	log().Warn("function answered with an error", "attempt", attempt, "status", resp.Status, "reason", reason)
	rec.Error = reason
	retryAfter, _ := pacing.ParseRetryAfter(resp.RetryAfter, l.cfg.Now())
	l.failed(dv, attempt, reason, result, retry.RetryableStatus(resp.Status), retryAfter)
}

// finishSpan ends the invocation's span and counts it in the metrics.
func (l *functionLoop) finishSpan(ctx context.Context, inv *invocation) {
	defer inv.span.End()
	rec := inv.rec
	outcome := outcomeFailed
	switch rec.Outcome {
	case sluicev1.Attempt_SUCCEEDED:
		outcome = outcomeSucceeded
		inv.span.SetStatus(codes.Ok, "")
	case sluicev1.Attempt_THROTTLED:
		outcome = outcomeThrottled
	default:
		inv.span.SetStatus(codes.Error, rec.Error)
	}
	if inv.span.IsRecording() {
		inv.span.SetAttributes(attrOutcome.String(outcome), attrStatus.Int(int(rec.HttpStatus)), attrCold.Bool(rec.ColdStart))
	}
	attrs := l.attrs.Outcome[outcome]
	l.tel.Invocations.Add(ctx, 1, attrs)
	l.tel.Duration.Record(ctx, inv.took.Seconds(), attrs)
	if rec.ColdStart {
		l.tel.ColdStarts.Add(ctx, 1, l.attrs.Fn)
	}
}

// failed retries a failed attempt after its backoff if the failure may pass
// and attempts remain, and otherwise fails the job.
func (l *functionLoop) failed(dv *buffer.Delivery, attempt int, reason string, result *sluicev1.JobResult, retryable bool, retryAfter time.Duration) {
	if !retryable || attempt >= l.fn.Retry.MaxAttempts {
		l.countDeadLettered(metrics.ReasonFailed)
		if retryable && l.fn.Retry.MaxAttempts > 1 {
			reason += fmt.Sprintf(" (attempt %d of %d)", attempt, l.fn.Retry.MaxAttempts)
		}
		l.settle(func(ctx context.Context) error { return dv.Fail(ctx, reason, result) }, dv)
		return
	}
	delay := l.fn.Retry.Delay(attempt, retryAfter)
	l.countRetry()
	l.jobLog(dv).Info("attempt failed; retrying", "attempt", attempt, "max_attempts", l.fn.Retry.MaxAttempts, "delay", delay)
	l.settle(func(ctx context.Context) error { return dv.Retry(ctx, reason, result, delay) }, dv)
}

// jobLog is the function's logger for lines about one job: with its ID and
// the ID of the trace its submit began (never its payload).
func (l *functionLoop) jobLog(dv *buffer.Delivery) *slog.Logger {
	return l.log.With("job_id", dv.JobID, "trace_id", traceID(dv))
}

// lazyJobLog is jobLog, built on its first call. Not safe for concurrent
// use: one attempt's goroutine owns it.
func (l *functionLoop) lazyJobLog(dv *buffer.Delivery) func() *slog.Logger {
	var lg *slog.Logger
	return func() *slog.Logger {
		if lg == nil {
			lg = l.jobLog(dv)
		}
		return lg
	}
}

// traceID is the trace the job's submit began; "" when it carried none.
func traceID(dv *buffer.Delivery) string {
	sc := trace.SpanContextFromContext(dv.TraceContext(context.Background()))
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// queuedSince is when the job's max age started counting: when it was
// accepted, or last redriven.
func queuedSince(job *sluicev1.Job) time.Time {
	if t := job.GetRedriveTime(); t != nil {
		return t.AsTime()
	}
	return job.GetCreateTime().AsTime()
}

// answerReason says why an answer that was no success failed, for the
// attempt's error field.
func answerReason(resp *target.Response) string {
	if resp.Error != "" {
		return resp.Error
	}
	return fmt.Sprintf("function answered HTTP %d", resp.Status)
}

// settle runs one of a delivery's closing steps. If it fails, the job's
// message stays unacknowledged and JetStream delivers it again after its
// ack wait, so the error is logged, not returned.
func (l *functionLoop) settle(step func(context.Context) error, dv *buffer.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch err := step(ctx); {
	case errors.Is(err, buffer.ErrKeyNotSettled):
		l.jobLog(dv).Warn("job finished; its concurrency key's next job is let go by the key's next settle", "err", err)
	case err != nil:
		l.jobLog(dv).Error("record job outcome; it will be delivered again", "err", err)
	}
}

// describeInvokeError says why an invocation got no answer, in words fit for
// the job's error field: no addresses, which a caller has no business seeing.
func describeInvokeError(err error, timeout time.Duration) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("function did not answer within its timeout of %s", timeout)
	case errors.Is(err, target.ErrResponseTooLarge):
		return strings.TrimPrefix(err.Error(), "target: ")
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("function did not answer within its timeout of %s", timeout)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return "could not connect to the function"
	}
	return "connection to the function failed"
}
