package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
)

// queuedFlags configure `sluice bench queued`.
type queuedFlags struct {
	jobs, payload, submitters, sample int
	readFor, readWarmup               time.Duration
	harness.StackFlags
	maxRSS      int64
	maxGetRatio float64
}

// parseQueuedFlags parses and checks the flags of `sluice bench queued`.
func parseQueuedFlags(args []string, stderr io.Writer) (queuedFlags, error) {
	fs := flag.NewFlagSet("bench queued", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b queuedFlags
	fs.IntVar(&b.jobs, "jobs", 1_000_000, "jobs to queue")
	fs.IntVar(&b.payload, "payload", 1024, "payload size in bytes")
	fs.IntVar(&b.submitters, "concurrency", 200, "concurrent submitting clients")
	fs.IntVar(&b.sample, "sample", 1000, "jobs whose reads are timed")
	fs.DurationVar(&b.readFor, "read-for", 20*time.Second, "how long GetJob is timed, empty and full")
	fs.DurationVar(&b.readWarmup, "read-warmup", time.Second, "unmeasured GetJob reads before each timed run")
	b.StackFlags.Register(fs)
	fs.Int64Var(&b.maxRSS, "max-rss-mib", 0, "fail if the gateway's RSS exceeds this many MiB (0: no limit)")
	fs.Float64Var(&b.maxGetRatio, "max-get-ratio", 0, "fail if GetJob p99 full / empty exceeds this (0: no limit)")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.jobs < 1 || b.payload < 1 || b.submitters < 1 || b.sample < 1 || b.readFor <= 0 || b.readWarmup < 0 {
		return b, errors.New("bench queued: counts and --read-for must be positive")
	}
	return b, nil
}

// runBenchQueued fills a paused function's queue through the gateway and
// shows that the gateway's memory does not grow with it (the jobs live in
// JetStream) and that reading a job costs the same with the queue full as
// with it empty.
func runBenchQueued(ctx context.Context, b queuedFlags, dir string, stdout, stderr io.Writer) error {
	maxBytes := int64(b.jobs+b.sample) * int64(b.payload+512) * 2
	stack, err := harness.StartStack(ctx, b.StackFlags, dir, fmt.Sprintf(`functions:
  - name: %s
    url: http://127.0.0.1:9/
    paused: true
    max_payload: %d
buffer: {max_jobs: %d, max_bytes: %d, durability: %s}
`, harness.BenchFunction, max(b.payload, 1024), 2*(b.jobs+b.sample), maxBytes, b.Durability), stderr)
	if err != nil {
		return err
	}
	defer stack.Close()
	fmt.Fprintf(stdout, "queued: %d jobs of %d bytes queued through the gateway to a paused function; GetJob timed on %d of them for %s after %s unmeasured, empty and full\n\n",
		b.jobs, b.payload, b.sample, b.readFor, b.readWarmup)

	clients, closeClients, err := stack.GRPCClients(4)
	if err != nil {
		return err
	}
	defer closeClients()
	r := &queuedRun{b: b, stack: stack, clients: clients, payload: bytes.Repeat([]byte("x"), b.payload)}
	m, err := r.measure(ctx)
	if err != nil {
		return err
	}
	return m.report(stdout, b)
}

// queuedRun is one run of `sluice bench queued`.
type queuedRun struct {
	b       queuedFlags
	stack   *harness.Stack
	clients []sluicev1.JobServiceClient
	payload []byte
	ids     []string // the jobs whose reads are timed
}

// queuedMeasures are what a queuedRun measured.
type queuedMeasures struct {
	empty, full                *harness.LoadResult
	rssEmpty, rssFull, rssPeak int64
	natsRSS                    int64
	fill                       time.Duration
	pending                    uint64 // the function's queue, full
}

// measure times reads with the queue empty, fills it, and times them
// again.
func (r *queuedRun) measure(ctx context.Context) (*queuedMeasures, error) {
	var m queuedMeasures
	var mu sync.Mutex
	if err := r.submitN(ctx, r.b.sample, func(id string) { mu.Lock(); r.ids = append(r.ids, id); mu.Unlock() }); err != nil {
		return nil, err
	}
	var err error
	if m.empty, err = r.getJobs(ctx); err != nil {
		return nil, fmt.Errorf("GetJob, empty queue: %w", err)
	}
	if m.rssEmpty, err = r.stack.GatewayRSS(); err != nil {
		return nil, err
	}
	if m.fill, m.rssPeak, err = r.fill(ctx, m.rssEmpty); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	if m.rssFull, err = r.stack.GatewayRSS(); err != nil {
		return nil, err
	}
	if m.full, err = r.getJobs(ctx); err != nil {
		return nil, fmt.Errorf("GetJob, full queue: %w", err)
	}
	cons, err := r.stack.JS.Consumer(ctx, "SLUICE_JOBS", "sluice-dispatch-"+harness.BenchFunction)
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	m.pending = info.NumPending
	if m.natsRSS, err = r.stack.NATSRSS(); err != nil {
		return nil, err
	}
	return &m, nil
}

// submitN submits n jobs from up to b.submitters clients, passing each
// job's ID to keep if it is set.
func (r *queuedRun) submitN(ctx context.Context, n int, keep func(string)) error {
	return harness.RunN(ctx, r.b.submitters, n, func(ctx context.Context, i int) error {
		resp, err := r.clients[i%len(r.clients)].SubmitJob(ctx, &sluicev1.SubmitJobRequest{
			Function: harness.BenchFunction,
			Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: r.payload},
		})
		if err == nil && keep != nil {
			keep(resp.GetJob().GetId())
		}
		return err
	})
}

