package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/metadata"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// fairnessFlags configure `sluice bench fairness`.
type fairnessFlags struct {
	backlog, few, high, concurrency, gateways, submitters int
	handler                                               time.Duration
}

// parseFairnessFlags parses and checks the flags of `sluice bench fairness`.
func parseFairnessFlags(args []string, stderr io.Writer) (fairnessFlags, error) {
	fs := flag.NewFlagSet("bench fairness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b fairnessFlags
	fs.IntVar(&b.backlog, "backlog", 5000, "tenant A's backlog")
	fs.IntVar(&b.few, "few", 50, "tenant B's jobs, submitted after A's")
	fs.IntVar(&b.high, "high", 20, "tenant A's high-priority jobs, submitted after B's")
	fs.IntVar(&b.concurrency, "concurrency", 20, "the function's concurrency")
	fs.IntVar(&b.gateways, "gateways", 2, "gateway processes sharing one NATS")
	fs.IntVar(&b.submitters, "submitters", 32, "concurrent submitting clients")
	fs.DurationVar(&b.handler, "duration", 100*time.Millisecond, "handler run time per invocation")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.backlog < 2 || b.few < 1 || b.high < 1 || b.concurrency < 2 || b.gateways < 1 || b.submitters < 1 {
		return b, errors.New("bench fairness: counts must be positive")
	}
	return b, nil
}

// groupPlatform is a simulated platform that tells jobs apart by their
// payloads, which name their group ("a", "b" or "high"), and counts each
// group's invocations started and done.
type groupPlatform struct {
	sim           *fnsim.Function
	mu            sync.Mutex
	started, done map[string]int
}

func (p *groupPlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	group := string(body)
	p.mu.Lock()
	p.started[group]++
	p.mu.Unlock()
	p.sim.ServeHTTP(w, r)
	p.mu.Lock()
	p.done[group]++
	p.mu.Unlock()
}

// counts are a group's invocations started and done.
func (p *groupPlatform) counts(group string) (started, done int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started[group], p.done[group]
}

// The tenants' API keys.
const fairKeyA, fairKeyB = "bench-key-tenant-a-0123456789", "bench-key-tenant-b-0123456789"

// runBenchFairness runs a fair function behind gateway processes against a
// simulated platform (fnsim): tenant A stores a backlog, then tenant B a
// few jobs, and then A a few high-priority ones; it reports how much of A's
// backlog had drained when B's jobs had all finished, and when A's
// high-priority jobs had all started.
func runBenchFairness(ctx context.Context, b fairnessFlags, dir string, stdout, stderr io.Writer) error {
	p := &groupPlatform{sim: fnsim.New(fnsim.Config{Duration: b.handler}), started: map[string]int{}, done: map[string]int{}}
	ln, stopServing, err := harness.ServeLoopback(p)
	if err != nil {
		return err
	}
	defer stopServing()
	set, err := harness.StartReplicaSet(ctx, dir, fmt.Sprintf(`functions:
  - name: shared
    url: http://%s/
    concurrency: %d
    timeout: 30s
    fairness: true
tenants:
  - name: a
    api_keys: [%q]
  - name: b
    api_keys: [%q]
`, ln.Addr(), b.concurrency, gateway.HashKey(fairKeyA), gateway.HashKey(fairKeyB)), b.gateways, "", stderr)
	if err != nil {
		return err
	}
	defer set.Close()
	fmt.Fprintf(stdout, "fair function, concurrency %d, handler %s, %d gateway process(es); tenant A: backlog of %d, then tenant B: %d jobs, then A: %d high-priority jobs\n\n",
		b.concurrency, b.handler, b.gateways, b.backlog, b.few, b.high)
	f := &fairRun{b: b, p: p, clients: set.Clients}
	if err := f.overtake(ctx, stdout); err != nil {
		return err
	}
	if err := f.highPriority(ctx, stdout); err != nil {
		return err
	}
	return f.check(stdout)
}

// fairRun is one run of `sluice bench fairness`, what it measured filled
// in as it goes.
type fairRun struct {
	b       fairnessFlags
	p       *groupPlatform
	clients []sluicev1.JobServiceClient
	// aDone0 are A's jobs done when its backlog was stored, drained those
	// done from then until B's were all done.
	aDone0, drained int
	// aStartedAfter are A's jobs started once its high-priority ones all
	// had.
	aStartedAfter int
}

// overtake stores A's backlog, then B's few jobs, and waits for B's to
// finish.
func (f *fairRun) overtake(ctx context.Context, stdout io.Writer) error {
	b := f.b
	start := time.Now()
	if err := f.submit(ctx, "a", fairKeyA, b.backlog, sluicev1.Priority_NORMAL); err != nil {
		return fmt.Errorf("submit A: %w", err)
	}
	_, f.aDone0 = f.p.counts("a")
	fmt.Fprintf(stdout, "A's %d jobs stored in %s; %d finished meanwhile: backlog %d\n", b.backlog, time.Since(start).Round(time.Millisecond), f.aDone0, b.backlog-f.aDone0)
	bAt := time.Now()
	if err := f.submit(ctx, "b", fairKeyB, b.few, sluicev1.Priority_NORMAL); err != nil {
		return fmt.Errorf("submit B: %w", err)
	}
	var aDoneAtB int
	if err := pollEvery(ctx, 5*time.Millisecond, func() bool {
		_, d := f.p.counts("b")
		_, aDoneAtB = f.p.counts("a")
		return d >= b.few
	}); err != nil {
		return err
	}
	bDoneAt := time.Since(bAt)
	f.drained = aDoneAtB - f.aDone0
	fmt.Fprintf(stdout, "B's %d jobs all finished %s after B submitted; A drained %d of its backlog of %d meanwhile (%.1f%%)\n",
		b.few, bDoneAt.Round(time.Millisecond), f.drained, b.backlog-f.aDone0, 100*float64(f.drained)/float64(b.backlog-f.aDone0))
	return nil
}

// highPriority stores A's high-priority jobs and waits for them all to
// start.
func (f *fairRun) highPriority(ctx context.Context, stdout io.Writer) error {
	b := f.b
	aStartedH, _ := f.p.counts("a")
	hAt := time.Now()
	if err := f.submit(ctx, "high", fairKeyA, b.high, sluicev1.Priority_HIGH); err != nil {
		return fmt.Errorf("submit high: %w", err)
	}
	if err := pollEvery(ctx, 5*time.Millisecond, func() bool {
		s, _ := f.p.counts("high")
		return s >= b.high
	}); err != nil {
		return err
	}
	f.aStartedAfter, _ = f.p.counts("a")
	fmt.Fprintf(stdout, "A's %d high-priority jobs all started %s after submit; %d of A's normal jobs started meanwhile, %d still waiting\n",
		b.high, time.Since(hAt).Round(time.Millisecond), f.aStartedAfter-aStartedH, b.backlog-f.aStartedAfter)
	return nil
}

// check prints the platform's count and fails a run in which B did not
// overtake A's backlog, the high-priority jobs did not overtake it, or the
// function ran over its concurrency.
func (f *fairRun) check(stdout io.Writer) error {
	b := f.b
	st := f.p.sim.Stats()
	fmt.Fprintf(stdout, "fnsim: %d invocations, max concurrent %d (limit %d)\n", st.Invocations, st.MaxConcurrent, b.concurrency)
	var errs []error
	if f.drained >= (b.backlog-f.aDone0)/2 {
		errs = append(errs, fmt.Errorf("tenant A drained %d of %d before B finished: not less than half", f.drained, b.backlog-f.aDone0))
	}
	if b.backlog-f.aStartedAfter <= 0 {
		errs = append(errs, errors.New("tenant A's backlog drained before its high-priority jobs started"))
	}
	if st.MaxConcurrent > b.concurrency {
		errs = append(errs, fmt.Errorf("fnsim saw %d at once, over %d", st.MaxConcurrent, b.concurrency))
	}
	return errors.Join(errs...)
}

// submit submits n jobs of the group as the tenant whose key is key, from
// b.submitters clients spread over the gateways.
func (f *fairRun) submit(ctx context.Context, group, key string, n int, priority sluicev1.Priority) error {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	return harness.RunN(ctx, f.b.submitters, n, func(ctx context.Context, i int) error {
		_, err := f.clients[i%len(f.clients)].SubmitJob(ctx, &sluicev1.SubmitJobRequest{
			Function: "shared", Priority: priority,
			Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte(group)},
		})
		return err
	})
}

// pollEvery calls cond every interval, first at once, until it holds or
// ctx ends.
func pollEvery(ctx context.Context, interval time.Duration, cond func() bool) error {
	for !cond() {
		if err := harness.Sleep(ctx, interval); err != nil {
			return err
		}
	}
	return nil
}
