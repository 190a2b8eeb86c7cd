package main

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

	"golang.org/x/sync/errgroup"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// pipelineFlags configure `sluice bench pipeline`.
type pipelineFlags struct {
	submitters, payload, fnConcurrency, maxBacklog int
	duration, warmup                               time.Duration
	natsURL, durability, debugAddr, natsDebugAddr  string
	minPerSecond                                   float64
	maxBatch, inFlight                             int
}

// The pipeline's buffer: far more than it holds (its backlog is bounded),
// and small enough that JetStream can reserve it on a machine's free disk
// three times over (jobs, dead letters, callbacks).
const (
	pipelineMaxJobs  = 10_000_000
	pipelineMaxBytes = 4 << 30
)

// runBenchPipeline measures jobs completed per second end to end: submitted
// over gRPC, buffered, dispatched to an instant function on a simulated
// platform, and their results stored; with the backlog held under a bound,
// so that what is measured is a rate the pipeline sustains.
func runBenchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b pipelineFlags
	fs.IntVar(&b.submitters, "concurrency", 200, "concurrent submitting clients")
	fs.IntVar(&b.payload, "payload", 1024, "payload size in bytes")
	fs.IntVar(&b.fnConcurrency, "fn-concurrency", 1000, "the function's concurrency limit, Sluice's and the platform's (1,000: a Lambda account's default)")
	fs.IntVar(&b.maxBacklog, "max-backlog", 20_000, "submitters pause while more jobs than this are unfinished")
	fs.DurationVar(&b.duration, "duration", 60*time.Second, "how long the measured run lasts")
	fs.DurationVar(&b.warmup, "warmup", 5*time.Second, "unmeasured run before it")
	fs.StringVar(&b.natsURL, "nats-url", "", "a NATS server to use instead of an embedded one")
	fs.StringVar(&b.durability, "durability", "always", "the embedded server's durability: always (fsync before ack) or interval")
	fs.StringVar(&b.debugAddr, "gateway-debug-addr", "", "serve the gateway's profiler here (see serve --debug-addr)")
	fs.StringVar(&b.natsDebugAddr, "nats-debug-addr", "", "serve the JetStream process's profiler here")
	fs.IntVar(&b.maxBatch, "max-batch", 200, "the gateway's buffer.group_commit.max_batch")
	fs.IntVar(&b.inFlight, "batches-in-flight", 2, "the gateway's buffer.group_commit.in_flight")
	fs.Float64Var(&b.minPerSecond, "min-per-second", 0, "fail unless at least this many jobs complete per second")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if b.submitters < 1 || b.payload < 1 || b.fnConcurrency < 1 || b.maxBacklog < 1 || b.duration <= 0 {
		return errors.New("bench pipeline: counts and --duration must be positive")
	}
	dir, removeDir, err := benchScratch()
	if err != nil {
		return err
	}
	defer removeDir()

	fnAddr, stopPlatform, err := startOwnPlatform(ctx, stderr, []string{"--concurrency", strconv.Itoa(b.fnConcurrency),
		"--duration", "0s", "--cold-start", "0s"})
	if err != nil {
		return err
	}
	defer stopPlatform()
	stack, err := startBenchStack(ctx, stackOptions{dir: dir, natsURL: b.natsURL, durability: b.durability, debugAddr: b.debugAddr, natsDebugAddr: b.natsDebugAddr, config: fmt.Sprintf(`functions:
  - name: %s
    url: http://%s/
    concurrency: %d
    timeout: 30s
    max_payload: %d
buffer: {max_jobs: %d, max_bytes: %d, durability: %s, group_commit: {max_batch: %d, in_flight: %d}}
`, benchFunction, fnAddr, b.fnConcurrency, max(b.payload, 1024), pipelineMaxJobs, pipelineMaxBytes, b.durability, b.maxBatch, b.inFlight)}, stderr)
	if err != nil {
		return err
	}
	defer stack.Close()
	fmt.Fprintf(stdout, "pipeline: %d gRPC clients submit %d-byte jobs to an instant function (concurrency %d) while fewer than %d are unfinished; %s measured after %s\n\n",
		b.submitters, b.payload, b.fnConcurrency, b.maxBacklog, b.duration, b.warmup)

	jobs, err := stack.JS.Stream(ctx, buffer.StreamName)
	if err != nil {
		return err
	}
	states, err := stack.JS.Stream(ctx, "KV_"+buffer.StateBucket)
	if err != nil {
		return err
	}
	payload := bytes.Repeat([]byte("x"), b.payload)
	sub, err := stack.Submitters(ctx, 4, 0, payload)
	if err != nil {
		return err
	}
	defer sub.Close()

	// The backlog is what the function's consumer has not had acknowledged:
	// a job's message is acknowledged only after its outcome is stored.
	cons, err := jobs.Consumer(ctx, buffer.ConsumerName(benchFunction))
	if err != nil {
		return err
	}
	unfinished := func(ctx context.Context) (int64, error) {
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, err
		}
		return int64(info.NumPending) + int64(info.NumAckPending), nil
	}
	var backlog, submitted, maxBacklog atomic.Int64
	var measuring atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	stopSampling := make(chan struct{})
	g.Go(func() error {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			n, err := unfinished(gctx)
			if err != nil {
				return err
			}
			backlog.Store(n)
			if measuring.Load() && n > maxBacklog.Load() {
				maxBacklog.Store(n) // only this goroutine writes it
			}
			select {
			case <-tick.C:
			case <-stopSampling:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	})
	end := time.Now().Add(b.warmup + b.duration)
	var ids sync.Map // a sample of submitted job IDs, checked at the end
	submitters, sctx := errgroup.WithContext(gctx)
	for w := range b.submitters {
		submitters.Go(func() error {
			for n := 0; time.Now().Before(end); n++ {
				if backlog.Load()+int64(b.submitters) > int64(b.maxBacklog) {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				job, err := sub.GRPC(sctx, w)
				if err != nil {
					return err
				}
				submitted.Add(1)
				if n%100 == 0 {
					ids.Store(job.GetId(), true)
				}
			}
			return nil
		})
	}
	type mark struct {
		at                 time.Time
		submitted, backlog int64
		jobSeq, stateSeq   uint64
		cpu                cpuTimes
		batches            batchCounts
		gatewayRSS         int64
	}
	take := func() (mark, error) {
		ji, err1 := jobs.Info(gctx)
		si, err2 := states.Info(gctx)
		cpu, err3 := stack.CPU()
		rss, err4 := stack.GatewayRSS()
		n, err5 := unfinished(gctx)
		bc, err6 := stack.BatchCounts(gctx)
		if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
			return mark{}, err
		}
		return mark{at: time.Now(), submitted: submitted.Load(), backlog: n,
			jobSeq: ji.State.LastSeq, stateSeq: si.State.LastSeq, cpu: cpu, gatewayRSS: rss, batches: bc}, nil
	}
	var start, stop mark
	g.Go(func() error {
		defer close(stopSampling)
		if err := sleepCtx(gctx, b.warmup); err != nil {
			return err
		}
		var err error
		if start, err = take(); err != nil {
			return err
		}
		measuring.Store(true)
		if err := sleepCtx(gctx, b.duration); err != nil {
			return err
		}
		measuring.Store(false)
		if stop, err = take(); err != nil {
			return err
		}
		return submitters.Wait()
	})
	if err := g.Wait(); err != nil {
		return err
	}
	elapsed := stop.at.Sub(start.at)
	completed := (stop.submitted - start.submitted) - (stop.backlog - start.backlog)
	perSecond := float64(completed) / elapsed.Seconds()
	fmt.Fprintf(stdout, "completed: %d jobs in %s: %.0f jobs/s end to end (submitted %.0f/s)\n", completed, elapsed.Round(time.Millisecond),
		perSecond, float64(stop.submitted-start.submitted)/elapsed.Seconds())
	fmt.Fprintf(stdout, "backlog: %d at the start, %d at the end, at most %d (bound %d)\n", start.backlog, stop.backlog, maxBacklog.Load(), b.maxBacklog)
	if completed > 0 {
		fmt.Fprintf(stdout, "writes per job: %.2f job messages per job submitted, %.2f state entries per job completed\n",
			float64(stop.jobSeq-start.jobSeq)/float64(stop.submitted-start.submitted), float64(stop.stateSeq-start.stateSeq)/float64(completed))
		fmt.Fprintf(stdout, "group commit: %s submits per batch, %s state writes per batch (mean)\n",
			meanBatch(start.batches, stop.batches, "jobs"), meanBatch(start.batches, stop.batches, "states"))
		fmt.Fprintf(stdout, "CPU µs per job: gateway / JetStream / clients %s; the machine (every process, the platform's too): %s per job; gateway RSS %.0f MiB at the end\n",
			perOp(start.cpu, stop.cpu, int(completed)), machineLoad(start.cpu, stop.cpu, int(completed)), float64(stop.gatewayRSS)/(1<<20))
	}

	// Every job must finish, and finish well: wait for the backlog to
	// drain, then read a sample of the jobs.
	if err := waitDrained(ctx, unfinished, 2*time.Minute); err != nil {
		return err
	}
	queue, err := buffer.Open(ctx, stack.NC, buffer.Config{MaxJobs: pipelineMaxJobs, MaxBytes: pipelineMaxBytes})
	if err != nil {
		return err
	}
	checked, bad := 0, 0
	var checkErr error
	ids.Range(func(k, _ any) bool {
		job, err := queue.Get(ctx, k.(string))
		if err != nil {
			checkErr = err
			return false
		}
		checked++
		if job.State != sluicev1.Job_SUCCEEDED {
			bad++
		}
		return true
	})
	if checkErr != nil {
		return checkErr
	}
	fmt.Fprintf(stdout, "drained; %d sampled jobs read back: %d SUCCEEDED, %d not\n", checked, checked-bad, bad)
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
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
