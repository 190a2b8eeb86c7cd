// Package fair is `sluice bench fairness`: a fair function, one tenant's few jobs
// against another's backlog, and weighted shares among many tenants.
package fair

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/metadata"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// Flags configure `sluice bench fairness`.
type Flags struct {
	backlog, few, high, concurrency, gateways, submitters int
	handler                                               time.Duration
	// tenants, if set, runs the weighted shares instead: that many
	// tenants configured, active of them with a backlog of perTenant
	// each, measured for at most measure.
	tenants, active, perTenant int
	measure                    time.Duration
}

// ParseFlags parses and checks the flags of `sluice bench fairness`.
func ParseFlags(args []string, stderr io.Writer) (Flags, error) {
	fs := flag.NewFlagSet("bench fairness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b Flags
	fs.IntVar(&b.backlog, "backlog", 5000, "tenant A's backlog")
	fs.IntVar(&b.few, "few", 50, "tenant B's jobs, submitted after A's")
	fs.IntVar(&b.high, "high", 20, "tenant A's high-priority jobs, submitted after B's")
	fs.IntVar(&b.concurrency, "concurrency", 20, "the function's concurrency (with --tenants, by default twice the active tenants' weights, so that each share is whole slots)")
	fs.IntVar(&b.gateways, "gateways", 2, "gateway processes sharing one NATS")
	fs.IntVar(&b.submitters, "submitters", 32, "concurrent submitting clients")
	fs.DurationVar(&b.handler, "duration", 100*time.Millisecond, "handler run time per invocation")
	fs.IntVar(&b.tenants, "tenants", 0, "tenants configured, each with an API key: run the weighted shares of --active of them instead of tenants A and B")
	fs.IntVar(&b.active, "active", 10, "with --tenants: tenants with a backlog (the i-th weighs 1+i%3)")
	fs.IntVar(&b.perTenant, "per-tenant", 400, "with --tenants: each active tenant's backlog")
	fs.DurationVar(&b.measure, "measure", 5*time.Second, "with --tenants: the longest span measured, once every backlog is stored")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.tenants != 0 {
		concurrencySet := false
		fs.Visit(func(f *flag.Flag) { concurrencySet = concurrencySet || f.Name == "concurrency" })
		if !concurrencySet {
			b.concurrency = 0 // twice the active tenants' weights: see runBenchShares
		}
		if b.tenants < 0 || b.active < 1 || b.active > b.tenants || b.perTenant < 1 || b.measure <= 0 || b.concurrency < 0 || b.gateways < 1 || b.submitters < 1 {
			return b, errors.New("bench fairness: --tenants N needs 1 ≤ --active ≤ N, and positive counts")
		}
		return b, nil
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

// Run runs a fair function behind gateway processes against a
// simulated platform (fnsim): tenant A stores a backlog, then tenant B a
// few jobs, and then A a few high-priority ones; it reports how much of A's
// backlog had drained when B's jobs had all finished, and when A's
// high-priority jobs had all started.
func Run(ctx context.Context, b Flags, dir string, stdout, stderr io.Writer) error {
	if b.tenants > 0 {
		return runBenchShares(ctx, b, dir, stdout, stderr)
	}
	p, set, stop, err := startFair(ctx, b, dir, fmt.Sprintf(`tenants:
  - name: a
    api_keys: [%q]
  - name: b
    api_keys: [%q]
`, gateway.HashKey(fairKeyA), gateway.HashKey(fairKeyB)), stderr)
	if err != nil {
		return err
	}
	defer stop()
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
	b       Flags
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

// shareTenant is one active tenant of the weighted-shares run.
type shareTenant struct {
	name, key string
	weight    int
}

// shareTenants are the configured tenants of the weighted-shares run, and
// the active ones among them: spread evenly, the j-th active weighing
// 1+j%3.
func shareTenants(b Flags) (config string, active []shareTenant) {
	var yaml strings.Builder
	yaml.WriteString("tenants:\n")
	weights := map[int]int{}
	for j := range b.active {
		weights[j*b.tenants/b.active] = 1 + j%3
	}
	for i := range b.tenants {
		t := shareTenant{name: fmt.Sprintf("t%04d", i), key: fmt.Sprintf("bench-key-tenant-%04d-0123456789", i), weight: 1}
		if w, ok := weights[i]; ok {
			t.weight = w
			active = append(active, t)
		}
		fmt.Fprintf(&yaml, "  - name: %s\n    api_keys: [%q]\n    weight: %d\n", t.name, gateway.HashKey(t.key), t.weight)
	}
	return yaml.String(), active
}

// runBenchShares runs a fair function with b.tenants tenants configured,
// b.active of them with a backlog each: it measures each active tenant's
// invocations started while every one still had a backlog, against its
// weighted share of the window, and the consumers the function holds.
func runBenchShares(ctx context.Context, b Flags, dir string, stdout, stderr io.Writer) error {
	tenants, active := shareTenants(b)
	weights := 0
	for _, t := range active {
		weights += t.weight
	}
	if b.concurrency == 0 {
		b.concurrency = 2 * weights
	}
	p, set, stop, err := startFair(ctx, b, dir, tenants, stderr)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(stdout, "fair function, concurrency %d, handler %s, %d gateway process(es); %d tenants configured (%d lanes), %d active with a backlog of %d each\n\n",
		b.concurrency, b.handler, b.gateways, b.tenants, 3*(b.tenants+1), b.active, b.perTenant)

	// The function's consumers on the stream, read every 100ms.
	var most atomic.Int64
	watchCtx, stopWatching := context.WithCancel(ctx)
	var watching sync.WaitGroup
	defer watching.Wait()
	defer stopWatching()
	watching.Go(func() {
		for {
			if n, err := set.Queue.FunctionConsumers(watchCtx, "shared"); err == nil && int64(n) > most.Load() {
				most.Store(int64(n))
			}
			if harness.Sleep(watchCtx, 100*time.Millisecond) != nil {
				return
			}
		}
	})
	// The backlogs, stored side by side.
	start := time.Now()
	err = harness.RunN(ctx, b.submitters, b.active*b.perTenant, func(ctx context.Context, i int) error {
		t := active[i%len(active)]
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+t.key)
		_, err := set.Clients[i%len(set.Clients)].SubmitJob(ctx, &sluicev1.SubmitJobRequest{
			Function: "shared",
			Payload:  &httpbody.HttpBody{ContentType: "text/plain", Data: []byte(t.name)},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	fmt.Fprintf(stdout, "%d jobs stored in %s\n", b.active*b.perTenant, time.Since(start).Round(time.Millisecond))
	started, span, err := measureShares(ctx, b, p, active)
	if err != nil {
		return err
	}
	total := 0
	for _, n := range started {
		total += n
	}
	fmt.Fprintf(stdout, "measured %s, every backlog still waiting: %d invocations started\n\n", span.Round(time.Millisecond), total)
	worst, errs := reportShares(stdout, b, active, started, total, weights)
	fmt.Fprintf(stdout, "\nmax relative deviation from the weighted shares: %.1f%%\n", 100*worst)
	stopWatching()
	watching.Wait()
	now, err := set.Queue.FunctionConsumers(ctx, "shared")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "consumers of the function on the stream: at most %d during the run, %d now (of %d lanes configured)\n", most.Load(), now, 3*(b.tenants+1))
	st := p.sim.Stats()
	fmt.Fprintf(stdout, "fnsim: %d invocations, max concurrent %d (limit %d)\n", st.Invocations, st.MaxConcurrent, b.concurrency)
	if total == 0 {
		errs = append(errs, errors.New("no invocation started in the span measured"))
	}
	if st.MaxConcurrent > b.concurrency {
		errs = append(errs, fmt.Errorf("fnsim saw %d at once, over %d", st.MaxConcurrent, b.concurrency))
	}
	return errors.Join(errs...)
}

// measureShares counts each active tenant's invocations started from now
// until b.measure has passed or a tenant's backlog is nearly gone (less
// than the window's worth waits), and returns them with the time taken.
func measureShares(ctx context.Context, b Flags, p *groupPlatform, active []shareTenant) ([]int, time.Duration, error) {
	started0 := make([]int, len(active))
	for i, t := range active {
		started0[i], _ = p.counts(t.name)
	}
	from := time.Now()
	started := make([]int, len(active))
	if err := pollEvery(ctx, 5*time.Millisecond, func() bool {
		low := false
		for i, t := range active {
			started[i], _ = p.counts(t.name)
			low = low || b.perTenant-started[i] < b.concurrency
		}
		return low || time.Since(from) >= b.measure
	}); err != nil {
		return nil, 0, err
	}
	span := time.Since(from)
	for i := range active {
		started[i] -= started0[i]
	}
	return started, span, nil
}

// reportShares prints each active tenant's share of the invocations
// started against its weighted share, and returns the largest relative
// deviation and an error for each tenant more than 1.25 slots off (the
// window is split in whole slots: a share may be one off).
func reportShares(stdout io.Writer, b Flags, active []shareTenant, started []int, total, weights int) (worst float64, errs []error) {
	fmt.Fprintf(stdout, "%-8s %6s %8s %9s %10s %9s\n", "tenant", "weight", "started", "observed", "weighted", "deviation")
	for i, t := range active {
		observed := float64(started[i]) / float64(max(total, 1))
		want := float64(t.weight) / float64(weights)
		dev := (observed - want) / want
		worst = max(worst, math.Abs(dev))
		fmt.Fprintf(stdout, "%-8s %6d %8d %8.1f%% %9.1f%% %+8.1f%%\n", t.name, t.weight, started[i], 100*observed, 100*want, 100*dev)
		if slots := math.Abs(observed-want) * float64(b.concurrency); slots > 1.25 {
			errs = append(errs, fmt.Errorf("tenant %s ran %.1f slots of %d away from its weighted share", t.name, slots, b.concurrency))
		}
	}
	return worst, errs
}

// startFair starts what both modes run: a simulated platform (fnsim, each
// job's payload naming its group) and b.gateways gateway processes with one
// fair function, "shared", of b.concurrency, and the tenants of
// tenantsYAML. stop stops both.
func startFair(ctx context.Context, b Flags, dir, tenantsYAML string, stderr io.Writer) (*groupPlatform, *harness.ReplicaSet, func(), error) {
	p := &groupPlatform{sim: fnsim.New(fnsim.Config{Duration: b.handler}), started: map[string]int{}, done: map[string]int{}}
	ln, stopServing, err := harness.ServeLoopback(p)
	if err != nil {
		return nil, nil, nil, err
	}
	set, err := harness.StartReplicaSet(ctx, dir, fmt.Sprintf(`functions:
  - name: shared
    url: http://%s/
    concurrency: %d
    timeout: 30s
    fairness: true
%s`, ln.Addr(), b.concurrency, tenantsYAML), b.gateways, "", stderr)
	if err != nil {
		stopServing()
		return nil, nil, nil, err
	}
	return p, set, func() { set.Close(); stopServing() }, nil
}
