// Package metrics is what dispatch reports of itself: its counters and
// histograms, the gauges of each function and pool, and the attribute sets
// they are recorded with. Dispatch's loops record into it; it knows nothing
// of them.
package metrics

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/internal/instrument"
)

// Instrumentation is the name dispatch's tracer and meter go by.
const Instrumentation = "github.com/sluicehq/sluice/dispatch"

// Attribute keys on dispatch's metrics (and spans).
const (
	AttrFunction = attribute.Key("sluice.function")
	AttrPool     = attribute.Key("sluice.pool")
	AttrOutcome  = attribute.Key("sluice.outcome")
	AttrReason   = attribute.Key("sluice.reason")
)

// Outcomes of an invocation, as metrics and spans name them.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
	Throttled = "throttled"
)

// Why a job went to the dead letters.
const (
	ReasonFailed  = "failed"
	ReasonExpired = "expired"
)

// Instruments are dispatch's tracer, counters and histograms.
type Instruments struct {
	Tracer trace.Tracer
	// Invocations and Duration are by function and outcome.
	Invocations metric.Int64Counter
	Duration    metric.Float64Histogram
	// QueueWait is how long jobs waited for their first attempt.
	QueueWait metric.Float64Histogram
	// Throttles, ColdStarts and Retries are by function; DeadLettered by
	// function and reason.
	Throttles    metric.Int64Counter
	ColdStarts   metric.Int64Counter
	Retries      metric.Int64Counter
	DeadLettered metric.Int64Counter
}

// New makes the instruments on tp and mp.
func New(tp trace.TracerProvider, mp metric.MeterProvider) (*Instruments, error) {
	m := mp.Meter(Instrumentation)
	i := &Instruments{Tracer: tp.Tracer(Instrumentation)}
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, e := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err == nil {
			err = e
		}
		return c
	}
	histogram := func(name, desc string, bounds ...float64) metric.Float64Histogram {
		h, e := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		if err == nil {
			err = e
		}
		return h
	}
	i.Invocations = counter("sluice.invocations", "{invocation}", "Invocations of functions, by outcome: succeeded, failed, throttled.")
	i.Duration = histogram("sluice.invocation.duration", "How long invocations took, by outcome.",
		0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
	i.QueueWait = histogram("sluice.queue.wait", "How long jobs waited from submit (or redrive) to their first attempt.",
		0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
	i.Throttles = counter("sluice.throttles", "{throttle}", "Throttles received from the platform: 429, or 503 with Retry-After.")
	i.ColdStarts = counter("sluice.cold_starts", "{invocation}", "Invocations that met a new environment.")
	i.Retries = counter("sluice.retries", "{attempt}", "Failed attempts that will be tried again.")
	i.DeadLettered = counter("sluice.dead_letters", "{job}", "Jobs moved to the dead letters, by reason: failed or expired.")
	return i, err
}

// Function is one function's attribute sets, built once: a set built per
// measurement costs a hash and allocations on every invocation.
type Function struct {
	// Fn is the function alone.
	Fn metric.MeasurementOption
	// Outcome is the function with each invocation outcome.
	Outcome map[string]metric.MeasurementOption
	// Reason is the function with each dead-letter reason.
	Reason map[string]metric.MeasurementOption
}

// NewFunction builds the attribute sets of the function named name.
func NewFunction(name string) Function {
	with := func(kvs ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(kvs, AttrFunction.String(name))...))
	}
	f := Function{Fn: with(), Outcome: map[string]metric.MeasurementOption{}, Reason: map[string]metric.MeasurementOption{}}
	for _, o := range []string{Succeeded, Failed, Throttled} {
		f.Outcome[o] = with(AttrOutcome.String(o))
	}
	for _, r := range []string{ReasonFailed, ReasonExpired} {
		f.Reason[r] = with(AttrReason.String(r))
	}
	return f
}

// Zero starts each of f's counter series at 0, so that a function's
// first throttle, dead letter or cold start is an increase an alert sees
// (a series that appears with its first event has no increase to show).
func (i *Instruments) Zero(ctx context.Context, f Function) {
	for _, o := range f.Outcome {
		i.Invocations.Add(ctx, 0, o)
	}
	for _, r := range f.Reason {
		i.DeadLettered.Add(ctx, 0, r)
	}
	for _, c := range []metric.Int64Counter{i.Throttles, i.ColdStarts, i.Retries} {
		c.Add(ctx, 0, f.Fn)
	}
}

