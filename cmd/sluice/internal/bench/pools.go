package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// poolsFlags configure `sluice bench pools`.
type poolsFlags struct {
	pool, reserved, concurrency, gateways, big, small, submitters int
	handler, jitter, sample                                       time.Duration
}

// parsePoolsFlags parses and checks the flags of `sluice bench pools`.
func parsePoolsFlags(args []string, stderr io.Writer) (poolsFlags, error) {
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
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.pool < 3 || b.reserved < 0 || 3*b.reserved > b.pool || b.concurrency < 1 || b.gateways < 1 || b.big < 1 || b.small < 1 || b.submitters < 1 {
		return b, errors.New("bench pools: counts must be positive, the pool at least 3 and at least three reserved shares")
	}
	return b, nil
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

// poolNames are the functions that share the pool; the first has the big
// backlog.
var poolNames = []string{"alpha", "beta", "gamma"}

// poolRun is one run of `sluice bench pools`: the platform, one simulated
// function per name served by this process so that the pool's total is
// counted exactly, and the gateways.
type poolRun struct {
	b       poolsFlags
	jobs    map[string]int
	sims    map[string]*fnsim.Function
	counter poolCounter
	set     *harness.ReplicaSet
	// queue is the function of each job, interleaved; taken counts those
	// a submitter has taken to submit.
	queue []string
	taken atomic.Int64
	start time.Time
}

// poolStats is what the samples saw.
type poolStats struct {
	samples, shared, alone            int
	minShared, maxShared, below, held map[string]int
	maxAlone, maxTotal, heldTotal     int
	allUp, othersDone, drain          time.Duration
}

// runBenchPools runs three functions that share one pool, each with a
// reserved share and a backlog, through gateway processes to a simulated
// platform, and samples what runs: the pool's total, each function's in
// flight while all have backlogs, and the first function's once the others
// run dry.
func runBenchPools(ctx context.Context, b poolsFlags, dir string, stdout, stderr io.Writer) error {
	r := &poolRun{b: b, jobs: map[string]int{"alpha": b.big, "beta": b.small, "gamma": b.small}, sims: map[string]*fnsim.Function{}}
	mux := http.NewServeMux()
	for _, n := range poolNames {
		r.sims[n] = fnsim.New(fnsim.Config{Duration: b.handler, Jitter: b.jitter})
		mux.Handle("/"+n, r.counter.wrap(r.sims[n]))
	}
	ln, stopServing, err := harness.ServeLoopback(mux)
	if err != nil {
		return err
	}
	defer stopServing()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "pools:\n  - name: account\n    concurrency: %d\nfunctions:\n", b.pool)
	for _, n := range poolNames {
		fmt.Fprintf(&cfg, "  - name: %s\n    url: http://%s/%s\n    concurrency: %d\n    pool: account\n    reserved: %d\n    timeout: 30s\n",
			n, ln.Addr(), n, b.concurrency, b.reserved)
	}
	if r.set, err = harness.StartReplicaSet(ctx, dir, cfg.String(), b.gateways, "", stderr); err != nil {
		return err
	}
	defer r.set.Close()
	fmt.Fprintf(stdout, "pool of %d shared by alpha (%d jobs), beta and gamma (%d each); each reserves %d, own cap %d; handler %s; %d gateway process(es), sampled every %s\n\n",
		b.pool, b.big, b.small, b.reserved, b.concurrency, b.handler, b.gateways, b.sample)

	// Submit every backlog at once, interleaved, while sampling.
	for i := range max(b.big, b.small) {
		for _, n := range poolNames {
			if i < r.jobs[n] {
				r.queue = append(r.queue, n)
			}
		}
	}
	r.start = time.Now()
	st, err := r.sample(ctx, r.submitAll(ctx), stdout)
	if err != nil {
		return err
	}
	r.print(stdout, st)
	return r.check(st)
}

// submitAll submits the queue from b.submitters clients, spread over the
// gateways, and reports on the channel returned when all are in.
func (r *poolRun) submitAll(ctx context.Context) chan error {
	submitted := make(chan error, 1)
	go func() {
		submitted <- harness.RunN(ctx, r.b.submitters, len(r.queue), func(ctx context.Context, i int) error {
			r.taken.Add(1)
			_, err := harness.SubmitGRPC(ctx, r.set.Clients[i%len(r.set.Clients)], r.queue[i], []byte("{}"))
			return err
		})
	}()
	return submitted
}

// sample samples the platform every b.sample until alpha has run all its
// jobs, printing when submitted reports that every job is in.
func (r *poolRun) sample(ctx context.Context, submitted chan error, stdout io.Writer) (*poolStats, error) {
	st := &poolStats{minShared: map[string]int{}, maxShared: map[string]int{}, below: map[string]int{}, held: map[string]int{}}
	for _, n := range poolNames {
		st.minShared[n], st.held[n] = 1<<30, 1<<30
	}
	tick := time.NewTicker(r.b.sample)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-submitted:
			if err != nil {
				return nil, fmt.Errorf("submit: %w", err)
			}
			submitted = nil
			fmt.Fprintf(stdout, "submitted %d jobs in %s\n", len(r.queue), time.Since(r.start).Round(10*time.Millisecond))
		case <-tick.C:
		}
		done, err := r.observe(ctx, st)
		if err != nil {
			return nil, err
		}
		if done {
			st.drain = time.Since(r.start)
			return st, nil
		}
	}
}

