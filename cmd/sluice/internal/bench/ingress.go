package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
)

// ingressFlags configure `sluice bench ingress`.
type ingressFlags struct {
	concurrency, payload int
	duration, warmup     time.Duration
	harness.StackFlags
	minRatio, restRatio float64
	maxP99              time.Duration
	maxBatch, inFlight  int
}

// benchPath is one way in that a benchmark measures.
type benchPath struct {
	name    string
	clients int
	op      func(ctx context.Context, worker int) error
}

// parseIngressFlags parses and checks the flags of `sluice bench ingress`.
func parseIngressFlags(args []string, stderr io.Writer) (ingressFlags, error) {
	fs := flag.NewFlagSet("bench ingress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b ingressFlags
	fs.IntVar(&b.concurrency, "concurrency", 200, "concurrent submitting clients")
	fs.IntVar(&b.payload, "payload", 1024, "payload size in bytes")
	fs.DurationVar(&b.duration, "duration", 10*time.Second, "how long each path is measured")
	fs.DurationVar(&b.warmup, "warmup", time.Second, "unmeasured load before each path")
	b.StackFlags.Register(fs)
	fs.IntVar(&b.maxBatch, "max-batch", 200, "the gateway's buffer.group_commit.max_batch")
	fs.IntVar(&b.inFlight, "batches-in-flight", 2, "the gateway's buffer.group_commit.in_flight")
	fs.Float64Var(&b.minRatio, "min-ratio", 0, "fail unless gRPC ingress is at least this multiple of the baseline")
	fs.Float64Var(&b.restRatio, "min-rest-ratio", 0, "fail unless REST ingress is at least this multiple of gRPC's")
	fs.DurationVar(&b.maxP99, "max-p99", 0, "fail if gRPC ingress p99 latency exceeds this (0: no limit)")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.concurrency < 1 || b.payload < 1 || b.duration <= 0 {
		return b, errors.New("bench ingress: --concurrency, --payload and --duration must be positive")
	}
	if b.Durability != "always" && b.Durability != "interval" {
		return b, fmt.Errorf("bench ingress: --durability %q is neither always nor interval", b.Durability)
	}
	return b, nil
}

// runBenchIngress measures durable submits over gRPC and REST against
// JetStream's own one-message-per-publish rate, in the same run.
func runBenchIngress(ctx context.Context, b ingressFlags, dir string, stdout, stderr io.Writer) error {
	stack, err := harness.StartStack(ctx, b.StackFlags, dir, fmt.Sprintf(`functions:
  - name: %s
    url: http://127.0.0.1:9/
    paused: true
    max_payload: %d
buffer: {max_jobs: 100000000, max_bytes: 4GiB, durability: %s, group_commit: {max_batch: %d, in_flight: %d}}
`, harness.BenchFunction, max(b.payload, 1024), b.Durability, b.maxBatch, b.inFlight), stderr)
	if err != nil {
		return err
	}
	defer stack.Close()

	where := "embedded JetStream, fsync before every ack"
	if b.Durability == "interval" {
		where = "embedded JetStream, fsync every 2 minutes"
	}
	if b.NATSURL != "" {
		where = "JetStream at " + b.NATSURL + " (its own sync_interval)"
	}
	fmt.Fprintf(stdout, "ingress: %d concurrent clients, %d-byte payloads, %s per path after %s warm-up; %s\n\n",
		b.concurrency, b.payload, b.duration, b.warmup, where)

	payload := bytes.Repeat([]byte("x"), b.payload)
	baseline, baselineCPU, err := baselinePublish(ctx, stack, b, payload)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	ceilingBatch := max(b.concurrency/2, 1)
	ceiling, ceilingCPU, err := batchCeiling(ctx, stack, b, payload, ceilingBatch)
	if err != nil {
		return fmt.Errorf("atomic batch ceiling: %w", err)
	}
	sub, err := stack.Submitters(ctx, 4, b.concurrency, payload)
	if err != nil {
		return err
	}
	defer sub.Close()

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tclients\tsubmits\tper second\tp50 ms\tp99 ms\tp99.9 ms\tvs baseline\tCPU µs/submit: gateway / JetStream / client\tmachine: busy, µs/submit\tmean batch\t")
	row := func(name string, clients int, r *harness.LoadResult, cpu, batch string) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%.2f\t%s\t%s\t\n", name, clients, r.Ops, r.PerSecond(),
			harness.Millis(r.Quantile(0.5)), harness.Millis(r.Quantile(0.99)), harness.Millis(r.Quantile(0.999)), r.PerSecond()/baseline.PerSecond(), cpu, batch)
	}
	row("JetStream, one message per publish", b.concurrency, baseline, baselineCPU, "1")
	fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%.2f\t%s\t%d\t\n", "JetStream, atomic batches (the ceiling)", b.concurrency,
		ceiling.Ops*ceilingBatch, ceiling.PerSecond()*float64(ceilingBatch), harness.Millis(ceiling.Quantile(0.5)), harness.Millis(ceiling.Quantile(0.99)),
		harness.Millis(ceiling.Quantile(0.999)), ceiling.PerSecond()*float64(ceilingBatch)/baseline.PerSecond(), ceilingCPU, ceilingBatch)
	results, err := measurePaths(ctx, stack, b, sub, row)
	if err != nil {
		return err
	}
	tw.Flush()
	return checkIngress(stdout, b, results, baseline.PerSecond(), ceiling.PerSecond()*float64(ceilingBatch))
}

