package main

// Fault runs of Sluice in cluster mode: gateway replicas as child
// processes of this binary on a real three-node JetStream cluster
// (clustertest), the simulated platform in the test process, proxies that
// can cut a gateway off NATS, and a workload that records every
// acknowledged submit and every invocation the function sees.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/clustertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// clusterGateway is a `sluice serve` child process.
type clusterGateway struct {
	args     []string
	grpcAddr string
	httpAddr string
	log      string
	cmd      *exec.Cmd
	conn     *grpc.ClientConn
	client   sluicev1.JobServiceClient
	alive    atomic.Bool // the workload sends to it
}

func (g *clusterGateway) start(tb testing.TB) {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	logf, err := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(self, g.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphans if the test dies
	cmd.Env = append(os.Environ(), "SLUICE_TEST_AS_MAIN=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	g.cmd = cmd
	if err := harness.WaitHTTP(tb.Context(), "http://"+g.httpAddr+"/readyz", 60*time.Second, nil); err != nil {
		b, _ := os.ReadFile(g.log)
		tb.Fatalf("gateway: %v\n%s", err, b)
	}
	g.alive.Store(true)
}

// kill stops the gateway with SIGKILL.
func (g *clusterGateway) kill() {
	g.alive.Store(false)
	if g.cmd != nil {
		g.cmd.Process.Kill() //nolint:errcheck // it may have gone
		g.cmd.Wait()         //nolint:errcheck // killed
		g.cmd = nil
	}
}

// clusterLimit is the concurrency limit of the harness's function.
const clusterLimit = 20

// clusterStack is the cluster, the gateways and the platform.
type clusterStack struct {
	tb       testing.TB
	nats     *clustertest.Cluster
	gateways []*clusterGateway
	proxies  [][]*clustertest.CutProxy // by gateway; nil for a gateway connected directly
	sim      *fnsim.Function
}

// startClusterStack starts a NATS cluster, the platform and gateways
// replicas, R3; the first proxied gateways reach NATS through cut proxies.
func startClusterStack(tb testing.TB, gateways, proxied int) *clusterStack {
	tb.Helper()
	return startClusterStackWith(tb, clusterStackOptions{gateways: gateways, proxied: proxied})
}

// clusterStackOptions vary a clusterStack.
type clusterStackOptions struct {
	gateways, proxied int
	limit             int  // the function's concurrency; 0: clusterLimit
	instant           bool // the function returns at once
	paused            bool // the function is paused: nothing is dispatched
}

func startClusterStackWith(tb testing.TB, o clusterStackOptions) *clusterStack {
	tb.Helper()
	gateways, proxied := o.gateways, o.proxied
	if o.limit == 0 {
		o.limit = clusterLimit
	}
	s := &clusterStack{tb: tb, nats: clustertest.Start(tb)}
	// No concurrency limit on the platform: what it sees in flight is what
	// Sluice let through, and is checked against Sluice's limit.
	sc := fnsim.Config{Duration: 20 * time.Millisecond, Jitter: 10 * time.Millisecond}
	if o.instant {
		sc = fnsim.Config{}
	}
	s.sim = fnsim.New(sc)
	fn := httptest.NewServer(s.sim)
	tb.Cleanup(fn.Close)
	dir := tb.TempDir()
	config := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `functions:
  - name: f
    url: %s/
    concurrency: %d
    timeout: 1s
    adaptive: false
    paused: %v
`, fn.URL, o.limit, o.paused), 0o600); err != nil {
		tb.Fatal(err)
	}
	// Registered first, so that a gateway that fails to start is killed and
	// its client closed all the same.
	tb.Cleanup(func() {
		for i, g := range s.gateways {
			g.kill()
			g.conn.Close()
			if tb.Failed() || os.Getenv("SLUICE_FAULTS_LOGS") != "" {
				b, _ := os.ReadFile(g.log)
				lines := strings.Split(string(b), "\n")
				if !tb.Failed() {
					lines = slices.DeleteFunc(lines, func(l string) bool { return !strings.Contains(l, "level=ERROR") })
				}
				tb.Logf("gateway %d, last lines of its log:\n%s", i, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
	})
	for i := range gateways {
		httpAddr, grpcAddr := clustertest.StableAddr(tb), clustertest.StableAddr(tb) // a killed gateway restarts on them
		urls := s.nats.URLs()
		var proxies []*clustertest.CutProxy
		if i < proxied {
			var pu []string
			for _, n := range s.nats.Nodes() {
				p := clustertest.StartCutProxy(tb, strings.TrimPrefix(n.URL(), "nats://"))
				proxies = append(proxies, p)
				pu = append(pu, p.URL())
			}
			urls = strings.Join(pu, ",")
		}
		g := &clusterGateway{
			args: []string{"serve", "--config", config, "--nats-url", urls, "--replicas", "3",
				"--http-addr", httpAddr, "--grpc-addr", grpcAddr, "--log-level", "warn",
				"--drain-timeout", "2s", "--data-dir", filepath.Join(dir, fmt.Sprint("gw", i))},
			httpAddr: httpAddr, grpcAddr: grpcAddr, log: filepath.Join(dir, fmt.Sprintf("gw%d.log", i)),
		}
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		g.conn, g.client = conn, sluicev1.NewJobServiceClient(conn)
		s.gateways = append(s.gateways, g)
		s.proxies = append(s.proxies, proxies)
		// The first creates the streams; the others find them.
		g.start(tb)
	}
	return s
}

// workload submits a burst of jobs to the gateways and records what was
// acknowledged and what was refused. Every tenth job is submitted twice
// at once with one idempotency key, to two different gateways.
type workload struct {
	s          *clusterStack
	submitters int
	start      time.Time
	faultDone  atomic.Bool // until then the burst goes on past its size

	mu        sync.Mutex
	acked     []string
	ackTimes  []time.Time
	refused   map[string]int // by gRPC code
	refusedAt []time.Time
	keyed     int // idempotency keys submitted to two gateways
	keyDiffer int // keys that gave two different job IDs
}

// submitTimeout is the workload's deadline on each submit, as a client
// would set one.
const submitTimeout = 3 * time.Second

// submitOnce makes one attempt through gateway gw.
func (w *workload) submitOnce(ctx context.Context, gw int, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, submitTimeout)
	defer cancel()
	resp, err := w.s.gateways[gw].client.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Function: "f", IdempotencyKey: key})
	if err != nil {
		return "", err
	}
	return resp.GetJob().GetId(), nil
}

