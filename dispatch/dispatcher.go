package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/arrivals"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/metrics"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/internal/gate"
)

// Function is one dispatch target and its limits.
type Function struct {
	// Name is the function's configured name. Required.
	Name string
	// Invoker calls the function. Required.
	Invoker Invoker
	// Concurrency is the most invocations in flight at once, across every
	// gateway process. Required, at least 1.
	Concurrency int
	// Timeout cuts off one invocation. Required.
	Timeout time.Duration
	// Pacing matches the dispatch window to the platform's scaling.
	Pacing pacing.Policy
	// RatePerSecond, if positive, caps invocation starts per second
	// across every gateway process together, with bursts of up to
	// RateBurst (default 1): each process keeps to its share, the rate
	// divided by the processes dispatching the function.
	RatePerSecond float64
	// RateBurst is the rate limiter's burst, across processes.
	RateBurst int
	// KeepWarm holds environments warm while the function is idle.
	KeepWarm KeepWarm
	// Retry says which failed attempts are tried again, and when.
	Retry retry.Policy
	// MaxAge ends a job not finished this long after it was accepted (or
	// last redriven) as EXPIRED, throttles and retries included. Zero means
	// no limit.
	MaxAge time.Duration
	// Circuit says when dispatch to the function pauses because most
	// attempts fail.
	Circuit circuit.Policy
	// Paused stops dispatch in this process: its jobs are accepted and
	// kept, none is invoked, no keep-warm ping is sent.
	Paused bool
	// Pool names the [Pool] in Config.Pools whose capacity the function
	// shares; "" for none.
	Pool string
	// Reserved is the function's guaranteed share of its pool while it has
	// work. Zero means none: it runs on what the others leave.
	Reserved int
	// Lanes, if any, make dispatch fair: each lane (tenant and priority)
	// has a consumer of its own while it has work (see laneUnit), first
	// in first out within it; tenants
	// with work share the function's window by their weights
	// (Config.TenantWeights) and, within a tenant's part, higher priorities
	// go first. The default lane (no tenant, normal) is always among them.
	// Without lanes jobs run in the order they came.
	Lanes []buffer.Lane
	// PriorityAging: a fair function's job that waited this long counts one
	// priority higher, and again after each further period, so a low one
	// never starves. Zero means DefaultPriorityAging (1m).
	PriorityAging time.Duration
}

// KeepWarm sends keep-warm pings (Sluice-Warmup: 1, never a job): while the
// function has no work, every Every, Instances concurrent pings, so the
// platform keeps that many environments. One process sends each round.
type KeepWarm struct {
	// Instances is how many environments to hold warm. Zero turns it off.
	Instances int
	// Every is the time between rounds. Required with Instances.
	Every time.Duration
}

// Source hands out the consumers that jobs are pulled from, and keeps each
// function's dispatch window where every gateway process shares it.
type Source interface {
	Consumer(ctx context.Context, cfg buffer.ConsumerConfig) (*buffer.Consumer, error)
	Pacing(ctx context.Context, function string) (shared.PacingState, error)
	UpdatePacing(ctx context.Context, function string, change func(*shared.PacingState) bool) (shared.PacingState, error)
	Pool(ctx context.Context, pool string) (shared.Pool, error)
	UpdatePool(ctx context.Context, pool string, change func(*shared.Pool) bool) (shared.Pool, error)
	NewArrivals(watches int) *arrivals.Arrivals
	LanesHolding(ctx context.Context, function string) (map[string]bool, error)
	LaneConsumers(ctx context.Context, function string) (map[string]bool, error)
}

var _ Source = (*buffer.Queue)(nil)

