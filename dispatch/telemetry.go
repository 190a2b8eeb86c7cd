package dispatch

import (
	"context"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/internal/instrument"
)

// instrumentation is the name dispatch's tracer and meter go by.
const instrumentation = "github.com/sluicehq/sluice/dispatch"

// Attribute keys on dispatch's spans and metrics.
const (
	attrFunction = attribute.Key("sluice.function")
	attrPool     = attribute.Key("sluice.pool")
	attrOutcome  = attribute.Key("sluice.outcome")
	attrJobID    = attribute.Key("sluice.job.id")
	attrAttempt  = attribute.Key("sluice.attempt")
	attrReason   = attribute.Key("sluice.reason")
	attrCold     = attribute.Key("sluice.cold_start")
	attrStatus   = attribute.Key("http.response.status_code")
)

// Outcomes of an invocation, as metrics and spans name them.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	outcomeThrottled = "throttled"
)

// telemetry holds dispatch's tracer and instruments. Its zero value is not
// usable; newTelemetry makes one.
type telemetry struct {
	tracer trace.Tracer

	invocations  metric.Int64Counter
	duration     metric.Float64Histogram
	queueWait    metric.Float64Histogram
	throttles    metric.Int64Counter
	coldStarts   metric.Int64Counter
	retries      metric.Int64Counter
	deadLettered metric.Int64Counter
}

func newTelemetry(tp trace.TracerProvider, mp metric.MeterProvider) (*telemetry, error) {
	m := mp.Meter(instrumentation)
	t := &telemetry{tracer: tp.Tracer(instrumentation)}
	var err error
	must := func(e error) {
		if err == nil {
			err = e
		}
	}
	t.invocations, err = m.Int64Counter("sluice.invocations", metric.WithUnit("{invocation}"),
		metric.WithDescription("Invocations of functions, by outcome: succeeded, failed, throttled."))
	var e error
	t.duration, e = m.Float64Histogram("sluice.invocation.duration", metric.WithUnit("s"),
		metric.WithDescription("How long invocations took, by outcome."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
	must(e)
	t.queueWait, e = m.Float64Histogram("sluice.queue.wait", metric.WithUnit("s"),
		metric.WithDescription("How long jobs waited from submit (or redrive) to their first attempt."),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600))
	must(e)
	t.throttles, e = m.Int64Counter("sluice.throttles", metric.WithUnit("{throttle}"),
		metric.WithDescription("Throttles received from the platform: 429, or 503 with Retry-After."))
	must(e)
	t.coldStarts, e = m.Int64Counter("sluice.cold_starts", metric.WithUnit("{invocation}"),
		metric.WithDescription("Invocations that met a new environment."))
	must(e)
	t.retries, e = m.Int64Counter("sluice.retries", metric.WithUnit("{attempt}"),
		metric.WithDescription("Failed attempts that will be tried again."))
	must(e)
	t.deadLettered, e = m.Int64Counter("sluice.dead_letters", metric.WithUnit("{job}"),
		metric.WithDescription("Jobs moved to the dead letters, by reason: failed or expired."))
	must(e)
	return t, err
}

// loopAttrs are a function's metric attribute sets, built once: a set
// built per measurement costs a hash and allocations on every invocation.
type loopAttrs struct {
	fn      metric.MeasurementOption
	outcome map[string]metric.MeasurementOption // with the function, by outcome
}

func newLoopAttrs(function string) loopAttrs {
	a := loopAttrs{
		fn:      metric.WithAttributeSet(attribute.NewSet(attrFunction.String(function))),
		outcome: make(map[string]metric.MeasurementOption),
	}
	for _, o := range []string{outcomeSucceeded, outcomeFailed, outcomeThrottled} {
		a.outcome[o] = metric.WithAttributeSet(attribute.NewSet(attrFunction.String(function), attrOutcome.String(o)))
	}
	return a
}

// Each outcome below is counted twice over, on purpose: in the totals every
// process shares (the API's function status) and in this process's
// metrics.

// countDeadLettered counts a job sent to the dead letters, for reason
// "failed" or "expired".
func (l *functionLoop) countDeadLettered(reason string) {
	l.counts.add(func(c *shared.Counts) { c.DeadLettered++ })
	l.tel.deadLettered.Add(context.Background(), 1, metric.WithAttributes(attrFunction.String(l.fn.Name), attrReason.String(reason))) // rare: built per call
}

// countRetry counts a failed attempt that will be retried.
func (l *functionLoop) countRetry() {
	l.counts.add(func(c *shared.Counts) { c.Retries++ })
	l.tel.retries.Add(context.Background(), 1, l.attrs.fn)
}

// countThrottle counts a throttle received from the platform.
func (l *functionLoop) countThrottle() {
	l.counts.add(func(c *shared.Counts) { c.Throttles++ })
	l.tel.throttles.Add(context.Background(), 1, l.attrs.fn)
}

// gauges are a function's dispatch state as the pace loop last read it,
// for the observable gauges.
type gauges struct {
	backlog   atomic.Int64
	inFlight  atomic.Int64
	window    atomic.Int64
	oldestAge atomic.Int64 // nanoseconds; 0 when nothing is queued
	// learnedLimit and learnedRate are the shared state's learned
	// concurrency limit and start rate (math.Float64bits); 0 while none
	// is known.
	learnedLimit atomic.Int64
	learnedRate  atomic.Uint64
	// lanes are a fair function's lanes active in this process (see
	// laneUnit).
	lanes atomic.Int64
}

// setLearned records what p has learned from throttles: its concurrency
// limit and its start rate.
func (g *gauges) setLearned(p shared.PacingState) {
	g.learnedLimit.Store(int64(p.Ceiling))
	g.learnedRate.Store(math.Float64bits(p.LearnedRate))
}

// registerGauges reports every function's queue depth, oldest job age,
// in-flight count, window, limit, and learned limit and rate when metrics
// are collected.
func registerGauges(mp metric.MeterProvider, loops []*functionLoop, pools []*poolLoop) error {
	m := mp.Meter(instrumentation)
	b := instrument.NewBuilder(m)
	depth := b.Int64Gauge("sluice.queue.depth", "{job}", "Jobs waiting to be dispatched.")
	oldest := b.Float64Gauge("sluice.queue.oldest_age", "s", "Age of the oldest job not yet finished.")
	inFlight := b.Int64Gauge("sluice.dispatch.in_flight", "{invocation}", "Invocations in flight, across gateway processes.")
	window := b.Int64Gauge("sluice.dispatch.window", "{invocation}", "Invocations allowed in flight now: the paced window.")
	limit := b.Int64Gauge("sluice.dispatch.limit", "{invocation}", "The function's configured concurrency limit.")
	learnedLimit := b.Int64Gauge("sluice.dispatch.learned_limit", "{invocation}",
		"The concurrency limit learned from the platform's throttles; 0 while none is known.")
	learnedRate := b.Float64Gauge("sluice.dispatch.learned_rate", "{invocation}/s",
		"Invocation starts per second learned from throttles that came while fewer than the learned limit were in flight; 0 while none is known.")
	lanes := b.Int64Gauge("sluice.dispatch.lanes", "{lane}",
		"A fair function's lanes active in this gateway process: the default lane and those with work, each with a consumer and a puller.")
	if err := b.Err(); err != nil {
		return err
	}
	if err := registerPoolGauges(m, pools); err != nil {
		return err
	}
	return b.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, l := range loops {
			fn := l.attrs.fn
			o.ObserveInt64(depth, l.gauges.backlog.Load(), fn)
			o.ObserveFloat64(oldest, time.Duration(l.gauges.oldestAge.Load()).Seconds(), fn)
			o.ObserveInt64(inFlight, l.gauges.inFlight.Load(), fn)
			o.ObserveInt64(window, l.gauges.window.Load(), fn)
			o.ObserveInt64(limit, int64(l.fn.Concurrency), fn)
			o.ObserveInt64(learnedLimit, l.gauges.learnedLimit.Load(), fn)
			o.ObserveFloat64(learnedRate, math.Float64frombits(l.gauges.learnedRate.Load()), fn)
			if l.fair() {
				o.ObserveInt64(lanes, l.gauges.lanes.Load(), fn)
			}
		}
		return nil
	}, depth, oldest, inFlight, window, limit, learnedLimit, learnedRate, lanes)
}