// getJobs times GetJob on the sampled jobs. Both timed runs start alike,
// after reads that warm what the reads touch: what is timed is reading
// with the queue empty or full, not the first reads after a million
// writes.
func (r *queuedRun) getJobs(ctx context.Context) (*harness.LoadResult, error) {
	get := func(ctx context.Context, w int) error {
		resp, err := r.clients[w%len(r.clients)].GetJob(ctx, &sluicev1.GetJobRequest{Id: r.ids[rand.N(len(r.ids))]})
		job := resp.GetJob()
		if err == nil && job.GetState() != sluicev1.Job_QUEUED {
			err = fmt.Errorf("job %s is %v, want QUEUED", job.GetId(), job.GetState())
		}
		return err
	}
	if r.b.readWarmup > 0 {
		if _, err := harness.RunLoad(ctx, 8, r.b.readWarmup, get); err != nil {
			return nil, err
		}
	}
	return harness.RunLoad(ctx, 8, r.b.readFor, get)
}

// fill submits b.jobs, watching the gateway's memory as the queue grows:
// how long it took, and the peak (at least rss0).
func (r *queuedRun) fill(ctx context.Context, rss0 int64) (time.Duration, int64, error) {
	var peak atomic.Int64
	peak.Store(rss0)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for harness.Sleep(sampleCtx, 250*time.Millisecond) == nil {
			if rss, err := r.stack.GatewayRSS(); err == nil && rss > peak.Load() {
				peak.Store(rss)
			}
		}
	})
	start := time.Now()
	err := r.submitN(ctx, r.b.jobs, nil)
	fill := time.Since(start)
	stopSampling()
	sampler.Wait()
	return fill, peak.Load(), err
}

// report prints what was measured and fails a run over --max-rss-mib or
// --max-get-ratio.
func (m *queuedMeasures) report(stdout io.Writer, b queuedFlags) error {
	mib := harness.MiB
	fmt.Fprintf(stdout, "filled %d jobs in %s (%.0f/s); the function's queue holds %d\n\n", b.jobs, m.fill.Round(time.Millisecond),
		float64(b.jobs)/m.fill.Seconds(), m.pending)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "queue\tgateway RSS MiB\tGetJob reads\tp50 ms\tp99 ms\tp99.9 ms\t")
	fmt.Fprintf(tw, "empty (%d jobs)\t%s\t%d\t%s\t%s\t%s\t\n", b.sample, mib(m.rssEmpty), m.empty.Ops, harness.Millis(m.empty.Quantile(0.5)), harness.Millis(m.empty.Quantile(0.99)), harness.Millis(m.empty.Quantile(0.999)))
	fmt.Fprintf(tw, "full (%d jobs)\t%s\t%d\t%s\t%s\t%s\t\n", m.pending, mib(m.rssFull), m.full.Ops, harness.Millis(m.full.Quantile(0.5)), harness.Millis(m.full.Quantile(0.99)), harness.Millis(m.full.Quantile(0.999)))
	tw.Flush()
	ratio := float64(m.full.Quantile(0.99)) / float64(m.empty.Quantile(0.99))
	fmt.Fprintf(stdout, "\ngateway RSS peak while filling: %s MiB; GetJob p99 full / empty: %.2f\n", mib(m.rssPeak), ratio)
	if m.natsRSS > 0 {
		fmt.Fprintf(stdout, "the JetStream process holding the jobs: %s MiB (with `sluice serve` on its embedded JetStream, one process holds both)\n", mib(m.natsRSS))
	}
	var fails []error
	if b.maxRSS > 0 && m.rssPeak > b.maxRSS<<20 {
		fails = append(fails, fmt.Errorf("gateway RSS peaked at %s MiB, above %d", mib(m.rssPeak), b.maxRSS))
	}
	if b.maxGetRatio > 0 && ratio > b.maxGetRatio {
		fails = append(fails, fmt.Errorf("GetJob p99 full / empty %.2f is above %.2f", ratio, b.maxGetRatio))
	}
	if err := errors.Join(fails...); err != nil {
		return fmt.Errorf("bench queued: %w", err)
	}
	return nil
}