// Config describes a Dispatcher.
type Config struct {
	// Source is where jobs come from. Required.
	Source Source
	// Functions are the targets. Each gets its own loop.
	Functions []Function
	// Pools are concurrency limits shared by several functions.
	Pools []Pool
	// TenantWeights weigh tenants' shares of fair functions, by tenant
	// name. A tenant not named weighs 1.
	TenantWeights map[string]int
	// Logger receives the dispatcher's logs. Nil means slog.Default().
	Logger *slog.Logger
	// DrainTimeout is how long in-flight invocations may run on after Run's
	// context ends; those still running then are cut off and their jobs
	// handed back to the queue. Zero means 30s.
	DrainTimeout time.Duration
	// PaceEvery is how often each process re-reads the load and moves the
	// shared window. Zero means 100ms.
	PaceEvery time.Duration
	// RunningAfter is how long a first attempt runs before its job is
	// marked RUNNING. An attempt that ends sooner goes from QUEUED to its
	// outcome in one write, which spares the store an fsync per job; a
	// redelivered job is marked RUNNING at once, so that an attempt cut
	// short by a crash is counted from the second delivery on. Zero means
	// 250ms.
	RunningAfter time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// TracerProvider makes the span of each attempt, in the trace of the
	// submit. Nil means the global one.
	TracerProvider trace.TracerProvider
	// MeterProvider takes dispatch's metrics. Nil means the global one.
	MeterProvider metric.MeterProvider
	// ConsumerIdleLife is how long a consumer nothing pulls from is kept
	// (a resting function's, a retired lane's) before the server removes
	// it. Zero means [ConsumerIdleLife]. Keep it well above a second,
	// the life of a pull request: tests shorten it.
	ConsumerIdleLife time.Duration
}

// Dispatcher invokes functions with their queued jobs.
type Dispatcher struct {
	cfg   Config
	log   *slog.Logger
	tel   *metrics.Instruments
	attrs map[string]metrics.Function // each function's attribute sets, by name
}

