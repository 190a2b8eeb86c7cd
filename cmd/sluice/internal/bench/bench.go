package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/fair"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/scale"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// Command is one `sluice bench` command.
type Command struct {
	Name, Summary string
	Run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// Commands are the benchmarks, in the order usage lists them.
func Commands() []Command {
	return []Command{
		{"burst", "measure a burst through Sluice against the same burst sent directly", benchmark(parseBurstFlags, runBenchBurst)},
		{"ingress", "measure durable submits over gRPC and REST against JetStream's own rate", benchmark(parseIngressFlags, runBenchIngress)},
		{"pipeline", "measure jobs completed per second end to end, the backlog bounded", benchmark(parsePipelineFlags, runBenchPipeline)},
		{"invoke", "measure what :invoke adds to a call to an idle, instant function", benchmark(parseInvokeFlags, runBenchInvoke)},
		{"queued", "show the gateway's memory and GetJob's latency do not grow with the queue", benchmark(parseQueuedFlags, runBenchQueued)},
		{"pools", "run three functions sharing a concurrency pool across gateway processes", benchmark(parsePoolsFlags, runBenchPools)},
		{"fairness", "run a fair function: one tenant's few jobs against another's backlog", benchmark(fair.ParseFlags, fair.Run)},
		{"pacing", "run bursts against platforms that differ from the config, row by row", benchmark(parsePacingFlags, runBenchPacing)},
		{"scale", "measure an idle gateway with many functions and tenants, and the first job into an idle function", benchmark(scale.ParseFlags, scale.Run)},
	}
}

// benchmark makes a Command's Run of a benchmark's two halves: parse
// parses and checks its flags (F), and run runs it with them in dir, a
// scratch directory removed after it (harness.ScratchDir).
func benchmark[F any](
	parse func(args []string, stderr io.Writer) (F, error),
	run func(ctx context.Context, flags F, dir string, stdout, stderr io.Writer) error,
) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		flags, err := parse(args, stderr)
		if err != nil {
			return err
		}
		dir, removeDir, err := harness.ScratchDir()
		if err != nil {
			return err
		}
		defer removeDir()
		return run(ctx, flags, dir, stdout, stderr)
	}
}

// Run runs one of the benchmarks, or the JetStream the others start
// (bench jetstream), in a process of its own.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The load generator collects garbage as a gateway does; the JetStream
	// process (bench jetstream) as an embedded JetStream does.
	server.TuneGC(len(args) > 0 && args[0] == "jetstream")
	if len(args) > 0 && args[0] == "jetstream" {
		return harness.RunJetStream(ctx, args[1:], stdout, stderr)
	}
	var names []string
	for _, bm := range Commands() {
		if len(args) > 0 && args[0] == bm.Name {
			return bm.Run(ctx, args[1:], stdout, stderr)
		}
		names = append(names, bm.Name)
	}
	return fmt.Errorf("bench: name a benchmark: %s or %s", strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
}

// burstFlags configure `sluice bench burst`.
type burstFlags struct {
	jobs, submitters, payload, gateways, retries   int
	concurrency, initial, perMinute, fnConcurrency int
	handler, coldStart                             time.Duration
	adaptive, direct                               bool
	protocol                                       string
}

