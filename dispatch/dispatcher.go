package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
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
}

// Source hands out the consumers that jobs are pulled from.
type Source interface {
	Consumer(ctx context.Context, cfg buffer.ConsumerConfig) (*buffer.Consumer, error)
}

var _ Source = (*buffer.Queue)(nil)

// Config describes a Dispatcher.
type Config struct {
	// Source is where jobs come from. Required.
	Source Source
	// Functions are the targets. Each gets its own loop.
	Functions []Function
	// Logger receives the dispatcher's logs. Nil means slog.Default().
	Logger *slog.Logger
	// DrainTimeout is how long in-flight invocations may run on after Run's
	// context ends; those still running then are cut off and their jobs
	// handed back to the queue. Zero means 30s.
	DrainTimeout time.Duration
	// FetchWait is how long one pull waits for jobs. Zero means 1s; it also
	// bounds how long Run takes to notice its context ended.
	FetchWait time.Duration
}

// Dispatcher invokes functions with their queued jobs.
type Dispatcher struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Source == nil {
		return nil, errors.New("dispatch: no source")
	}
	for _, f := range cfg.Functions {
		if f.Name == "" || f.Invoker == nil || f.Concurrency < 1 || f.Timeout <= 0 {
			return nil, fmt.Errorf("dispatch: function %q needs a name, an invoker, concurrency ≥ 1 and a timeout", f.Name)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.FetchWait == 0 {
		cfg.FetchWait = time.Second
	}
	return &Dispatcher{cfg: cfg, log: cfg.Logger.With("component", "dispatch")}, nil
}

// Run dispatches until ctx ends, then lets in-flight invocations finish for
// up to DrainTimeout, hands back what is still running, and returns nil.
// It returns an error early only if a function's consumer cannot be set up.
func (d *Dispatcher) Run(ctx context.Context) error {
	loops := make([]*functionLoop, 0, len(d.cfg.Functions))
	for _, f := range d.cfg.Functions {
		cons, err := d.cfg.Source.Consumer(ctx, buffer.ConsumerConfig{
			Function:    f.Name,
			MaxInFlight: f.Concurrency,
			// Past AckWait the server redelivers; leave room for the
			// bookkeeping after a full-length invocation.
			AckWait: f.Timeout + 30*time.Second,
		})
		if err != nil {
			return err
		}
		loops = append(loops, &functionLoop{
			fn:   f,
			cons: cons,
			cfg:  &d.cfg,
			log:  d.log.With("function", f.Name),
		})
	}
	var g errgroup.Group
	for _, l := range loops {
		g.Go(func() error { l.run(ctx); return nil })
	}
	return g.Wait()
}

// functionLoop pulls and invokes one function's jobs. Its fields are set
// before run starts and not changed after.
type functionLoop struct {
	fn   Function
	cons *buffer.Consumer
	cfg  *Config
	log  *slog.Logger
}

func (l *functionLoop) run(ctx context.Context) {
	slots := make(chan struct{}, l.fn.Concurrency)
	// Invocations outlive ctx by up to DrainTimeout; this cancels them.
	invokeCtx, cutOff := context.WithCancel(context.WithoutCancel(ctx))
	defer cutOff()
	var inFlight sync.WaitGroup

	for {
		if ctx.Err() != nil {
			l.drain(&inFlight, cutOff)
			return
		}
		// Pull only as many jobs as there are free slots, and at least one.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			l.drain(&inFlight, cutOff)
			return
		}
		free := 1
		for free < l.fn.Concurrency && tryAcquire(slots) {
			free++
		}
		n, err := l.cons.Fetch(ctx, free, l.cfg.FetchWait, func(dv *buffer.Delivery) {
			if ctx.Err() != nil {
				// Pulled as we were stopping: hand it straight back.
				l.settle(dv.Release, dv)
				<-slots
				return
			}
			inFlight.Go(func() {
				defer func() { <-slots }()
				l.handle(invokeCtx, dv)
			})
		})
		for range free - n {
			<-slots
		}
		if err != nil {
			l.log.WarnContext(ctx, "pull jobs", "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// drain waits for in-flight invocations, cutting them off after
// DrainTimeout.
func (l *functionLoop) drain(inFlight *sync.WaitGroup, cutOff context.CancelFunc) {
	done := make(chan struct{})
	go func() { inFlight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(l.cfg.DrainTimeout):
		l.log.Warn("drain timeout: handing back jobs still running", "drain_timeout", l.cfg.DrainTimeout)
		cutOff()
		<-done
	}
}

// handle runs one attempt at one job and records its outcome.
func (l *functionLoop) handle(ctx context.Context, dv *buffer.Delivery) {
	log := l.log.With("job_id", dv.JobID)
	beginCtx, cancelBegin := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	job, err := dv.Begin(beginCtx)
	cancelBegin()
	switch {
	case errors.Is(err, buffer.ErrFinished):
		// Redelivered after it finished (a crash before the ack, say).
		l.settle(dv.Skip, dv)
		return
	case err != nil:
		log.Error("mark job running", "err", err)
		l.settle(dv.Release, dv)
		return
	}
	invokeCtx, cancel := context.WithTimeout(ctx, l.fn.Timeout)
	defer cancel()
	resp, err := l.fn.Invoker.Invoke(invokeCtx, &Invocation{
		JobID:       dv.JobID,
		Function:    l.fn.Name,
		Attempt:     int(job.Attempts),
		ContentType: dv.ContentType,
		Payload:     dv.Payload,
	})
	if ctx.Err() != nil {
		// Cut off by shutdown, not by the function: run it again later.
		log.Info("invocation cut off by shutdown; job handed back", "attempt", job.Attempts)
		l.settle(dv.Release, dv)
		return
	}
	if err != nil {
		reason := describeInvokeError(err, l.fn.Timeout)
		log.Warn("invocation failed", "attempt", job.Attempts, "reason", reason, "err", err)
		l.settle(func(ctx context.Context) error { return dv.Fail(ctx, reason, nil) }, dv)
		return
	}
	result := &sluicev1.JobResult{HttpStatus: int32(resp.Status), ContentType: resp.ContentType, Body: resp.Body}
	if resp.Status >= 200 && resp.Status < 300 {
		log.Debug("invocation succeeded", "attempt", job.Attempts, "status", resp.Status)
		l.settle(func(ctx context.Context) error { return dv.Succeed(ctx, result) }, dv)
		return
	}
	log.Warn("function answered with an error", "attempt", job.Attempts, "status", resp.Status)
	reason := fmt.Sprintf("function answered HTTP %d", resp.Status)
	l.settle(func(ctx context.Context) error { return dv.Fail(ctx, reason, result) }, dv)
}

// settle runs one of a delivery's closing steps. If it fails, the job's
// message stays unacknowledged and JetStream delivers it again after its
// ack wait, so the error is logged, not returned.
func (l *functionLoop) settle(step func(context.Context) error, dv *buffer.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := step(ctx); err != nil {
		l.log.Error("record job outcome; it will be delivered again", "job_id", dv.JobID, "err", err)
	}
}

// describeInvokeError says why an invocation got no answer, in words fit for
// the job's error field: no addresses, which a caller has no business seeing.
func describeInvokeError(err error, timeout time.Duration) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("function did not answer within its timeout of %s", timeout)
	case errors.Is(err, ErrResponseTooLarge):
		return err.Error()[len("dispatch: "):]
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("function did not answer within its timeout of %s", timeout)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return "could not connect to the function"
	}
	return "connection to the function failed"
}

func tryAcquire(slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