// New checks cfg and returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Source == nil {
		return nil, errors.New("dispatch: no source")
	}
	for i := range cfg.Functions {
		f := &cfg.Functions[i]
		if f.Name == "" || f.Invoker == nil || f.Concurrency < 1 || f.Timeout <= 0 {
			return nil, fmt.Errorf("dispatch: function %q needs a name, an invoker, concurrency ≥ 1 and a timeout", f.Name)
		}
		if f.KeepWarm.Instances > 0 && f.KeepWarm.Every <= 0 {
			return nil, fmt.Errorf("dispatch: function %q: keep-warm needs an interval", f.Name)
		}
		if f.Pacing.Initial < 0 || f.Pacing.PerMinute < 0 || f.RatePerSecond < 0 || f.RateBurst < 0 {
			return nil, fmt.Errorf("dispatch: function %q: pacing values must not be negative", f.Name)
		}
		if f.Retry.MaxAttempts < 0 || f.Retry.InitialBackoff < 0 || f.Retry.MaxBackoff < 0 || f.Retry.Multiplier < 0 || f.MaxAge < 0 {
			return nil, fmt.Errorf("dispatch: function %q: retry values and max age must not be negative", f.Name)
		}
		if f.Circuit.FailureRatio < 0 || f.Circuit.FailureRatio > 1 || f.Circuit.MinAttempts < 0 || f.Circuit.Window < 0 || f.Circuit.Cooldown < 0 || f.Circuit.MaxCooldown < 0 {
			return nil, fmt.Errorf("dispatch: function %q: circuit breaker values must not be negative, and its failure ratio at most 1", f.Name)
		}
		f.Pacing.SetDefaults(f.Concurrency)
		f.Retry.SetDefaults()
		f.Circuit.SetDefaults()
	}
	if err := checkPools(cfg.Pools, cfg.Functions); err != nil {
		return nil, err
	}
	if cfg.PaceEvery == 0 {
		cfg.PaceEvery = 100 * time.Millisecond
	}
	if cfg.RunningAfter == 0 {
		cfg.RunningAfter = 250 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.ConsumerIdleLife <= 0 {
		cfg.ConsumerIdleLife = ConsumerIdleLife
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	tel, err := metrics.New(cfg.TracerProvider, cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("dispatch: metrics: %w", err)
	}
	attrs := make(map[string]metrics.Function, len(cfg.Functions))
	for _, f := range cfg.Functions {
		attrs[f.Name] = metrics.NewFunction(f.Name)
		tel.Zero(context.Background(), attrs[f.Name]) // every counter of every function, from the start
	}
	return &Dispatcher{cfg: cfg, log: cfg.Logger.With("component", "dispatch"), tel: tel, attrs: attrs}, nil
}

// Run dispatches until ctx ends, then lets in-flight invocations finish for
// up to DrainTimeout, hands back what is still running, and returns nil.
// It returns an error early only if a function's consumer cannot be set up;
// JetStream unavailable for a while (see waitOutUnavailable) is waited out.
func (d *Dispatcher) Run(ctx context.Context) error {
	id := processID()
	loops := make([]*functionLoop, 0, len(d.cfg.Functions))
	watches := 0 // at most one for each function, and each of its lanes
	for _, f := range d.cfg.Functions {
		l, err := d.newFunctionLoop(ctx, f, id)
		if err != nil {
			return stoppedOr(ctx, err)
		}
		loops = append(loops, l)
		watches += 1 + len(l.lanes)
	}
	arrivals := d.cfg.Source.NewArrivals(watches)
	for _, l := range loops {
		l.arrivals = arrivals
	}
	pools := d.newPoolLoops(loops, id)
	fns, ps := gaugeSources(loops, pools)
	if err := metrics.RegisterGauges(d.cfg.MeterProvider, fns, ps); err != nil {
		return fmt.Errorf("dispatch: metrics: %w", err)
	}
	var woken sync.WaitGroup
	woken.Go(func() { arrivals.Run(ctx) }) // wakes resting loops
	defer woken.Wait()
	return runLoops(ctx, loops, pools)
}

// newFunctionLoop sets up f's loop in process id: its consumers, one per
// lane, and its window.
func (d *Dispatcher) newFunctionLoop(ctx context.Context, f Function, id string) (*functionLoop, error) {
	// Start from the window the processes already share, if any, so
	// that joining them does not reset it.
	shared, err := waitOutUnavailable(ctx, d.log, "read the shared pacing of "+f.Name, func() (shared.PacingState, error) {
		return d.cfg.Source.Pacing(ctx, f.Name)
	})
	if err != nil {
		return nil, err
	}
	window := f.Pacing.Initial
	if shared.Window >= 1 {
		window = min(f.Concurrency, int(shared.Window))
	}
	units, err := d.laneUnits(ctx, f, window)
	if err != nil {
		return nil, err
	}
	l := &functionLoop{
		fn:    f,
		cons:  units[0].cons,
		lanes: units,
		src:   d.cfg.Source,
		cfg:   &d.cfg,
		log:   d.log.With("function", f.Name),
		tel:   d.tel,
		attrs: d.attrs[f.Name],
		wake:  make(chan struct{}, 1),

		laneStarts: make(chan struct{}, 1),
	}
	// The default lane is always active; a fair function's others from
	// their first job's arrival (see laneUnit), but a paused function's,
	// whose backlogs the pool's leader keeps in view.
	for i, u := range units {
		if i == 0 || f.Paused {
			u.active = true
			l.toStart = append(l.toStart, u)
		}
	}
	l.id = id
	l.inv = pacing.NewInvocations(window, f.Concurrency)
	l.limiter = rate.NewLimiter(rate.Inf, 1)
	l.storePacing(&shared)
	return l, nil
}

// laneUnits sets up a consumer for each of f's lanes, capped at window to
// start with: one lane for all its jobs unless f is fair.
func (d *Dispatcher) laneUnits(ctx context.Context, f Function, window int) ([]*laneUnit, error) {
	lanes := []*buffer.Lane{nil}
	if len(f.Lanes) > 0 {
		lanes = fairLanes(f.Lanes)
	}
	var units []*laneUnit
	for _, lane := range lanes {
		cons, err := waitOutUnavailable(ctx, d.log, "set up the consumer of "+f.Name, func() (*buffer.Consumer, error) {
			return d.cfg.Source.Consumer(ctx, buffer.ConsumerConfig{
				Function:    f.Name,
				MaxInFlight: window,
				// Past AckWait the server redelivers; leave room for the
				// bookkeeping after a full-length invocation.
				AckWait: f.Timeout + 15*time.Second,
				// A pool's leader sets the cap of a pooled or fair
				// function's consumers.
				Pooled: f.Pool != "" || lane != nil,
				Lane:   lane,
				// The server keeps a consumer only while it is pulled
				// from: a resting function holds none. A paused one's
				// stays, for its backlog on the status pages.
				IdleLife: d.idleLife(f),
			})
		})
		if err != nil {
			return nil, err
		}
		u := &laneUnit{name: f.Name, cons: cons, lane: lane, weight: 1}
		if lane != nil {
			u.name = f.Name + "/" + lane.Tenant + "/" + buffer.PriorityName(lane.Priority)
			u.subject = buffer.LaneSubjects(f.Name, *lane)
			if w, ok := d.cfg.TenantWeights[lane.Tenant]; ok && w > 0 {
				u.weight = w
			}
		}
		units = append(units, u)
	}
	return units, nil
}

// newPoolLoops sets up a loop for each configured pool with members among
// loops, and one for each fair function outside any pool.
func (d *Dispatcher) newPoolLoops(loops []*functionLoop, id string) []*poolLoop {
	pools := make([]*poolLoop, 0, len(d.cfg.Pools))
	for _, p := range d.cfg.Pools {
		var members []*functionLoop
		for _, l := range loops {
			if l.fn.Pool == p.Name {
				members = append(members, l)
			}
		}
		if len(members) > 0 {
			pools = append(pools, newPoolLoop(p, members, &d.cfg, d.log, id))
		}
	}
	// A fair function outside any pool shares its window between its lanes
	// the same way: as the only member of a pool of its own.
	for _, l := range loops {
		if l.fn.Pool == "" && l.lanes[0].lane != nil {
			pl := newPoolLoop(Pool{Name: "_fn." + l.fn.Name, Concurrency: l.fn.Concurrency}, []*functionLoop{l}, &d.cfg, d.log, id)
			pl.implicit = true
			pools = append(pools, pl)
		}
	}
	return pools
}

// runLoops runs the pools' loops and, for each function not paused, its
// dispatch, pacing and keep-warm loops, until ctx ends and dispatch has
// drained.
func runLoops(ctx context.Context, loops []*functionLoop, pools []*poolLoop) error {
	var g errgroup.Group
	for _, pl := range pools {
		g.Go(func() error { pl.run(ctx); return nil })
	}
	for _, l := range loops {
		if l.fn.Paused {
			l.log.Info("dispatch paused by configuration; jobs are kept until it resumes")
			continue
		}
		l.pulls = gate.New(ctx) // shut: a function starts at rest, and pulls once its pace loop finds work
		paceCtx, stopPacing := context.WithCancel(ctx)
		g.Go(func() error { l.pace(paceCtx); return nil })
		if l.fn.KeepWarm.Instances > 0 {
			g.Go(func() error { l.keepWarm(paceCtx); return nil })
		}
		g.Go(func() error { defer stopPacing(); l.run(ctx); return nil })
	}
	return g.Wait()
}

// ConsumerIdleLife is how long, by default, a resting function's consumers
// (or a retired lane's) are kept before the server removes them; the next
// job makes them again.
const ConsumerIdleLife = 30 * time.Second

// idleLife is the idle life of f's consumers: none while dispatch of f is
// paused, so that its backlog stays in view.
func (d *Dispatcher) idleLife(f Function) time.Duration {
	if f.Paused {
		return 0
	}
	return d.cfg.ConsumerIdleLife
}

// fairLanes are a fair function's lanes, each once, the default lane first.
func fairLanes(lanes []buffer.Lane) []*buffer.Lane {
	out := []*buffer.Lane{{}}
	seen := map[string]bool{}
	for _, l := range lanes {
		key := l.Tenant + "~" + buffer.PriorityName(l.Priority)
		if l.Default() || seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, &l)
	}
	return out
}

// setupRetryMax caps the wait between attempts of waitOutUnavailable.
const setupRetryMax = 2 * time.Second

// waitOutUnavailable runs step until it succeeds, fails in a way waiting
// will not mend, or ctx ends. JetStream without a leader or out of reach
// ([buffer.Unavailable]: no responders, a timeout, a 503) is waited out,
// with a warning each time, so that a gateway started during a NATS leader
// election or rolling restart starts dispatching when it ends instead of
// exiting.
func waitOutUnavailable[T any](ctx context.Context, log *slog.Logger, what string, step func() (T, error)) (T, error) {
	wait := 100 * time.Millisecond
	for {
		v, err := step()
		if err == nil || !buffer.Unavailable(err) || ctx.Err() != nil {
			return v, err
		}
		log.WarnContext(ctx, "JetStream unavailable; trying again", "step", what, "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return v, err
		}
		wait = min(2*wait, setupRetryMax)
	}
}

// stoppedOr is nil when ctx ended (a stop during setup is no failure), and
// err otherwise.
func stoppedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
