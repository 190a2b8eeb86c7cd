// Package scale is `sluice bench scale`: an idle gateway with many functions
// and tenants, and the first job into an idle function.
package scale

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/metadata"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/gateway"
)

// Flags configure `sluice bench scale`.
type Flags struct {
	functions, tenants, concurrency, firstJobs int
	fair                                       int // functions with fairness, the first ones
	settle, idle, spacing                      time.Duration
	// The key burst: keyJobs jobs over keys keys to a function of
	// concurrency keyWindow whose jobs take keyRun.
	keyJobs, keys, keyWindow, keySubmitters int
	keyRun                                  time.Duration
	keyBaseline                             bool
	// jetstream is where the JetStream runs without --nats-url: "gateway"
	// (embedded in it) or "process" (`bench jetstream`).
	jetstream string
	harness.StackFlags
}

// scaleAbout is `sluice bench scale -h`'s description, before the flags.
const scaleAbout = `Usage: sluice bench scale [flags]

Measures a gateway configured with many functions (--fair of them fair, with
a lane for each tenant and priority) and tenants:
  1. idle: its CPU (user+system, % of one core) over --idle, after --settle
     past ready, and its resident memory (VmRSS at the end, VmHWM); with
     --jetstream process, the JetStream process's too.
  2. first job into an idle function: --first-jobs rounds, each a job
     submitted over gRPC (one tenant's API key) to a function not called
     before; the time from the submit's start to the function's request,
     which a server in this process receives. Every job must SUCCEED.
  3. key burst: --key-jobs jobs spread over --keys concurrency keys,
     submitted at once over gRPC to one more function, "keyed" (concurrency
     --key-window, key_concurrency 1), whose jobs take --key-run each; the
     time until the function has run them all against what its window
     alone allows, and, checked at the function, that no two jobs of one
     key ran at once. Every job must SUCCEED. With --key-baseline, the same
     jobs without keys go first to "unkeyed", a twin without
     key_concurrency, as the baseline.

Flags:
`