// registerPoolGauges reports each pool's state as this process last saw it
// (the leader's view, shared through the pool's entry).
func registerPoolGauges(m metric.Meter, pools []*poolLoop) error {
	pools = slices.DeleteFunc(slices.Clone(pools), func(pl *poolLoop) bool { return pl.implicit })
	if len(pools) == 0 {
		return nil
	}
	b := instrument.NewBuilder(m)
	gauge := func(name, desc string) metric.Int64ObservableGauge { return b.Int64Gauge(name, "{invocation}", desc) }
	limit := gauge("sluice.pool.limit", "Invocations a pool allows in flight now, across its functions and gateway processes.")
	inFlight := gauge("sluice.pool.in_flight", "A pooled function's invocations in flight.")
	granted := gauge("sluice.pool.granted", "A pooled function's share of its pool now: the cap the leader aims at.")
	reserved := gauge("sluice.pool.reserved", "A pooled function's reserved share.")
	borrowed := gauge("sluice.pool.borrowed", "A pooled function's invocations in flight above its reserved share.")
	lent := gauge("sluice.pool.lent", "A pooled function's reserved slots it does not use, free for the others.")
	return b.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, pl := range pools {
			st := pl.seen.Load()
			o.ObserveInt64(limit, int64(st.Limit), pl.attrs)
			for _, l := range pl.members {
				mm := st.Members[l.fn.Name]
				attrs := metric.WithAttributes(attrPool.String(pl.pool.Name), attrFunction.String(l.fn.Name))
				o.ObserveInt64(inFlight, int64(mm.InFlight), attrs)
				o.ObserveInt64(granted, int64(mm.Granted), attrs)
				o.ObserveInt64(reserved, int64(mm.Reserved), attrs)
				o.ObserveInt64(borrowed, int64(mm.Borrowed()), attrs)
				o.ObserveInt64(lent, int64(mm.Lent()), attrs)
			}
		}
		return nil
	}, limit, inFlight, granted, reserved, borrowed, lent)
}
