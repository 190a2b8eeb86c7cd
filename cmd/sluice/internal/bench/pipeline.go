package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
)

// pipelineFlags configure `sluice bench pipeline`.
type pipelineFlags struct {
	submitters, payload, fnConcurrency, maxBacklog int
	duration, warmup                               time.Duration
	harness.StackFlags
	minPerSecond       float64
	maxBatch, inFlight int
}

// The pipeline's buffer: far more than it holds (its backlog is bounded),
// and small enough that JetStream can reserve it on a machine's free disk
// three times over (jobs, dead letters, callbacks).
const (
	pipelineMaxJobs  = 10_000_000
	pipelineMaxBytes = 4 << 30
)

// parsePipelineFlags parses and checks the flags of `sluice bench pipeline`.
func parsePipelineFlags(args []string, stderr io.Writer) (pipelineFlags, error) {
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b pipelineFlags
	fs.IntVar(&b.submitters, "concurrency", 200, "concurrent submitting clients")
	fs.IntVar(&b.payload, "payload", 1024, "payload size in bytes")
	fs.IntVar(&b.fnConcurrency, "fn-concurrency", 1000, "the function's concurrency limit, Sluice's and the platform's (1,000: a Lambda account's default)")
	fs.IntVar(&b.maxBacklog, "max-backlog", 20_000, "submitters pause while more jobs than this are unfinished")
	fs.DurationVar(&b.duration, "duration", 60*time.Second, "how long the measured run lasts")
	fs.DurationVar(&b.warmup, "warmup", 5*time.Second, "unmeasured run before it")
	b.StackFlags.Register(fs)
	fs.IntVar(&b.maxBatch, "max-batch", 200, "the gateway's buffer.group_commit.max_batch")
	fs.IntVar(&b.inFlight, "batches-in-flight", 2, "the gateway's buffer.group_commit.in_flight")
	fs.Float64Var(&b.minPerSecond, "min-per-second", 0, "fail unless at least this many jobs complete per second")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.submitters < 1 || b.payload < 1 || b.fnConcurrency < 1 || b.maxBacklog < 1 || b.duration <= 0 {
		return b, errors.New("bench pipeline: counts and --duration must be positive")
	}
	return b, nil
}

// runBenchPipeline measures jobs completed per second end to end: submitted
// over gRPC, buffered, dispatched to an instant function on a simulated
// platform, and their results stored; with the backlog held under a bound,
// so that what is measured is a rate the pipeline sustains.
func runBenchPipeline(ctx context.Context, b pipelineFlags, dir string, stdout, stderr io.Writer) error {
	fnAddr, stopPlatform, err := harness.StartOwnPlatform(ctx, stderr, []string{"--concurrency", strconv.Itoa(b.fnConcurrency),
		"--duration", "0s", "--cold-start", "0s"})
	if err != nil {
		return err
	}
	defer stopPlatform()
	stack, err := harness.StartStack(ctx, b.StackFlags, dir, fmt.Sprintf(`functions:
  - name: %s
    url: http://%s/
    concurrency: %d
    timeout: 30s
    max_payload: %d
buffer: {max_jobs: %d, max_bytes: %d, durability: %s, group_commit: {max_batch: %d, in_flight: %d}}
`, harness.BenchFunction, fnAddr, b.fnConcurrency, max(b.payload, 1024), pipelineMaxJobs, pipelineMaxBytes, b.Durability, b.maxBatch, b.inFlight), stderr)
	if err != nil {
		return err
	}
	defer stack.Close()
	fmt.Fprintf(stdout, "pipeline: %d gRPC clients submit %d-byte jobs to an instant function (concurrency %d) while fewer than %d are unfinished; %s measured after %s\n\n",
		b.submitters, b.payload, b.fnConcurrency, b.maxBacklog, b.duration, b.warmup)

	r, err := newPipelineRun(ctx, b, stack)
	if err != nil {
		return err
	}
	defer r.sub.Close()
	start, stop, err := r.measure(ctx)
	if err != nil {
		return err
	}
	perSecond := r.report(stdout, start, stop)
	bad, err := r.checkSample(ctx, stdout)
	if err != nil {
		return err
	}
	var fails []error
	if bad > 0 {
		fails = append(fails, fmt.Errorf("%d sampled jobs did not succeed", bad))
	}
	if b.minPerSecond > 0 && perSecond < b.minPerSecond {
		fails = append(fails, fmt.Errorf("%.0f jobs/s is below the floor of %.0f", perSecond, b.minPerSecond))
	}
	if err := errors.Join(fails...); err != nil {
		return fmt.Errorf("bench pipeline: %w", err)
	}
	return nil
}