// ParseFlags parses and checks the flags of `sluice bench scale`.
func ParseFlags(args []string, stderr io.Writer) (Flags, error) {
	fs := flag.NewFlagSet("bench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, scaleAbout)
		fs.PrintDefaults()
	}
	var b Flags
	fs.IntVar(&b.functions, "functions", 1000, "functions configured")
	fs.IntVar(&b.tenants, "tenants", 1000, "tenants configured, each with an API key")
	fs.IntVar(&b.concurrency, "concurrency", 10, "each function's concurrency")
	fs.IntVar(&b.fair, "fair", 1, "functions with fairness: true (the first ones), each with a lane per tenant and priority")
	fs.DurationVar(&b.settle, "settle", 20*time.Second, "time after the gateway is ready before the idle measurement, for start-up work to end")
	fs.DurationVar(&b.idle, "idle", 30*time.Second, "the idle measurement's window")
	fs.IntVar(&b.firstJobs, "first-jobs", 200, "rounds of a first job into an idle function (at most --functions)")
	fs.DurationVar(&b.spacing, "spacing", 200*time.Millisecond, "pause between a round's function call and the next round's submit")
	fs.IntVar(&b.keyJobs, "key-jobs", 10_000, "jobs in the key burst (0: no burst)")
	fs.IntVar(&b.keys, "keys", 10_000, "distinct concurrency keys the burst's jobs are spread over")
	fs.IntVar(&b.keyWindow, "key-window", 50, "the keyed function's concurrency")
	fs.DurationVar(&b.keyRun, "key-run", 100*time.Millisecond, "how long the keyed function takes a job")
	fs.IntVar(&b.keySubmitters, "key-submitters", 32, "concurrent gRPC submitters of the burst")
	fs.BoolVar(&b.keyBaseline, "key-baseline", true, "before the key burst, the same jobs without keys to a function without key_concurrency, for comparison")
	fs.StringVar(&b.jetstream, "jetstream", "gateway", "without --nats-url, where JetStream runs: gateway (embedded in it, as sluice serve alone) or process (a process of its own, measured too)")
	b.StackFlags.Register(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	if b.functions < 1 || b.tenants < 1 || b.concurrency < 1 || b.firstJobs < 0 || b.settle < 0 || b.idle <= 0 || b.spacing < 0 {
		return b, errors.New("bench scale: counts and --idle must be positive, --first-jobs, --settle and --spacing not negative")
	}
	if b.keyJobs < 0 || b.keys < 1 || b.keyWindow < 1 || b.keySubmitters < 1 || b.keyRun < 0 {
		return b, errors.New("bench scale: --keys, --key-window and --key-submitters must be positive, --key-jobs and --key-run not negative")
	}
	if b.fair < 0 || b.fair > b.functions {
		return b, fmt.Errorf("bench scale: --fair %d is out of range: 0 to --functions (%d)", b.fair, b.functions)
	}
	if b.firstJobs > b.functions {
		return b, fmt.Errorf("bench scale: --first-jobs %d needs as many functions, not %d: each round uses one not called before", b.firstJobs, b.functions)
	}
	if b.jetstream != "gateway" && b.jetstream != "process" {
		return b, fmt.Errorf("bench scale: --jetstream %q is neither gateway nor process", b.jetstream)
	}
	b.InGateway = b.jetstream == "gateway"
	return b, nil
}

// scaleFunction is the name of the i'th function; scaleKey the i'th
// tenant's API key.
func scaleFunction(i int) string { return fmt.Sprintf("fn-%05d", i) }
func scaleKey(i int) string      { return fmt.Sprintf("bench-scale-key-%05d-0123456789", i) }

// scaleConfig is the gateway's config: b.functions functions, each
// calling fnAddr at a path of its name, and b.tenants tenants.
func scaleConfig(b Flags, fnAddr string) string {
	var c strings.Builder
	c.WriteString("functions:\n")
	for i := range b.functions {
		fmt.Fprintf(&c, "  - name: %[1]s\n    url: http://%[2]s/%[1]s\n    concurrency: %[3]d\n    timeout: 30s\n    fairness: %[4]t\n", scaleFunction(i), fnAddr, b.concurrency, i < b.fair)
	}
	if b.keyJobs > 0 {
		c.WriteString(keyedConfig(b, fnAddr))
	}
	c.WriteString("tenants:\n")
	for i := range b.tenants {
		fmt.Fprintf(&c, "  - name: tenant-%05d\n    api_keys: [%q]\n", i, gateway.HashKey(scaleKey(i)))
	}
	fmt.Fprintf(&c, "buffer: {durability: %s}\n", b.Durability)
	return c.String()
}

// Run starts a gateway with b.functions functions and b.tenants
// tenants, measures it idle, then times first jobs into idle functions.
func Run(ctx context.Context, b Flags, dir string, stdout, stderr io.Writer) error {
	fns := newArrivals()
	keyedFn := &keyedFunction{run: b.keyRun, running: map[string]int{}}
	unkeyedFn := &keyedFunction{run: b.keyRun, running: map[string]int{}}
	mux := http.NewServeMux()
	mux.Handle("/", fns)
	mux.Handle("/"+keyedFunctionName, keyedFn)
	mux.Handle("/"+unkeyedFunctionName, unkeyedFn)
	ln, stopServing, err := harness.ServeLoopback(mux)
	if err != nil {
		return err
	}
	defer stopServing()
	where := "embedded in the gateway (sluice serve without --nats-url)"
	switch {
	case b.NATSURL != "":
		where = "at " + b.NATSURL + " (not measured)"
	case b.jetstream == "process":
		where = "in a process of its own (bench jetstream)"
	}
	fmt.Fprintf(stdout, "scale: %d functions (concurrency %d each; the first %d fair, a lane for each tenant and priority), %d tenants with an API key each; JetStream %s, durability %s\n",
		b.functions, b.concurrency, b.fair, b.tenants, where, b.Durability)

	tail := &harness.Tail{W: stderr}
	start := time.Now()
	stack, err := harness.StartStack(ctx, b.StackFlags, dir, scaleConfig(b, ln.Addr().String()), tail)
	if err != nil {
		return fmt.Errorf("bench scale: start the gateway: %w\nits stderr ended:\n%s", err, tail)
	}
	defer stack.Close()
	r := &scaleRun{b: b, stack: stack, fns: fns, tail: tail, progress: stderr}
	fmt.Fprintf(stdout, "gateway ready %s after its start; settling %s, then measuring %s idle\n\n",
		time.Since(start).Round(time.Millisecond), b.settle, b.idle)

	idle, err := r.measureIdle(ctx)
	if err != nil {
		return fmt.Errorf("bench scale: idle: %w", err)
	}
	idle.report(stdout, r)
	first, err := r.firstJobs(ctx)
	if err != nil {
		return fmt.Errorf("bench scale: first jobs: %w", err)
	}
	first.report(stdout, r)
	if first.failed > 0 {
		return fmt.Errorf("bench scale: first jobs: %d of %d did not succeed", first.failed, len(first.lat))
	}
	if b.keyJobs == 0 {
		return nil
	}
	var base *keyMeasures
	if b.keyBaseline {
		if base, err = r.keyBurst(ctx, unkeyedFunctionName, unkeyedFn); err != nil {
			return fmt.Errorf("bench scale: key burst's baseline: %w", err)
		}
	}
	keys, err := r.keyBurst(ctx, keyedFunctionName, keyedFn)
	if err != nil {
		return fmt.Errorf("bench scale: key burst: %w", err)
	}
	reportKeyBurst(stdout, b, keys, base)
	return keys.check(b)
}

// scaleRun is one run of `sluice bench scale`.
type scaleRun struct {
	b     Flags
	stack *harness.Stack
	fns   *arrivals
	tail  *harness.Tail
	// progress is told how the first-job rounds go, a line per tenth.
	progress io.Writer
}

// wait waits for d, failing if the gateway exits meanwhile.
func (r *scaleRun) wait(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-r.stack.GatewayExited:
		return fmt.Errorf("the gateway exited; its stderr ended:\n%s", r.tail)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idleMeasures are what the idle phase measured.
type idleMeasures struct {
	window       time.Duration
	from, to     harness.CPUTimes
	gateway, js  harness.Memory
	calls        int // function calls while idle, settling included
	machineShare float64
}

// measureIdle settles, then reads the processes' CPU times over the idle
// window and their memory at its end.
func (r *scaleRun) measureIdle(ctx context.Context) (*idleMeasures, error) {
	if err := r.wait(ctx, r.b.settle); err != nil {
		return nil, err
	}
	var m idleMeasures
	var err error
	if m.from, err = r.stack.CPU(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := r.wait(ctx, r.b.idle); err != nil {
		return nil, err
	}
	if m.to, err = r.stack.CPU(); err != nil {
		return nil, err
	}
	m.window = time.Since(t0)
	if m.gateway, err = r.stack.GatewayMemory(); err != nil {
		return nil, err
	}
	if m.js, err = r.stack.NATSMemory(); err != nil {
		return nil, err
	}
	m.machineShare, _ = harness.MachineBusy(m.from, m.to)
	m.calls = r.fns.count()
	return &m, nil
}

// report prints the idle phase's table.
func (m *idleMeasures) report(stdout io.Writer, r *scaleRun) {
	share := func(d time.Duration) string { return fmt.Sprintf("%.2f", 100*d.Seconds()/m.window.Seconds()) }
	fmt.Fprintf(stdout, "idle, %s window:\n", m.window.Round(time.Millisecond))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tCPU % of one core\tRSS MiB\tpeak RSS MiB\t")
	fmt.Fprintf(tw, "gateway\t%s\t%s\t%s\t\n", share(m.to.Gateway()-m.from.Gateway()), harness.MiB(m.gateway.RSS), harness.MiB(m.gateway.Peak))
	if r.stack.NATS != nil {
		fmt.Fprintf(tw, "JetStream process\t%s\t%s\t%s\t\n", share(m.to.NATS()-m.from.NATS()), harness.MiB(m.js.RSS), harness.MiB(m.js.Peak))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "machine busy meanwhile (both cores, every process, neighbours too): %.0f%%; function calls before the first job: %d\n",
		100*m.machineShare, m.calls)
}

// firstMeasures are what the first-job phase measured, per round.
type firstMeasures struct {
	// submit is each submit's own time; lat from its start to the
	// function's request; dispatch from its return to the request
	// (negative if the function was called before the submit returned);
	// each sorted.
	submit, lat, dispatch []time.Duration
	failed                int
	tenant                int
}

// firstJobs runs b.firstJobs rounds, each submitting one job to a function
// not called before, spread over the functions, and waits for the
// function's request; then it reads every job's outcome.
func (r *scaleRun) firstJobs(ctx context.Context) (*firstMeasures, error) {
	clients, closeClients, err := r.stack.GRPCClients(1)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	client := clients[0]
	m := &firstMeasures{tenant: r.b.tenants - 1}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+scaleKey(m.tenant))
	ids := make([]string, r.b.firstJobs)
	for k := range r.b.firstJobs {
		name := scaleFunction(k * r.b.functions / r.b.firstJobs)
		arrived := r.fns.expect(name)
		t0 := time.Now()
		resp, err := client.SubmitJob(ctx, &sluicev1.SubmitJobRequest{
			Function: name,
			Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: []byte("first")},
		})
		t1 := time.Now()
		if err != nil {
			return nil, fmt.Errorf("submit to %s: %w", name, err)
		}
		ids[k] = resp.GetJob().GetId()
		var at time.Time
		select {
		case at = <-arrived:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("%s was not called within 30s of its job's submit", name)
		case <-r.stack.GatewayExited:
			return nil, fmt.Errorf("the gateway exited; its stderr ended:\n%s", r.tail)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m.submit = append(m.submit, t1.Sub(t0))
		m.lat = append(m.lat, at.Sub(t0))
		m.dispatch = append(m.dispatch, at.Sub(t1))
		if done := k + 1; done%max(1, r.b.firstJobs/10) == 0 {
			fmt.Fprintf(r.progress, "bench scale: %d of %d first jobs, the last called %s after its submit\n", done, r.b.firstJobs, at.Sub(t0).Round(time.Microsecond))
		}
		if err := r.wait(ctx, r.b.spacing); err != nil {
			return nil, err
		}
	}
	slices.Sort(m.submit)
	slices.Sort(m.lat)
	slices.Sort(m.dispatch)
	for _, id := range ids {
		state, err := waitFinished(ctx, client, id)
		if err != nil {
			return nil, err
		}
		if state != sluicev1.Job_SUCCEEDED {
			m.failed++
		}
	}
	return m, nil
}

// waitFinished reads a job until it has finished, and returns its state.
func waitFinished(ctx context.Context, client sluicev1.JobServiceClient, id string) (sluicev1.Job_State, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.GetJob(ctx, &sluicev1.GetJobRequest{Id: id})
		if err != nil {
			return 0, fmt.Errorf("GetJob %s: %w", id, err)
		}
		s := resp.GetJob().GetState()
		if buffer.Terminal(s) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("job %s still %v after 30s", id, s)
		}
		if err := harness.Sleep(ctx, 20*time.Millisecond); err != nil {
			return s, err
		}
	}
}