// observe takes one sample into st, and says whether alpha has run all its
// jobs.
func (r *poolRun) observe(ctx context.Context, st *poolStats) (done bool, err error) {
	st.samples++
	in, ran := map[string]int{}, map[string]int{}
	for _, n := range poolNames {
		s := r.sims[n].Stats()
		in[n], ran[n] = s.InFlight, s.Invocations+s.InFlight
	}
	st.maxTotal = max(st.maxTotal, int(r.counter.total.Load()))
	if st.allUp == 0 {
		if in["alpha"] >= r.b.reserved && in["beta"] >= r.b.reserved && in["gamma"] >= r.b.reserved {
			st.allUp = time.Since(r.start)
		}
		return false, nil
	}
	backlogged := true
	for _, n := range poolNames {
		backlogged = backlogged && r.jobs[n]-ran[n] > r.b.pool && int(r.taken.Load()) > len(r.queue)/2
	}
	if backlogged {
		if err := r.observeShared(ctx, st, in); err != nil {
			return false, err
		}
	}
	if ran["beta"] >= r.jobs["beta"] && ran["gamma"] >= r.jobs["gamma"] && in["beta"]+in["gamma"] == 0 {
		if st.othersDone == 0 {
			st.othersDone = time.Since(r.start)
		}
		st.alone++
		st.maxAlone = max(st.maxAlone, in["alpha"])
	}
	return ran["alpha"] >= r.jobs["alpha"] && in["alpha"] == 0, nil
}

// observeShared takes a sample while all three have backlogs: what runs
// at the platform (in) and, every 4th sample, what JetStream counts in
// flight.
func (r *poolRun) observeShared(ctx context.Context, st *poolStats, in map[string]int) error {
	st.shared++
	for _, n := range poolNames {
		st.minShared[n], st.maxShared[n] = min(st.minShared[n], in[n]), max(st.maxShared[n], in[n])
		if in[n] < r.b.reserved {
			st.below[n]++
		}
	}
	if st.samples%4 != 0 {
		return nil
	}
	total := 0
	for _, n := range poolNames {
		load, err := r.set.Queue.FunctionLoad(ctx, n)
		if err != nil && !errors.Is(err, buffer.ErrNotFound) { // none: the function rests, holding nothing
			return err
		}
		st.held[n] = min(st.held[n], load.InFlight)
		total += load.InFlight
	}
	st.heldTotal = max(st.heldTotal, total)
	return nil
}

// print reports what the samples saw.
func (r *poolRun) print(stdout io.Writer, st *poolStats) {
	b := r.b
	fmt.Fprintf(stdout, "all three at their reserved share after %s; beta and gamma done after %s; alpha done after %s\n\n",
		st.allUp.Round(time.Millisecond), st.othersDone.Round(time.Millisecond), st.drain.Round(time.Millisecond))
	fmt.Fprintf(stdout, "samples: %d (%d while all three had backlogs, %d with alpha alone)\n", st.samples, st.shared, st.alone)
	for _, n := range poolNames {
		fmt.Fprintf(stdout, "  %-5s running at the platform while all had backlogs: min %d, max %d; below %d in %d of %d samples (%.1f%%); in flight as JetStream counts it: min %d\n",
			n, st.minShared[n], st.maxShared[n], b.reserved, st.below[n], st.shared, 100*float64(st.below[n])/float64(max(st.shared, 1)), st.held[n])
	}
	fmt.Fprintf(stdout, "  pool in flight as JetStream counts it: max %d\n", st.heldTotal)
	fmt.Fprintf(stdout, "  alpha in flight alone: max %d (its own cap %d)\n", st.maxAlone, b.concurrency)
	fmt.Fprintf(stdout, "pool in flight: max %d at a sample, %d at any instant (limit %d)\n", st.maxTotal, r.counter.maxTotal.Load(), b.pool)
	for _, n := range poolNames {
		s := r.sims[n].Stats()
		fmt.Fprintf(stdout, "  %-5s invocations %d, max concurrent %d\n", n, s.Invocations, s.MaxConcurrent)
	}
}

// check fails a run in which a function fell below its reserved share
// while all had backlogs, the pool ran over, or alpha alone did not reach
// its own cap.
func (r *poolRun) check(st *poolStats) error {
	b := r.b
	var errs []error
	for _, n := range poolNames {
		if st.held[n] < b.reserved {
			errs = append(errs, fmt.Errorf("%s fell to %d in flight while all had backlogs, below its reserved %d", n, st.held[n], b.reserved))
		}
	}
	if st.heldTotal > b.pool {
		errs = append(errs, fmt.Errorf("JetStream counted %d in flight in the pool, above its limit of %d", st.heldTotal, b.pool))
	}
	if got := r.counter.maxTotal.Load(); got > int64(b.pool) {
		errs = append(errs, fmt.Errorf("the pool had %d in flight at once, above its limit of %d", got, b.pool))
	}
	if st.maxAlone < b.concurrency {
		errs = append(errs, fmt.Errorf("alone, alpha reached %d in flight, not its cap of %d", st.maxAlone, b.concurrency))
	}
	return errors.Join(errs...)
}