// pipelineRun is one run of `sluice bench pipeline`.
type pipelineRun struct {
	b     pipelineFlags
	stack *harness.Stack
	sub   *harness.Submitters
	// jobs and states are the job stream and the state bucket's; cons the
	// function's consumer, once it exists (dispatch makes it when jobs
	// come, and the server removes it once the function has rested 30s).
	jobs, states jetstream.Stream
	consMu       sync.Mutex
	cons         jetstream.Consumer
	// backlog is the last sample of the jobs unfinished, maxBacklog the
	// most while measuring, submitted the jobs submitted.
	backlog, submitted, maxBacklog atomic.Int64
	measuring                      atomic.Bool
	ids                            sync.Map // a sample of submitted job IDs, checked at the end
}

// newPipelineRun finds the streams and the consumer, and connects the
// submitters.
func newPipelineRun(ctx context.Context, b pipelineFlags, stack *harness.Stack) (*pipelineRun, error) {
	r := &pipelineRun{b: b, stack: stack}
	var err error
	if r.jobs, err = stack.JS.Stream(ctx, buffer.StreamName); err != nil {
		return nil, err
	}
	if r.states, err = stack.JS.Stream(ctx, "KV_"+buffer.StateBucket); err != nil {
		return nil, err
	}
	r.sub, err = stack.Submitters(ctx, 4, 0, bytes.Repeat([]byte("x"), b.payload))
	return r, err
}

// unfinished is the backlog: what the function's consumer has not had
// acknowledged, as a job's message is acknowledged only after its outcome
// is stored.
func (r *pipelineRun) unfinished(ctx context.Context) (int64, error) {
	r.consMu.Lock()
	defer r.consMu.Unlock()
	if r.cons == nil {
		cons, err := r.jobs.Consumer(ctx, buffer.ConsumerName(harness.BenchFunction))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return 0, nil // not made yet: no job has come
		}
		if err != nil {
			return 0, err
		}
		r.cons = cons
	}
	info, err := r.cons.Info(ctx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		r.cons = nil // removed while the function rested
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return int64(info.NumPending) + int64(info.NumAckPending), nil
}

// pipelineMark is what the run had done at one moment.
type pipelineMark struct {
	at                 time.Time
	submitted, backlog int64
	jobSeq, stateSeq   uint64
	cpu                harness.CPUTimes
	batches            harness.BatchCounts
	gatewayRSS         int64
}

// take marks the moment.
func (r *pipelineRun) take(ctx context.Context) (pipelineMark, error) {
	ji, err1 := r.jobs.Info(ctx)
	si, err2 := r.states.Info(ctx)
	cpu, err3 := r.stack.CPU()
	rss, err4 := r.stack.GatewayRSS()
	n, err5 := r.unfinished(ctx)
	bc, err6 := r.stack.BatchCounts(ctx)
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return pipelineMark{}, err
	}
	return pipelineMark{at: time.Now(), submitted: r.submitted.Load(), backlog: n,
		jobSeq: ji.State.LastSeq, stateSeq: si.State.LastSeq, cpu: cpu, gatewayRSS: rss, batches: bc}, nil
}

// measure submits for b.warmup and b.duration, the backlog sampled
// throughout, and marks the start and the end of b.duration.
func (r *pipelineRun) measure(ctx context.Context) (start, stop pipelineMark, err error) {
	g, gctx := errgroup.WithContext(ctx)
	stopSampling := make(chan struct{})
	g.Go(func() error { return r.sampleBacklog(gctx, stopSampling) })
	submitters := r.submit(gctx, time.Now().Add(r.b.warmup+r.b.duration))
	g.Go(func() error {
		defer close(stopSampling)
		if err := harness.Sleep(gctx, r.b.warmup); err != nil {
			return err
		}
		var err error
		if start, err = r.take(gctx); err != nil {
			return err
		}
		r.measuring.Store(true)
		if err := harness.Sleep(gctx, r.b.duration); err != nil {
			return err
		}
		r.measuring.Store(false)
		if stop, err = r.take(gctx); err != nil {
			return err
		}
		return submitters.Wait()
	})
	err = g.Wait() // before start and stop are read
	return start, stop, err
}