// parseBurstFlags parses and checks the flags of `sluice bench burst`.
func parseBurstFlags(args []string, stderr io.Writer) (burstFlags, error) {
	fs := flag.NewFlagSet("bench burst", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b burstFlags
	fs.IntVar(&b.jobs, "jobs", 10_000, "jobs in the burst")
	fs.IntVar(&b.concurrency, "concurrency", 50, "Sluice's configured concurrency for the function")
	fs.IntVar(&b.fnConcurrency, "fn-concurrency", 0, "the platform's real concurrency limit; 0: the same as --concurrency")
	fs.IntVar(&b.initial, "initial", 10, "environments ready at once (Sluice's scaling.initial and the platform's)")
	fs.IntVar(&b.perMinute, "per-minute", 600, "environments added per minute (Sluice's scaling.per_minute and the platform's)")
	fs.DurationVar(&b.handler, "duration", 100*time.Millisecond, "handler run time per invocation")
	fs.DurationVar(&b.coldStart, "cold-start", 500*time.Millisecond, "start-up time of a new environment")
	fs.BoolVar(&b.adaptive, "adaptive", true, "Sluice learns the real limit from throttles")
	fs.IntVar(&b.gateways, "gateways", 1, "gateway processes sharing one NATS")
	fs.IntVar(&b.submitters, "submitters", 64, "concurrent submitting clients")
	fs.StringVar(&b.protocol, "protocol", "grpc", "how clients submit: grpc or rest")
	fs.IntVar(&b.payload, "payload", 256, "payload size in bytes")
	fs.BoolVar(&b.direct, "direct", true, "also drive the burst straight at a fresh platform, as a typical client does")
	fs.IntVar(&b.retries, "direct-retries", 3, "retries of the direct client, with exponential backoff")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.jobs < 1 || b.concurrency < 1 || b.initial < 1 || b.gateways < 1 || b.submitters < 1 || b.perMinute < 0 || b.fnConcurrency < 0 || b.payload < 0 {
		return b, errors.New("bench burst: counts must be positive")
	}
	if b.fnConcurrency == 0 {
		b.fnConcurrency = b.concurrency
	}
	if b.protocol != "grpc" && b.protocol != "rest" {
		return b, fmt.Errorf("bench burst: --protocol %q is neither grpc nor rest", b.protocol)
	}
	return b, nil
}

// runBenchBurst submits a burst of jobs through Sluice to a simulated
// platform and, in the same run, the same burst straight at a fresh one the
// way a typical client does, and compares both with the ideal drain time.
func runBenchBurst(ctx context.Context, b burstFlags, dir string, stdout, stderr io.Writer) error {
	platform := []string{
		"--concurrency", strconv.Itoa(b.fnConcurrency), "--initial", strconv.Itoa(b.initial),
		"--per-minute", strconv.Itoa(b.perMinute), "--cold-start", b.coldStart.String(), "--duration", b.handler.String(),
	}
	model := rampModel{
		limit: min(b.concurrency, b.fnConcurrency), initial: b.initial, perMinute: b.perMinute,
		handler: b.handler, coldStart: b.coldStart,
	}
	fmt.Fprintf(stdout, "burst of %d jobs, %d-byte payloads; platform: concurrency %d, initial %d, +%d/min, handler %s, cold start %s\n",
		b.jobs, b.payload, b.fnConcurrency, b.initial, b.perMinute, b.handler, b.coldStart)
	fmt.Fprintf(stdout, "sluice: %d gateway process(es), concurrency %d, adaptive %v, submits over %s, embedded JetStream with fsync before ack\n\n",
		b.gateways, b.concurrency, b.adaptive, b.protocol)

	sl, err := benchSluice(ctx, sluiceRun{
		jobs: b.jobs, submitters: b.submitters, payload: b.payload, gateways: b.gateways, protocol: b.protocol,
		platform: platform, function: "burst",
		config: func(url string) string {
			return fmt.Sprintf(`name: burst
url: %s
concurrency: %d
timeout: 30s
scaling: {initial: %d, per_minute: %d}
adaptive: %v
`, url, b.concurrency, b.initial, max(b.perMinute, 1), b.adaptive)
		},
	}, dir, stderr)
	if err != nil {
		return fmt.Errorf("sluice run: %w", err)
	}
	var direct *burstResult
	if b.direct {
		if direct, err = benchDirect(ctx, b, platform, stderr); err != nil {
			return fmt.Errorf("direct run: %w", err)
		}
	}
	ideal := idealDrain(model, b.jobs)

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tsluice\tdirect\t")
	row := func(name string, f func(*burstResult) string) {
		d := "-"
		if direct != nil {
			d = f(direct)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, f(sl), d)
	}
	row("completed", func(r *burstResult) string { return strconv.Itoa(r.completed) })
	row("failed", func(r *burstResult) string { return strconv.Itoa(r.failed) })
	row("lost", func(r *burstResult) string { return strconv.Itoa(r.lost) })
	row("throttled responses", func(r *burstResult) string { return strconv.Itoa(r.stats.Throttled) })
	row("cold starts", func(r *burstResult) string { return strconv.Itoa(r.stats.ColdStarts) })
	row("max concurrent", func(r *burstResult) string { return strconv.Itoa(r.stats.MaxConcurrent) })
	row("time to drain", func(r *burstResult) string { return r.drain.Round(10 * time.Millisecond).String() })
	tw.Flush()
	fmt.Fprintf(stdout, "\nsubmits: %d accepted in %s (%.0f/s)\n", sl.completed+sl.failed+sl.lost, sl.submit.Round(10*time.Millisecond),
		float64(b.jobs)/sl.submit.Seconds())
	fmt.Fprintf(stdout, "ideal drain at concurrency %d (ramp model): %s\n", model.limit, ideal.Round(10*time.Millisecond))
	fmt.Fprintf(stdout, "sluice drain / ideal: %.3f\n", sl.drain.Seconds()/ideal.Seconds())
	if sl.stats.Invocations > 0 {
		fmt.Fprintf(stdout, "sluice throttled / invocations: %.2f%%\n", 100*float64(sl.stats.Throttled)/float64(sl.stats.Invocations+sl.stats.Throttled))
	}
	return nil
}

// burstResult is what one run saw.
type burstResult struct {
	completed, failed, lost int
	submit, drain           time.Duration
	stats                   fnsim.Stats
	// status is the function's dispatch state as the first gateway
	// reported it once the burst had drained, if sluiceRun.status asked.
	status *functionStatus
}

// sluiceRun is one burst through Sluice, as benchSluice runs it.
type sluiceRun struct {
	// jobs in the burst, submitted by submitters concurrent clients over
	// protocol (grpc or rest), each with payload bytes.
	jobs, submitters, payload int
	protocol                  string
	// gateways is the number of gateway processes sharing one NATS.
	gateways int
	// platform is the flags of the simulated platform (sluice fnsim).
	platform []string
	// function is the function's name, and config its entry under
	// functions: in the gateways' YAML, given the platform's URL, unindented.
	function string
	config   func(url string) string
	// status reads the function's dispatch state from the first gateway
	// once the burst has drained, into burstResult.status.
	status bool
	// logLevel is the gateways' log level; "" means warn.
	logLevel string
}

// functionStatus is what bench reads of GET /v1/functions/{name}: the
// function's status, with the REST API's camelCase names.
type functionStatus struct {
	Reason       string `json:"reason"`
	LearnedLimit int    `json:"learnedLimit"`
	// LearnedRatePerSecond is absent from gateways that do not learn a
	// rate.
	LearnedRatePerSecond *float64 `json:"learnedRatePerSecond"`
}

// getFunctionStatus reads a function's dispatch state from a gateway's
// REST API (gateway is its base URL).
func getFunctionStatus(ctx context.Context, gateway, function string) (*functionStatus, error) {
	url := gateway + "/v1/functions/" + function
	resp, err := harness.Get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var fn struct { // the REST API answers with the Function itself
		Status *functionStatus `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&fn); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if fn.Status == nil {
		return nil, fmt.Errorf("GET %s: no status", url)
	}
	return fn.Status, nil
}

// indent puts each line of text but the first four spaces in, as an
// entry of the YAML list under functions: needs.
func indent(text string) string {
	return strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\n    ") + "\n"
}

// benchSluice runs the burst through Sluice: gateway processes on one
// embedded NATS, the platform in a process of its own.
func benchSluice(ctx context.Context, b sluiceRun, dir string, stderr io.Writer) (*burstResult, error) {
	fnAddr, stopPlatform, err := harness.StartOwnPlatform(ctx, stderr, b.platform)
	if err != nil {
		return nil, err
	}
	defer stopPlatform() // after the gateways, which call it
	set, err := harness.StartReplicaSet(ctx, dir, "functions:\n  - "+indent(b.config("http://"+fnAddr+"/")), b.gateways, b.logLevel, stderr)
	if err != nil {
		return nil, err
	}
	defer set.Close()

	start := time.Now()
	ids, err := submitBurst(ctx, set, b)
	if err != nil {
		return nil, err
	}
	res := &burstResult{submit: time.Since(start)}
	if err := waitInvocations(ctx, "http://"+fnAddr+"/stats", b.jobs); err != nil {
		return nil, err
	}
	if err := readOutcomes(ctx, set.Queue, ids, start, res); err != nil {
		return nil, err
	}
	if b.status {
		if res.status, err = getFunctionStatus(ctx, set.HTTP[0], b.function); err != nil {
			return nil, err
		}
	}
	res.stats, err = harness.PlatformStats(ctx, "http://"+fnAddr+"/stats")
	return res, err
}

// submitBurst submits the burst's jobs as fast as Sluice accepts them,
// honouring its Retry-After, spread over the gateways, and returns their
// IDs.
func submitBurst(ctx context.Context, set *harness.ReplicaSet, b sluiceRun) ([]string, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.submitters}, Timeout: 30 * time.Second}
	payload := bytes.Repeat([]byte("x"), b.payload)
	ids := make([]string, b.jobs)
	err := harness.RunN(ctx, b.submitters, b.jobs, func(ctx context.Context, i int) error {
		var err error
		if b.protocol == "grpc" {
			ids[i], err = harness.SubmitGRPC(ctx, set.Clients[i%len(set.Clients)], b.function, payload)
		} else {
			ids[i], err = harness.SubmitREST(ctx, client, set.HTTP[i%len(set.HTTP)], b.function, payload)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// waitInvocations waits, cheaply, until the platform (its stats at
// statsURL) has run n invocations.
func waitInvocations(ctx context.Context, statsURL string, n int) error {
	for {
		st, err := harness.PlatformStats(ctx, statsURL)
		if err != nil {
			return err
		}
		if st.Invocations >= n {
			return nil
		}
		if err := harness.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// readOutcomes reads every job's state, again while any is unfinished, and
// counts the outcomes into res, with the drain time from start.
func readOutcomes(ctx context.Context, queue *buffer.Queue, ids []string, start time.Time, res *burstResult) error {
	pending := ids
	for len(pending) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		var still []string
		for _, id := range pending {
			job, err := queue.Get(ctx, id)
			if err != nil {
				return err
			}
			if !buffer.Terminal(job.State) {
				still = append(still, id)
				continue
			}
			if job.State.String() == "SUCCEEDED" {
				res.completed++
			} else {
				res.failed++
			}
			res.drain = max(res.drain, job.FinishTime.AsTime().Sub(start))
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// benchDirect sends the whole burst at once straight at a fresh platform,
// as a client without Sluice does: every request at once, retried on 429s
// and errors with exponential backoff and full jitter.
func benchDirect(ctx context.Context, b burstFlags, platform []string, stderr io.Writer) (*burstResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	var children sync.WaitGroup
	defer children.Wait() // after cancel has stopped them
	defer cancel()
	fnAddr, err := harness.StartPlatform(ctx, &children, stderr, platform)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 30 * time.Second}
	payload := bytes.Repeat([]byte("x"), b.payload)
	var completed, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range b.jobs {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+fnAddr+"/", bytes.NewReader(payload))
				if err != nil {
					failed.Add(1)
					return
				}
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
					resp.Body.Close()
					if resp.StatusCode/100 == 2 {
						completed.Add(1)
						return
					}
				}
				if attempt == b.retries || ctx.Err() != nil {
					failed.Add(1)
					return
				}
				backoff := 100 * time.Millisecond << attempt
				time.Sleep(rand.N(backoff) + time.Millisecond)
			}
		})
	}
	wg.Wait()
	res := &burstResult{completed: int(completed.Load()), failed: int(failed.Load()), drain: time.Since(start)}
	res.stats, err = harness.PlatformStats(ctx, "http://"+fnAddr+"/stats")
	return res, err
}