// measurePaths measures each way in through the gateway, after a warm-up
// and with the job stream emptied, and prints each as a row.
func measurePaths(ctx context.Context, stack *harness.Stack, b ingressFlags, sub *harness.Submitters, row func(name string, clients int, r *harness.LoadResult, cpu, batch string)) (map[string]*harness.LoadResult, error) {
	grpcSubmit := func(ctx context.Context, w int) error {
		_, err := sub.GRPC(ctx, w)
		return err
	}
	paths := []benchPath{
		{"sluice gRPC", b.concurrency, grpcSubmit},
		{"sluice REST", b.concurrency, sub.REST},
		{"sluice gRPC, one client", 1, grpcSubmit},
	}
	results := map[string]*harness.LoadResult{}
	for _, p := range paths {
		if err := purgeJobs(ctx, stack.JS); err != nil {
			return nil, err
		}
		if _, err := harness.RunLoad(ctx, p.clients, b.warmup, p.op); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		batches0, err := stack.BatchCounts(ctx)
		if err != nil {
			return nil, err
		}
		cpu0, err := stack.CPU()
		if err != nil {
			return nil, err
		}
		r, err := harness.RunLoad(ctx, p.clients, b.duration, p.op)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		cpu1, err := stack.CPU()
		if err != nil {
			return nil, err
		}
		batches1, err := stack.BatchCounts(ctx)
		if err != nil {
			return nil, err
		}
		results[p.name] = r
		row(p.name, p.clients, r, cpuColumns(cpu0, cpu1, r.Ops), harness.MeanBatch(batches0, batches1, "jobs"))
	}
	return results, nil
}

// checkIngress prints the ratios and fails a run below --min-ratio or
// --min-rest-ratio or above --max-p99; baseline and ceiling are their
// submits per second.
func checkIngress(stdout io.Writer, b ingressFlags, results map[string]*harness.LoadResult, baseline, ceiling float64) error {
	grpcR, restR := results["sluice gRPC"], results["sluice REST"]
	ratio := grpcR.PerSecond() / baseline
	fmt.Fprintf(stdout, "\ngRPC / baseline: %.2f   gRPC / ceiling: %.2f   REST / gRPC: %.2f   one client's p50: %s ms\n",
		ratio, grpcR.PerSecond()/ceiling, restR.PerSecond()/grpcR.PerSecond(),
		harness.Millis(results["sluice gRPC, one client"].Quantile(0.5)))
	var fails []string
	if b.minRatio > 0 && ratio < b.minRatio {
		fails = append(fails, fmt.Sprintf("gRPC / baseline %.2f is below the floor of %.2f", ratio, b.minRatio))
	}
	if b.restRatio > 0 && restR.PerSecond()/grpcR.PerSecond() < b.restRatio {
		fails = append(fails, fmt.Sprintf("REST / gRPC %.2f is below the floor of %.2f", restR.PerSecond()/grpcR.PerSecond(), b.restRatio))
	}
	if p99 := grpcR.Quantile(0.99); b.maxP99 > 0 && p99 > b.maxP99 {
		fails = append(fails, fmt.Sprintf("gRPC p99 %s is above the ceiling of %s", p99, b.maxP99))
	}
	if len(fails) > 0 {
		return errors.New("bench ingress: " + strings.Join(fails, "; "))
	}
	return nil
}