// report prints the first-job phase's table.
func (m *firstMeasures) report(stdout io.Writer, r *scaleRun) {
	if len(m.lat) == 0 {
		fmt.Fprintln(stdout, "\nfirst job into an idle function: no rounds (--first-jobs 0)")
		return
	}
	fmt.Fprintf(stdout, "\nfirst job into an idle function: %d rounds, each a function not called before, %s apart; gRPC submits as tenant-%05d\n",
		len(m.lat), r.b.spacing, m.tenant)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "from the submit's start to\tp50 ms\tp99 ms\tmax ms\t")
	row := func(name string, lat []time.Duration) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", name, harness.Millis(harness.Quantile(lat, 0.5)), harness.Millis(harness.Quantile(lat, 0.99)), harness.Millis(lat[len(lat)-1]))
	}
	row("its return (job stored)", m.submit)
	row("the function's request", m.lat)
	fmt.Fprintln(tw, "from the submit's return to\t\t\t\t")
	row("the function's request", m.dispatch)
	tw.Flush()
	fmt.Fprintf(stdout, "outcomes: %d of %d SUCCEEDED\n", len(m.lat)-m.failed, len(m.lat))
}

// arrivals is the functions' HTTP server: it answers every request 200
// at once and notes when each function (the request's path) was first
// called.
type arrivals struct {
	mu      sync.Mutex
	calls   int
	first   map[string]time.Time
	waiting map[string]chan time.Time
}

func newArrivals() *arrivals {
	return &arrivals{first: map[string]time.Time{}, waiting: map[string]chan time.Time{}}
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	name := strings.TrimPrefix(r.URL.Path, "/")
	a.mu.Lock()
	a.calls++
	if _, seen := a.first[name]; !seen {
		a.first[name] = at
		if ch := a.waiting[name]; ch != nil {
			ch <- at
			delete(a.waiting, name)
		}
	}
	a.mu.Unlock()
	io.Copy(io.Discard, r.Body) //nolint:errcheck // the payload is not needed
	w.WriteHeader(http.StatusOK)
}

// expect returns a channel that receives the time of the function's first
// call, at once if it was called before.
func (a *arrivals) expect(name string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, seen := a.first[name]; seen {
		ch <- at
	} else {
		a.waiting[name] = ch
	}
	return ch
}

// count is the calls so far, to any function.
func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}
