package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// poolsFlags configure `sluice bench pools`.
type poolsFlags struct {
	pool, reserved, concurrency, gateways, big, small, submitters int
	handler, jitter, sample                                       time.Duration
}

// poolCounter counts the invocations in flight on the simulated platform,
// per function and for the whole pool, exactly: every function is served
// by this process.
type poolCounter struct {
	total, maxTotal atomic.Int64
}

func (c *poolCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := c.total.Add(1)
		for m := c.maxTotal.Load(); n > m && !c.maxTotal.CompareAndSwap(m, n); m = c.maxTotal.Load() {
		}
		defer c.total.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// runBenchPools runs three functions that share one pool, each with a
// reserved share and a backlog, through gateway processes to a simulated
// platform, and samples what runs: the pool's total, each function's in
// flight while all have backlogs, and the first function's once the others
// run dry.
func runBenchPools(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench pools", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b poolsFlags
	fs.IntVar(&b.pool, "pool", 60, "the pool's concurrency")
	fs.IntVar(&b.reserved, "reserved", 10, "each function's reserved share")
	fs.IntVar(&b.concurrency, "concurrency", 50, "each function's own concurrency")
	fs.IntVar(&b.gateways, "gateways", 2, "gateway processes sharing one NATS")
	fs.IntVar(&b.big, "big", 6000, "jobs for the first function (alpha)")
	fs.IntVar(&b.small, "small", 2000, "jobs for each of the two others (beta, gamma)")
	fs.IntVar(&b.submitters, "submitters", 32, "concurrent submitting clients")
	fs.DurationVar(&b.handler, "duration", 100*time.Millisecond, "handler run time per invocation")
	fs.DurationVar(&b.jitter, "jitter", 50*time.Millisecond, "handler run time spread: ± this much")
	fs.DurationVar(&b.sample, "sample", 10*time.Millisecond, "how often the platform is sampled (and JetStream every 4th time)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if b.pool < 3 || b.reserved < 0 || 3*b.reserved > b.pool || b.concurrency < 1 || b.gateways < 1 || b.big < 1 || b.small < 1 || b.submitters < 1 {
		return errors.New("bench pools: counts must be positive, the pool at least 3 and at least three reserved shares")
	}
	dir, removeDir, err := benchScratch()
	if err != nil {
		return err
	}
	defer removeDir()
	ctx, cancel := context.WithCancel(ctx)
	var children sync.WaitGroup
	defer children.Wait()
	defer cancel()

	// The platform: one simulated function per name, in this process, so
	// the pool's total is counted exactly.
	names := []string{"alpha", "beta", "gamma"}
	jobs := map[string]int{"alpha": b.big, "beta": b.small, "gamma": b.small}
	var counter poolCounter
	sims := map[string]*fnsim.Function{}
	mux := http.NewServeMux()
	for _, n := range names {
		sims[n] = fnsim.New(fnsim.Config{Duration: b.handler, Jitter: b.jitter})
		mux.Handle("/"+n, counter.wrap(sims[n]))
	}
	ln, stopServing, err := serveLoopback(mux)
	if err != nil {
		return err
	}
	defer stopServing()

	nats, err := buffer.StartEmbedded(buffer.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats"), Listen: true})
	if err != nil {
		return err
	}
	defer func() {
		cancel()
		children.Wait()
		nats.Shutdown()
	}()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "pools:\n  - name: account\n    concurrency: %d\nfunctions:\n", b.pool)
	for _, n := range names {
		fmt.Fprintf(&cfg, "  - name: %s\n    url: http://%s/%s\n    concurrency: %d\n    pool: account\n    reserved: %d\n    timeout: 30s\n",
			n, ln.Addr(), n, b.concurrency, b.reserved)
	}
	config := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(config, []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	grpcAddrs, err := startReplicas(ctx, &children, stderr, dir, config, nats.ClientURL(), b.gateways)
	if err != nil {
		return err
	}
	nc, err := nats.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	buf, err := buffer.Open(ctx, nc, buffer.Config{})
	if err != nil {
		return err
	}
	var clients []sluicev1.JobServiceClient
	for _, addr := range grpcAddrs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients = append(clients, sluicev1.NewJobServiceClient(conn))
	}
	fmt.Fprintf(stdout, "pool of %d shared by alpha (%d jobs), beta and gamma (%d each); each reserves %d, own cap %d; handler %s; %d gateway process(es), sampled every %s\n\n",
		b.pool, b.big, b.small, b.reserved, b.concurrency, b.handler, b.gateways, b.sample)

	// Submit every backlog at once, interleaved, while sampling.
	type item struct{ fn string }
	var queue []item
	for i := range max(b.big, b.small) {
		for _, n := range names {
			if i < jobs[n] {
				queue = append(queue, item{n})
			}
		}
	}
	start := time.Now()
	var next atomic.Int64
	submitted := make(chan error, 1)
	go func() {
		g, gctx := errgroup.WithContext(ctx)
		for range b.submitters {
			g.Go(func() error {
				for i := int(next.Add(1) - 1); i < len(queue); i = int(next.Add(1) - 1) {
					if _, err := submitGRPC(gctx, clients[i%len(clients)], queue[i].fn, []byte("{}")); err != nil {
						return err
					}
				}
				return nil
			})
		}
		submitted <- g.Wait()
	}()

	var (
		samples, shared, alone int
		minShared              = map[string]int{}
		maxShared              = map[string]int{}
		maxAlone, maxTotal     int
		allUp                  time.Duration
		othersDone             time.Duration
		below                  = map[string]int{}
		held                   = map[string]int{}
		heldTotal              int
	)
	for _, n := range names {
		minShared[n], held[n] = 1<<30, 1<<30
	}
	tick := time.NewTicker(b.sample)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-submitted:
			if err != nil {
				return fmt.Errorf("submit: %w", err)
			}
			submitted = nil
			fmt.Fprintf(stdout, "submitted %d jobs in %s\n", len(queue), time.Since(start).Round(10*time.Millisecond))
		case <-tick.C:
		}
		samples++
		in, ran := map[string]int{}, map[string]int{}
		for _, n := range names {
			st := sims[n].Stats()
			in[n], ran[n] = st.InFlight, st.Invocations+st.InFlight
		}
		total := int(counter.total.Load())
		maxTotal = max(maxTotal, total)
		if allUp == 0 {
			if in["alpha"] >= b.reserved && in["beta"] >= b.reserved && in["gamma"] >= b.reserved {
				allUp = time.Since(start)
			}
			continue
		}
		backlogged := true
		for _, n := range names {
			backlogged = backlogged && jobs[n]-ran[n] > b.pool && int(next.Load()) > len(queue)/2
		}
		if backlogged {
			shared++
			for _, n := range names {
				minShared[n], maxShared[n] = min(minShared[n], in[n]), max(maxShared[n], in[n])
				if in[n] < b.reserved {
					below[n]++
				}
			}
			if samples%4 == 0 {
				total := 0
				for _, n := range names {
					load, err := buf.FunctionLoad(ctx, n)
					if err != nil {
						return err
					}
					held[n] = min(held[n], load.InFlight)
					total += load.InFlight
				}
				heldTotal = max(heldTotal, total)
			}
		}
		if ran["beta"] >= jobs["beta"] && ran["gamma"] >= jobs["gamma"] && in["beta"]+in["gamma"] == 0 {
			if othersDone == 0 {
				othersDone = time.Since(start)
			}
			alone++
			maxAlone = max(maxAlone, in["alpha"])
		}
		if ran["alpha"] >= jobs["alpha"] && in["alpha"] == 0 {
			break
		}
	}
	drain := time.Since(start)
	fmt.Fprintf(stdout, "all three at their reserved share after %s; beta and gamma done after %s; alpha done after %s\n\n",
		allUp.Round(time.Millisecond), othersDone.Round(time.Millisecond), drain.Round(time.Millisecond))
	fmt.Fprintf(stdout, "samples: %d (%d while all three had backlogs, %d with alpha alone)\n", samples, shared, alone)
	for _, n := range names {
		fmt.Fprintf(stdout, "  %-5s running at the platform while all had backlogs: min %d, max %d; below %d in %d of %d samples (%.1f%%); in flight as JetStream counts it: min %d\n",
			n, minShared[n], maxShared[n], b.reserved, below[n], shared, 100*float64(below[n])/float64(max(shared, 1)), held[n])
	}
	fmt.Fprintf(stdout, "  pool in flight as JetStream counts it: max %d\n", heldTotal)
	fmt.Fprintf(stdout, "  alpha in flight alone: max %d (its own cap %d)\n", maxAlone, b.concurrency)
	fmt.Fprintf(stdout, "pool in flight: max %d at a sample, %d at any instant (limit %d)\n", maxTotal, counter.maxTotal.Load(), b.pool)
	for _, n := range names {
		st := sims[n].Stats()
		fmt.Fprintf(stdout, "  %-5s invocations %d, max concurrent %d\n", n, st.Invocations, st.MaxConcurrent)
	}
	var errs []error
	for _, n := range names {
		if held[n] < b.reserved {
			errs = append(errs, fmt.Errorf("%s fell to %d in flight while all had backlogs, below its reserved %d", n, held[n], b.reserved))
		}
	}
	if heldTotal > b.pool {
		errs = append(errs, fmt.Errorf("JetStream counted %d in flight in the pool, above its limit of %d", heldTotal, b.pool))
	}
	if got := counter.maxTotal.Load(); got > int64(b.pool) {
		errs = append(errs, fmt.Errorf("the pool had %d in flight at once, above its limit of %d", got, b.pool))
	}
	if maxAlone < b.concurrency {
		errs = append(errs, fmt.Errorf("alone, alpha reached %d in flight, not its cap of %d", maxAlone, b.concurrency))
	}
	return errors.Join(errs...)
}