// Gauges are a function's dispatch state as its pace loop last read it,
// for the observable gauges.
type Gauges struct {
	Backlog   atomic.Int64
	InFlight  atomic.Int64
	Window    atomic.Int64
	OldestAge atomic.Int64 // nanoseconds; 0 when nothing is queued
	// LearnedLimit and LearnedRate are the shared state's learned
	// concurrency limit and start rate (math.Float64bits); 0 while none
	// is known.
	LearnedLimit atomic.Int64
	LearnedRate  atomic.Uint64
	// Lanes are a fair function's lanes active in this process.
	Lanes atomic.Int64
	// CircuitOpen is 1 while the circuit breaker holds dispatch (open,
	// or half-open with a probe out), 0 while it is closed.
	CircuitOpen atomic.Int64
}

// SetShared records what the shared state p says: the concurrency limit
// and start rate learned from throttles, and the circuit breaker's state.
func (g *Gauges) SetShared(p shared.PacingState) {
	g.LearnedLimit.Store(int64(p.Ceiling))
	g.LearnedRate.Store(math.Float64bits(p.LearnedRate))
	open := int64(0)
	if p.Circuit.State != shared.CircuitClosed {
		open = 1
	}
	g.CircuitOpen.Store(open)
}

// FunctionGauges is one function as RegisterGauges reports it.
type FunctionGauges struct {
	Attrs  metric.MeasurementOption
	Limit  int  // its configured concurrency
	Fair   bool // it has lanes: report how many are active
	Gauges *Gauges
}

// PoolGauges is one configured pool as RegisterGauges reports it.
type PoolGauges struct {
	Name    string
	Attrs   metric.MeasurementOption
	Members []string
	// Seen is the pool's state as this process last saw it (the leader's
	// view, shared through the pool's entry).
	Seen func() *shared.Pool
}

// RegisterGauges reports every function's queue depth, oldest job age,
// in-flight count, window, limit, learned limit and rate (and a fair one's
// active lanes), and every pool's state, when metrics are collected.
func RegisterGauges(mp metric.MeterProvider, fns []FunctionGauges, pools []PoolGauges) error {
	m := mp.Meter(Instrumentation)
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
	circuitOpen := b.Int64Gauge("sluice.dispatch.circuit_open", "1",
		"1 while the function's circuit breaker holds its dispatch (open or half-open), 0 while closed.")
	if err := b.Err(); err != nil {
		return err
	}
	if err := registerPoolGauges(m, pools); err != nil {
		return err
	}
	return b.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, f := range fns {
			g := f.Gauges
			o.ObserveInt64(depth, g.Backlog.Load(), f.Attrs)
			o.ObserveFloat64(oldest, time.Duration(g.OldestAge.Load()).Seconds(), f.Attrs)
			o.ObserveInt64(inFlight, g.InFlight.Load(), f.Attrs)
			o.ObserveInt64(window, g.Window.Load(), f.Attrs)
			o.ObserveInt64(limit, int64(f.Limit), f.Attrs)
			o.ObserveInt64(learnedLimit, g.LearnedLimit.Load(), f.Attrs)
			o.ObserveFloat64(learnedRate, math.Float64frombits(g.LearnedRate.Load()), f.Attrs)
			o.ObserveInt64(circuitOpen, g.CircuitOpen.Load(), f.Attrs)
			if f.Fair {
				o.ObserveInt64(lanes, g.Lanes.Load(), f.Attrs)
			}
		}
		return nil
	}, depth, oldest, inFlight, window, limit, learnedLimit, learnedRate, lanes, circuitOpen)
}

// registerPoolGauges reports each pool's state as this process last saw
// it.
func registerPoolGauges(m metric.Meter, pools []PoolGauges) error {
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
		for _, p := range pools {
			st := p.Seen()
			o.ObserveInt64(limit, int64(st.Limit), p.Attrs)
			for _, name := range p.Members {
				mm := st.Members[name]
				attrs := metric.WithAttributes(AttrPool.String(p.Name), AttrFunction.String(name))
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