// baselinePublish publishes the payload straight to a stream of its own on
// the same JetStream, one message per publish, each waiting for its ack:
// what a client storing its own jobs would get.
func baselinePublish(ctx context.Context, stack *harness.Stack, b ingressFlags, payload []byte) (*harness.LoadResult, string, error) {
	const name = "SLUICE_BENCH_BASELINE"
	stream, err := stack.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"sluice-bench.baseline.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return nil, "", err
	}
	defer stack.JS.DeleteStream(context.WithoutCancel(ctx), name) //nolint:errcheck // scratch
	publish := func(ctx context.Context, w int) error {
		id := buffer.NewJobID()
		msg := nats.NewMsg("sluice-bench.baseline." + id)
		msg.Data = payload
		msg.Header.Set("Sluice-Job-Id", id)
		msg.Header.Set("Content-Type", "application/octet-stream")
		_, err := stack.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		return err
	}
	return measureStream(ctx, stack, stream, b, b.concurrency, 1, publish)
}

// batchCeiling publishes the payload straight to a stream of its own as
// JetStream atomic batches of n messages, two batches committing at a time:
// what any gateway that group-commits the submits of b.concurrency clients
// could store at most, since half of them wait for the batch in flight while
// the other half form the next one. Its latencies are the batches' commits.
func batchCeiling(ctx context.Context, stack *harness.Stack, b ingressFlags, payload []byte, n int) (*harness.LoadResult, string, error) {
	const name = "SLUICE_BENCH_CEILING"
	stream, err := stack.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"sluice-bench.ceiling.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, "", err
	}
	defer stack.JS.DeleteStream(context.WithoutCancel(ctx), name) //nolint:errcheck // scratch
	publish := func(ctx context.Context, _ int) error {
		batch := nuid.Next()
		for i := 1; i <= n; i++ {
			id := buffer.NewJobID()
			msg := nats.NewMsg("sluice-bench.ceiling." + id)
			msg.Data = payload
			msg.Header.Set("Sluice-Job-Id", id)
			msg.Header.Set("Content-Type", "application/octet-stream")
			msg.Header.Set("Nats-Batch-Id", batch)
			msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i))
			if i < n {
				if err := stack.NC.PublishMsg(msg); err != nil {
					return err
				}
				continue
			}
			msg.Header.Set("Nats-Batch-Commit", "1")
			resp, err := stack.NC.RequestMsgWithContext(ctx, msg)
			if err != nil {
				return err
			}
			var ack struct {
				Count int                 `json:"count"`
				Error *jetstream.APIError `json:"error"`
			}
			if err := json.Unmarshal(resp.Data, &ack); err != nil {
				return fmt.Errorf("batch answer %q: %w", resp.Data, err)
			}
			if ack.Error != nil {
				return ack.Error
			}
			if ack.Count != n {
				return fmt.Errorf("batch of %d stored %d", n, ack.Count)
			}
		}
		return nil
	}
	const inFlight = 2
	return measureStream(ctx, stack, stream, b, inFlight, n, publish)
}

// cpuColumns are a row's two CPU columns: the three processes' CPU per
// operation, and the whole machine's load.
func cpuColumns(from, to harness.CPUTimes, ops int) string {
	return harness.PerOp(from, to, ops) + "\t" + harness.MachineLoad(from, to, ops)
}

// measureStream runs op from workers goroutines for b.warmup, empties the
// stream, and runs it again for b.duration: what that measured, with the
// CPU spent per message stored (opMessages to an op).
func measureStream(ctx context.Context, stack *harness.Stack, stream jetstream.Stream, b ingressFlags, workers, opMessages int, op func(context.Context, int) error) (*harness.LoadResult, string, error) {
	if _, err := harness.RunLoad(ctx, workers, b.warmup, op); err != nil {
		return nil, "", err
	}
	if err := stream.Purge(ctx); err != nil {
		return nil, "", err
	}
	cpu0, err := stack.CPU()
	if err != nil {
		return nil, "", err
	}
	r, err := harness.RunLoad(ctx, workers, b.duration, op)
	if err != nil {
		return nil, "", err
	}
	cpu1, err := stack.CPU()
	return r, cpuColumns(cpu0, cpu1, r.Ops*opMessages), err
}

// purgeJobs empties the job stream, so that each path starts alike.
func purgeJobs(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, buffer.StreamName)
	if err != nil {
		return err
	}
	return s.Purge(ctx)
}
