package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
)

// invokeFlags configure `sluice bench invoke`.
type invokeFlags struct {
	clients, payload int
	duration, warmup time.Duration
	harness.StackFlags
	maxOverhead time.Duration
}

// parseInvokeFlags parses and checks the flags of `sluice bench invoke`.
func parseInvokeFlags(args []string, stderr io.Writer) (invokeFlags, error) {
	fs := flag.NewFlagSet("bench invoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b invokeFlags
	fs.IntVar(&b.clients, "concurrency", 1, "concurrent callers (1: an idle function)")
	fs.IntVar(&b.payload, "payload", 1024, "payload size in bytes")
	fs.DurationVar(&b.duration, "duration", 10*time.Second, "how long each path is measured")
	fs.DurationVar(&b.warmup, "warmup", time.Second, "unmeasured calls before each path")
	b.StackFlags.Register(fs)
	fs.DurationVar(&b.maxOverhead, "max-overhead", 0, "fail if Sluice's p50 exceeds the direct p50 by more than this (0: no limit)")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.clients < 1 || b.payload < 1 || b.duration <= 0 {
		return b, errors.New("bench invoke: --concurrency, --payload and --duration must be positive")
	}
	return b, nil
}

// runBenchInvoke measures what Sluice adds to a call: the same payload sent
// straight to an idle, instant function on a simulated platform, and
// through `POST /v1/functions/{f}:invoke?wait=`, which stores the job,
// dispatches it and answers with the function's response.
func runBenchInvoke(ctx context.Context, b invokeFlags, dir string, stdout, stderr io.Writer) error {
	fnAddr, stopPlatform, err := harness.StartOwnPlatform(ctx, stderr, []string{"--concurrency", "0", "--duration", "0s", "--cold-start", "0s"})
	if err != nil {
		return err
	}
	defer stopPlatform()
	stack, err := harness.StartStack(ctx, b.StackFlags, dir, fmt.Sprintf(`functions:
  - name: %s
    url: http://%s/
    concurrency: %d
    timeout: 10s
    max_payload: %d
buffer: {durability: %s}
`, harness.BenchFunction, fnAddr, max(b.clients, 8), max(b.payload, 1024), b.Durability), stderr)
	if err != nil {
		return err
	}
	defer stack.Close()
	fmt.Fprintf(stdout, "invoke: %d caller(s), %d-byte payloads, an instant function on a simulated platform; %s per path after %s warm-up\n\n",
		b.clients, b.payload, b.duration, b.warmup)

	payload := bytes.Repeat([]byte("x"), b.payload)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.clients, DisableCompression: true}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	call := func(url string) func(context.Context, int) error {
		return func(ctx context.Context, _ int) error {
			return postWant(ctx, client, url, payload, http.StatusOK)
		}
	}
	paths := []benchPath{
		{"direct to the function", b.clients, call("http://" + fnAddr + "/")},
		{"through Sluice, :invoke?wait=10s", b.clients, call(stack.HTTP + "/v1/functions/" + harness.BenchFunction + ":invoke?wait=10s")},
	}
	var results []*harness.LoadResult
	for _, p := range paths {
		if _, err := harness.RunLoad(ctx, p.clients, b.warmup, p.op); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		r, err := harness.RunLoad(ctx, p.clients, b.duration, p.op)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		results = append(results, r)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tcalls\tper second\tp50 ms\tp90 ms\tp99 ms\t")
	for i, p := range paths {
		r := results[i]
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t\n", p.name, r.Ops, r.PerSecond(), harness.Millis(r.Quantile(0.5)), harness.Millis(r.Quantile(0.9)), harness.Millis(r.Quantile(0.99)))
	}
	tw.Flush()
	direct, sluice := results[0], results[1]
	overhead := sluice.Quantile(0.5) - direct.Quantile(0.5)
	fmt.Fprintf(stdout, "\noverhead at p50: %s ms; at p99: %s ms\n", harness.Millis(overhead), harness.Millis(sluice.Quantile(0.99)-direct.Quantile(0.99)))
	if b.maxOverhead > 0 && overhead > b.maxOverhead {
		return fmt.Errorf("bench invoke: p50 overhead %s is above the ceiling of %s", overhead, b.maxOverhead)
	}
	return nil
}

// postWant POSTs payload and wants the given status.
func postWant(ctx context.Context, client *http.Client, url string, payload []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %s, want %d %s", url, resp.Status, want, http.StatusText(want))
	}
	return nil
}