// sampleBacklog samples the backlog every 100ms until stop is closed.
func (r *pipelineRun) sampleBacklog(ctx context.Context, stop <-chan struct{}) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := r.unfinished(ctx)
		if err != nil {
			return err
		}
		r.backlog.Store(n)
		if r.measuring.Load() && n > r.maxBacklog.Load() {
			r.maxBacklog.Store(n) // only this goroutine writes it
		}
		select {
		case <-tick.C:
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// submit starts b.submitters clients that submit until end, pausing while
// the backlog is near its bound, and keep every 100th job's ID.
func (r *pipelineRun) submit(ctx context.Context, end time.Time) *errgroup.Group {
	submitters, sctx := errgroup.WithContext(ctx)
	for w := range r.b.submitters {
		submitters.Go(func() error {
			for n := 0; time.Now().Before(end); n++ {
				if r.backlog.Load()+int64(r.b.submitters) > int64(r.b.maxBacklog) {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				job, err := r.sub.GRPC(sctx, w)
				if err != nil {
					return err
				}
				r.submitted.Add(1)
				if n%100 == 0 {
					r.ids.Store(job.GetId(), true)
				}
			}
			return nil
		})
	}
	return submitters
}

// report prints what was measured between start and stop, and returns
// the jobs completed per second.
func (r *pipelineRun) report(stdout io.Writer, start, stop pipelineMark) float64 {
	elapsed := stop.at.Sub(start.at)
	completed := (stop.submitted - start.submitted) - (stop.backlog - start.backlog)
	perSecond := float64(completed) / elapsed.Seconds()
	fmt.Fprintf(stdout, "completed: %d jobs in %s: %.0f jobs/s end to end (submitted %.0f/s)\n", completed, elapsed.Round(time.Millisecond),
		perSecond, float64(stop.submitted-start.submitted)/elapsed.Seconds())
	fmt.Fprintf(stdout, "backlog: %d at the start, %d at the end, at most %d (bound %d)\n", start.backlog, stop.backlog, r.maxBacklog.Load(), r.b.maxBacklog)
	if completed > 0 {
		fmt.Fprintf(stdout, "writes per job: %.2f job messages per job submitted, %.2f state entries per job completed\n",
			float64(stop.jobSeq-start.jobSeq)/float64(stop.submitted-start.submitted), float64(stop.stateSeq-start.stateSeq)/float64(completed))
		fmt.Fprintf(stdout, "group commit: %s submits per batch, %s state writes per batch (mean)\n",
			harness.MeanBatch(start.batches, stop.batches, "jobs"), harness.MeanBatch(start.batches, stop.batches, "states"))
		fmt.Fprintf(stdout, "CPU µs per job: gateway / JetStream / clients %s; the machine (every process, the platform's too): %s per job; gateway RSS %.0f MiB at the end\n",
			harness.PerOp(start.cpu, stop.cpu, int(completed)), harness.MachineLoad(start.cpu, stop.cpu, int(completed)), float64(stop.gatewayRSS)/(1<<20))
	}
	return perSecond
}

// checkSample waits for the backlog to drain, since every job must finish
// and finish well, then reads the sampled jobs and returns how many did not
// succeed.
func (r *pipelineRun) checkSample(ctx context.Context, stdout io.Writer) (bad int, err error) {
	if err := waitDrained(ctx, r.unfinished, 2*time.Minute); err != nil {
		return 0, err
	}
	queue, err := buffer.Open(ctx, r.stack.NC, buffer.Config{MaxJobs: pipelineMaxJobs, MaxBytes: pipelineMaxBytes})
	if err != nil {
		return 0, err
	}
	checked := 0
	r.ids.Range(func(k, _ any) bool {
		job, gerr := queue.Get(ctx, k.(string))
		if gerr != nil {
			err = gerr
			return false
		}
		checked++
		if job.State != sluicev1.Job_SUCCEEDED {
			bad++
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(stdout, "drained; %d sampled jobs read back: %d SUCCEEDED, %d not\n", checked, checked-bad, bad)
	return bad, nil
}

// waitDrained waits until no job is unfinished.
func waitDrained(ctx context.Context, unfinished func(context.Context) (int64, error), within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		n, err := unfinished(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d jobs still unfinished %s after the load stopped", n, within)
		}
		if err := harness.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}