// submit tries gateways from first on until one acknowledges the job.
func (w *workload) submit(ctx context.Context, first int, key string) string {
	n := len(w.s.gateways)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		gw := (first + attempt) % n
		if !w.s.gateways[gw].alive.Load() {
			continue
		}
		id, err := w.submitOnce(ctx, gw, key)
		if err == nil {
			w.mu.Lock()
			w.ackTimes = append(w.ackTimes, time.Now())
			w.mu.Unlock()
			return id
		}
		if ctx.Err() != nil {
			break
		}
		w.mu.Lock()
		w.refused[status.Code(err).String()]++
		w.refusedAt = append(w.refusedAt, time.Now())
		w.mu.Unlock()
		time.Sleep(50 * time.Millisecond) // a client's pause before it tries again
	}
	return ""
}

// run submits jobs, each until acknowledged; ctx bounds it.
func (w *workload) run(ctx context.Context, jobs int) {
	w.start = time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	n := len(w.s.gateways)
	for range w.submitters {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); (i < jobs || !w.faultDone.Load()) && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				if i%10 != 9 {
					if id := w.submit(ctx, i%n, ""); id != "" {
						w.mu.Lock()
						w.acked = append(w.acked, id)
						w.mu.Unlock()
					}
					continue
				}
				key := fmt.Sprintf("key-%d-%d", w.start.UnixNano(), i)
				var a, b string
				var pair sync.WaitGroup
				pair.Go(func() { a = w.submit(ctx, i%n, key) })
				pair.Go(func() { b = w.submit(ctx, (i+1)%n, key) })
				pair.Wait()
				w.mu.Lock()
				w.keyed++
				if a != b && a != "" && b != "" {
					w.keyDiffer++
					w.s.tb.Logf("idempotency key %s gave jobs %s (gateway %d) and %s (gateway %d)", key, a, i%n, b, (i+1)%n)
				}
				if a != "" {
					w.acked = append(w.acked, a)
				} else if b != "" {
					w.acked = append(w.acked, b)
				}
				w.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (w *workload) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// faultReport is what a fault run saw.
type faultReport struct {
	Fault                       string
	Acknowledged, Completed     int
	Failed, Lost, Stuck         int
	Duplicates, MaxInvocations  int
	UnackedRan                  int // invocations of jobs whose submit was not acknowledged
	Refused                     map[string]int
	RefusedWindow, LongestNoAck time.Duration
	MaxConcurrent, Limit        int
	Keyed, KeyDiffer            int
	Took                        time.Duration
}

func (r faultReport) String() string {
	var codes []string
	for c, n := range r.Refused {
		codes = append(codes, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(codes)
	return fmt.Sprintf("%s: acknowledged=%d completed=%d failed=%d lost=%d stuck=%d duplicate-invocations=%d (max %d runs of one job) unacknowledged-but-ran=%d | refused attempts: [%s], first→last refusal %s, longest gap between acks %s | max concurrent %d (limit %d) | idempotency keys on two gateways: %d, gave two jobs: %d | took %s",
		r.Fault, r.Acknowledged, r.Completed, r.Failed, r.Lost, r.Stuck, r.Duplicates, r.MaxInvocations, r.UnackedRan,
		strings.Join(codes, " "), r.RefusedWindow.Round(time.Millisecond), r.LongestNoAck.Round(time.Millisecond),
		r.MaxConcurrent, r.Limit, r.Keyed, r.KeyDiffer, r.Took.Round(time.Second))
}

// settle waits until every acknowledged job is terminal (or within has
// passed) and counts the outcome. It is not buffertest.WaitFor: a job not
// settled in time fails nothing here, it is counted as stuck or lost, and
// the report says so.
func (w *workload) settle(ctx context.Context, fault string, within time.Duration) faultReport {
	w.mu.Lock()
	acked := slices.Clone(w.acked)
	r := faultReport{Fault: fault, Acknowledged: len(acked), Refused: maps(w.refused), Keyed: w.keyed, KeyDiffer: w.keyDiffer, Limit: clusterLimit}
	if len(w.refusedAt) > 0 {
		r.RefusedWindow = w.refusedAt[len(w.refusedAt)-1].Sub(w.refusedAt[0])
	}
	times := slices.Clone(w.ackTimes)
	w.mu.Unlock()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(times); i++ {
		r.LongestNoAck = max(r.LongestNoAck, times[i].Sub(times[i-1]))
	}

	deadline := time.Now().Add(within)
	pending := acked
	states := map[string]sluicev1.Job_State{}
	notFound := map[string]bool{}
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		var still []string
		for _, id := range pending {
			job, err := w.getJob(ctx, id)
			if status.Code(err) == codes.NotFound {
				notFound[id] = true
				still = append(still, id)
				continue
			}
			if err != nil {
				still = append(still, id)
				continue
			}
			delete(notFound, id)
			states[id] = job.GetState()
			if !buffer.Terminal(job.GetState()) {
				still = append(still, id)
			}
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(500 * time.Millisecond) // between rounds of reads of every pending job
		}
	}
	invoked := 0
	for _, id := range acked {
		switch st, ok := states[id]; {
		case notFound[id] || !ok:
			r.Lost++
		case st == sluicev1.Job_SUCCEEDED:
			r.Completed++
		case buffer.Terminal(st):
			r.Failed++
		default:
			r.Stuck++
		}
		runs := w.s.sim.JobInvocations(id)
		invoked += runs
		if runs > 1 {
			r.Duplicates++
		}
		r.MaxInvocations = max(r.MaxInvocations, runs)
	}
	st := w.s.sim.Stats()
	r.UnackedRan = st.Invocations - invoked
	r.MaxConcurrent = st.MaxConcurrent
	r.Took = time.Since(w.start)
	return r
}

func maps(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// getJob asks the live gateways, in turn, for a job.
func (w *workload) getJob(ctx context.Context, id string) (*sluicev1.Job, error) {
	var last error = errors.New("no live gateway")
	for _, g := range w.s.gateways {
		if !g.alive.Load() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := g.client.GetJob(cctx, &sluicev1.GetJobRequest{Id: id})
		cancel()
		if err == nil || status.Code(err) == codes.NotFound {
			return resp.GetJob(), err
		}
		last = err
	}
	return nil, last
}

// runFault runs a burst of jobs on s, calls fault once a third of them are
// acknowledged and the function is busy, and reports. The burst goes on
// until the fault is over, if it lasts longer.
func runFault(tb testing.TB, s *clusterStack, name string, jobs int, fault func()) faultReport {
	tb.Helper()
	w := &workload{s: s, submitters: 12, refused: map[string]int{}}
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Minute)
	defer cancel()
	done := make(chan struct{})
	go func() { w.run(ctx, jobs); close(done) }()
	for w.ackedCount() < jobs/3 || s.sim.Stats().Invocations < 50 {
		select {
		case <-done:
			tb.Fatalf("%s: the burst ended before the fault", name)
		case <-time.After(5 * time.Millisecond):
		}
	}
	fault()
	w.faultDone.Store(true)
	<-done
	r := w.settle(ctx, name, 3*time.Minute)
	fmt.Fprintln(faultOut, r)
	tb.Log(r)
	if r.Lost != 0 || r.Stuck != 0 || r.Failed != 0 {
		tb.Errorf("%s: %d acknowledged jobs lost, %d stuck, %d failed", name, r.Lost, r.Stuck, r.Failed)
	}
	if r.Acknowledged < jobs {
		tb.Errorf("%s: only %d of %d jobs acknowledged by the end", name, r.Acknowledged, jobs)
	}
	if r.MaxConcurrent > r.Limit {
		tb.Errorf("%s: the function saw %d invocations at once; the limit is %d", name, r.MaxConcurrent, r.Limit)
	}
	if r.KeyDiffer != 0 {
		tb.Errorf("%s: %d idempotency keys sent to two gateways gave two jobs", name, r.KeyDiffer)
	}
	return r
}

// faultOut is where fault reports also go: stdout, so that the long runs'
// figures show without -v.
var faultOut io.Writer = os.Stdout
