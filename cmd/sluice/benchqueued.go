package main

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

	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/api/httpbody"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// queuedFlags configure `sluice bench queued`.
type queuedFlags struct {
	jobs, payload, submitters, sample int
	readFor, readWarmup               time.Duration
	natsURL, durability, debugAddr    string
	natsDebugAddr                     string
	maxRSS                            int64
	maxGetRatio                       float64
}

// runBenchQueued fills a paused function's queue through the gateway and
// shows that the gateway's memory does not grow with it (the jobs live in
// JetStream) and that reading a job costs the same with the queue full as
// with it empty.
func runBenchQueued(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench queued", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b queuedFlags
	fs.IntVar(&b.jobs, "jobs", 1_000_000, "jobs to queue")
	fs.IntVar(&b.payload, "payload", 1024, "payload size in bytes")
	fs.IntVar(&b.submitters, "concurrency", 200, "concurrent submitting clients")
	fs.IntVar(&b.sample, "sample", 1000, "jobs whose reads are timed")
	fs.DurationVar(&b.readFor, "read-for", 20*time.Second, "how long GetJob is timed, empty and full")
	fs.DurationVar(&b.readWarmup, "read-warmup", time.Second, "unmeasured GetJob reads before each timed run")
	fs.StringVar(&b.natsURL, "nats-url", "", "a NATS server to use instead of an embedded one")
	fs.StringVar(&b.durability, "durability", "always", "the embedded server's durability: always (fsync before ack) or interval")
	fs.StringVar(&b.debugAddr, "gateway-debug-addr", "", "serve the gateway's profiler here (see serve --debug-addr)")
	fs.StringVar(&b.natsDebugAddr, "nats-debug-addr", "", "serve the JetStream process's profiler here")
	fs.Int64Var(&b.maxRSS, "max-rss-mib", 0, "fail if the gateway's RSS exceeds this many MiB (0: no limit)")
	fs.Float64Var(&b.maxGetRatio, "max-get-ratio", 0, "fail if GetJob p99 full / empty exceeds this (0: no limit)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if b.jobs < 1 || b.payload < 1 || b.submitters < 1 || b.sample < 1 || b.readFor <= 0 || b.readWarmup < 0 {
		return errors.New("bench queued: counts and --read-for must be positive")
	}
	dir, removeDir, err := benchScratch()
	if err != nil {
		return err
	}
	defer removeDir()
	maxBytes := int64(b.jobs+b.sample) * int64(b.payload+512) * 2
	stack, err := startBenchStack(ctx, stackOptions{dir: dir, natsURL: b.natsURL, durability: b.durability, debugAddr: b.debugAddr, natsDebugAddr: b.natsDebugAddr, config: fmt.Sprintf(`functions:
  - name: %s
    url: http://127.0.0.1:9/
    paused: true
    max_payload: %d
buffer: {max_jobs: %d, max_bytes: %d, durability: %s}
`, benchFunction, max(b.payload, 1024), 2*(b.jobs+b.sample), maxBytes, b.durability)}, stderr)
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
	payload := bytes.Repeat([]byte("x"), b.payload)
	submitN := func(n int, keep func(string)) error {
		var next atomic.Int64
		g, gctx := errgroup.WithContext(ctx)
		for w := range min(b.submitters, n) {
			g.Go(func() error {
				for int(next.Add(1)) <= n {
					resp, err := clients[w%len(clients)].SubmitJob(gctx, &sluicev1.SubmitJobRequest{
						Function: benchFunction,
						Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: payload},
					})
					if err != nil {
						return err
					}
					if keep != nil {
						keep(resp.GetJob().GetId())
					}
				}
				return nil
			})
		}
		return g.Wait()
	}
	var mu sync.Mutex
	var ids []string
	if err := submitN(b.sample, func(id string) { mu.Lock(); ids = append(ids, id); mu.Unlock() }); err != nil {
		return err
	}
	// Both timed runs start alike, after reads that warm what the reads
	// touch: what is timed is reading with the queue empty or full, not the
	// first reads after a million writes.
	getJobs := func() (*loadResult, error) {
		get := func(ctx context.Context, w int) error {
			resp, err := clients[w%len(clients)].GetJob(ctx, &sluicev1.GetJobRequest{Id: ids[rand.N(len(ids))]})
			job := resp.GetJob()
			if err == nil && job.GetState() != sluicev1.Job_QUEUED {
				err = fmt.Errorf("job %s is %v, want QUEUED", job.GetId(), job.GetState())
			}
			return err
		}
		if b.readWarmup > 0 {
			if _, err := runLoad(ctx, 8, b.readWarmup, get); err != nil {
				return nil, err
			}
		}
		return runLoad(ctx, 8, b.readFor, get)
	}
	empty, err := getJobs()
	if err != nil {
		return fmt.Errorf("GetJob, empty queue: %w", err)
	}
	rssEmpty, err := stack.GatewayRSS()
	if err != nil {
		return err
	}

	// Fill, watching the gateway's memory as the queue grows.
	var peak atomic.Int64
	peak.Store(rssEmpty)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sleepCtx(sampleCtx, 250*time.Millisecond) == nil {
			if rss, err := stack.GatewayRSS(); err == nil && rss > peak.Load() {
				peak.Store(rss)
			}
		}
	})
	start := time.Now()
	err = submitN(b.jobs, nil)
	fill := time.Since(start)
	stopSampling()
	sampler.Wait()
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	rssFull, err := stack.GatewayRSS()
	if err != nil {
		return err
	}
	full, err := getJobs()
	if err != nil {
		return fmt.Errorf("GetJob, full queue: %w", err)
	}
	cons, err := stack.JS.Consumer(ctx, "SLUICE_JOBS", "sluice-dispatch-"+benchFunction)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	natsRSS, err := stack.NATSRSS()
	if err != nil {
		return err
	}

	mib := func(n int64) string { return fmt.Sprintf("%.0f", float64(n)/(1<<20)) }
	fmt.Fprintf(stdout, "filled %d jobs in %s (%.0f/s); the function's queue holds %d\n\n", b.jobs, fill.Round(time.Millisecond),
		float64(b.jobs)/fill.Seconds(), info.NumPending)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "queue\tgateway RSS MiB\tGetJob reads\tp50 ms\tp99 ms\tp99.9 ms\t")
	fmt.Fprintf(tw, "empty (%d jobs)\t%s\t%d\t%s\t%s\t%s\t\n", b.sample, mib(rssEmpty), empty.ops, ms(empty.quantile(0.5)), ms(empty.quantile(0.99)), ms(empty.quantile(0.999)))
	fmt.Fprintf(tw, "full (%d jobs)\t%s\t%d\t%s\t%s\t%s\t\n", info.NumPending, mib(rssFull), full.ops, ms(full.quantile(0.5)), ms(full.quantile(0.99)), ms(full.quantile(0.999)))
	tw.Flush()
	ratio := float64(full.quantile(0.99)) / float64(empty.quantile(0.99))
	fmt.Fprintf(stdout, "\ngateway RSS peak while filling: %s MiB; GetJob p99 full / empty: %.2f\n", mib(peak.Load()), ratio)
	if natsRSS > 0 {
		fmt.Fprintf(stdout, "the JetStream process holding the jobs: %s MiB (with `sluice serve` on its embedded JetStream, one process holds both)\n", mib(natsRSS))
	}
	var fails []error
	if b.maxRSS > 0 && peak.Load() > b.maxRSS<<20 {
		fails = append(fails, fmt.Errorf("gateway RSS peaked at %s MiB, above %d", mib(peak.Load()), b.maxRSS))
	}
	if b.maxGetRatio > 0 && ratio > b.maxGetRatio {
		fails = append(fails, fmt.Errorf("GetJob p99 full / empty %.2f is above %.2f", ratio, b.maxGetRatio))
	}
	if err := errors.Join(fails...); err != nil {
		return fmt.Errorf("bench queued: %w", err)
	}
	return nil
}
