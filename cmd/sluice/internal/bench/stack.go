package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/loadgen"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
)

// benchStack is what the ingress, pipeline, invoke and queued benchmarks
// measure: a JetStream (embedded in the benchmark's process, or the one at
// --nats-url) and one gateway process of its own that uses it, so that the
// gateway's CPU and memory are its own.
type benchStack struct {
	// HTTP is the gateway's REST base URL; GRPCAddr its gRPC address.
	HTTP, GRPCAddr string
	// Gateway is the gateway's process.
	Gateway *exec.Cmd
	// NC is the benchmark's own connection to the JetStream; JS over it.
	NC *nats.Conn
	JS jetstream.JetStream
	// NATS is the JetStream's process; nil with --nats-url.
	NATS *exec.Cmd

	cancel       context.CancelFunc
	stopNATS     context.CancelFunc
	children     sync.WaitGroup // the gateway
	natsChildren sync.WaitGroup // the JetStream, stopped after the gateway
}

// stackOptions say what a benchStack runs.
type stackOptions struct {
	dir        string // scratch directory, removed by the caller
	natsURL    string // "": embedded
	durability string // always or interval, for the embedded server
	config     string // the gateway's YAML
	debugAddr  string // the gateway's --debug-addr, for profiling it
	// natsDebugAddr, if set, serves the JetStream process's profiler.
	natsDebugAddr string
}

// stackFlags are the flags of the benchmarks that run a benchStack
// (ingress, pipeline, invoke, queued): which JetStream, and profilers.
type stackFlags struct {
	natsURL, durability, debugAddr, natsDebugAddr string
}

func (f *stackFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.natsURL, "nats-url", "", "a NATS server to use instead of an embedded one")
	fs.StringVar(&f.durability, "durability", "always", "the embedded server's durability: always (fsync before ack) or interval")
	fs.StringVar(&f.debugAddr, "gateway-debug-addr", "", "serve the gateway's profiler here (see serve --debug-addr)")
	fs.StringVar(&f.natsDebugAddr, "nats-debug-addr", "", "serve the JetStream process's profiler here")
}

// options are the stackOptions the flags give, for a stack in dir whose
// gateway runs
func (f *stackFlags) options(dir, config string) stackOptions {
	return stackOptions{dir: dir, natsURL: f.natsURL, durability: f.durability, debugAddr: f.debugAddr, natsDebugAddr: f.natsDebugAddr, config: config}
}

// startBenchStack starts the JetStream and the gateway, and returns once
// the gateway answers.
func startBenchStack(ctx context.Context, o stackOptions, stderr io.Writer) (_ *benchStack, err error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &benchStack{cancel: cancel}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	natsURL := o.natsURL
	natsCtx, stopNATS := context.WithCancel(context.WithoutCancel(ctx))
	s.stopNATS = stopNATS
	if natsURL == "" {
		if natsURL, s.NATS, err = startJetStreamProcess(natsCtx, &s.natsChildren, filepath.Join(o.dir, "nats"), o.durability, o.natsDebugAddr, stderr); err != nil {
			return nil, err
		}
	}
	if s.NC, err = nats.Connect(natsURL, nats.Name("sluice-bench")); err != nil {
		return nil, err
	}
	if s.JS, err = jetstream.New(s.NC); err != nil {
		return nil, err
	}
	config := filepath.Join(o.dir, "sluice.yaml")
	if err := os.WriteFile(config, []byte(o.config), 0o600); err != nil {
		return nil, err
	}
	gw, err := startGatewayChild(ctx, &s.children, stderr, gatewaySpec{config: config, natsURL: natsURL,
		dataDir: filepath.Join(o.dir, "gw"), debugAddr: o.debugAddr})
	if err != nil {
		return nil, err
	}
	s.Gateway, s.HTTP, s.GRPCAddr = gw.Cmd, gw.HTTP, gw.GRPCAddr
	return s, nil
}

// Close stops the gateway, then the JetStream.
func (s *benchStack) Close() {
	s.cancel()
	s.children.Wait()
	if s.NC != nil {
		s.NC.Close()
	}
	s.stopNATS()
	s.natsChildren.Wait()
}

// NATSRSS is the JetStream process's resident memory; 0 with --nats-url.
func (s *benchStack) NATSRSS() (int64, error) {
	if s.NATS == nil {
		return 0, nil
	}
	return processRSS(s.NATS.Process.Pid)
}

// startJetStreamProcess runs `sluice bench jetstream` storing into dir and
// returns its client URL once it listens: the benchmarks' JetStream runs in
// a process of its own, so that its CPU, memory and pauses are not charged
// to the gateway or to the load generator.
func startJetStreamProcess(ctx context.Context, wg *sync.WaitGroup, dir, durability, debugAddr string, stderr io.Writer) (string, *exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, self, "bench", "jetstream", "--store-dir", dir, "--durability", durability, "--debug-addr", debugAddr)
	cmd.Stderr = stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start jetstream: %w", err)
	}
	wg.Go(func() { cmd.Wait() }) //nolint:errcheck // stopped on purpose
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return "", nil, fmt.Errorf("jetstream process: no address: %w", err)
	}
	go io.Copy(io.Discard, out) //nolint:errcheck // ends when the process does
	return strings.TrimSpace(line), cmd, nil
}

// runBenchJetStream runs an embedded JetStream listening on loopback,
// prints its URL and serves until stopped: the benchmarks' JetStream.
func runBenchJetStream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench jetstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("store-dir", "", "where JetStream stores (required)")
	durability := fs.String("durability", "always", "always (fsync before ack) or interval")
	debugAddr := fs.String("debug-addr", "", "serve Go's profiler here")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	e, err := buffer.StartEmbedded(buffer.EmbeddedConfig{StoreDir: *dir, Listen: true, NoSyncAlways: *durability == "interval"})
	if err != nil {
		return err
	}
	defer e.Shutdown()
	fmt.Fprintln(stdout, e.ClientURL())
	if *debugAddr != "" {
		return server.ServeDebug(ctx, *debugAddr, slog.New(slog.NewTextHandler(stderr, nil)))
	}
	<-ctx.Done()
	return nil
}

// GRPCClients opens n connections to the gateway: one HTTP/2 connection
// carries every stream on one reader goroutine at each end, so a load of
// many concurrent calls is spread over a few.
func (s *benchStack) GRPCClients(n int) ([]sluicev1.JobServiceClient, func(), error) {
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	var clients []sluicev1.JobServiceClient
	for range n {
		conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, conn)
		clients = append(clients, sluicev1.NewJobServiceClient(conn))
	}
	return clients, closeAll, nil
}

// submitters submit jobs of one payload to the bench function, for a
// benchmark's workers, through the load generator's clients (package
// loadgen): grpc-go's client costs ~25 µs of CPU per call and net/http's
// ~37 µs per request on the benchmark machine, ~14 and ~16 µs with
// loadgen's, and the generator shares the machine with what it measures.
type submitters struct {
	stack   *benchStack
	payload []byte
	grpc    []*loadgen.GRPCConn // workers share them
	http    []*loadgen.HTTPConn // one per worker, dialled on first use
}

// Submitters connects the load generator's gRPC connections to the
// gateway; REST connections are dialled as workers first use them.
func (s *benchStack) Submitters(ctx context.Context, grpcConns, workers int, payload []byte) (*submitters, error) {
	sub := &submitters{stack: s, payload: payload, http: make([]*loadgen.HTTPConn, workers)}
	for range grpcConns {
		c, err := loadgen.DialGRPC(ctx, s.GRPCAddr)
		if err != nil {
			sub.Close()
			return nil, err
		}
		sub.grpc = append(sub.grpc, c)
	}
	return sub, nil
}

// GRPC submits one job over gRPC as worker w.
func (sub *submitters) GRPC(ctx context.Context, w int) (*sluicev1.Job, error) {
	var resp sluicev1.SubmitJobResponse
	err := sub.grpc[w%len(sub.grpc)].Invoke(ctx, sluicev1.JobService_SubmitJob_FullMethodName, &sluicev1.SubmitJobRequest{
		Function: benchFunction,
		Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: sub.payload},
	}, &resp)
	return resp.GetJob(), err
}

// REST submits one job over REST as worker w, and wants 202.
func (sub *submitters) REST(ctx context.Context, w int) error {
	if sub.http[w] == nil {
		c, err := loadgen.DialHTTP(ctx, strings.TrimPrefix(sub.stack.HTTP, "http://"))
		if err != nil {
			return err
		}
		sub.http[w] = c
	}
	code, body, err := sub.http[w].Post(ctx, "/v1/functions/"+benchFunction+"/jobs", "application/octet-stream", sub.payload)
	if err != nil {
		return err
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("REST submit: %d %s, want 202", code, bytes.TrimSpace(body))
	}
	return nil
}

// Close closes every connection.
func (sub *submitters) Close() {
	for _, c := range sub.grpc {
		c.Close()
	}
	for _, c := range sub.http {
		if c != nil {
			c.Close()
		}
	}
}

// GatewayRSS is the gateway process's resident memory, from /proc.
func (s *benchStack) GatewayRSS() (int64, error) { return processRSS(s.Gateway.Process.Pid) }

// cpuTimes are the CPU times used so far by the gateway, the JetStream
// process (0 with --nats-url) and this process (the load generator), and
// by the whole machine: busy (every process, a simulated platform's too,
// and the kernel's network work) and in all (busy and idle, every core).
type cpuTimes struct{ gateway, nats, self, machineBusy, machineAll time.Duration }

// CPU reads the three processes' CPU times and the machine's.
func (s *benchStack) CPU() (cpuTimes, error) {
	var t cpuTimes
	var err1, err2, err3, err4 error
	t.gateway, err1 = processCPU(s.Gateway.Process.Pid)
	if s.NATS != nil {
		t.nats, err2 = processCPU(s.NATS.Process.Pid)
	}
	t.self, err3 = processCPU(os.Getpid())
	t.machineBusy, t.machineAll, err4 = machineCPU()
	return t, errors.Join(err1, err2, err3, err4)
}

// machineLoad formats the machine's CPU between two readings: how busy its
// cores were, and its busy CPU time per operation in µs.
func machineLoad(from, to cpuTimes, ops int) string {
	busy, all := to.machineBusy-from.machineBusy, to.machineAll-from.machineAll
	if all <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%, %d µs", 100*float64(busy)/float64(all), busy.Microseconds()/int64(max(ops, 1)))
}

// perOp formats the CPU used between two readings per operation, in µs:
// gateway / JetStream / load generator.
func perOp(from, to cpuTimes, ops int) string {
	us := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/float64(max(ops, 1)), 'f', 0, 64)
	}
	return us(to.gateway-from.gateway) + " / " + us(to.nats-from.nats) + " / " + us(to.self-from.self)
}

// loadResult is what a closed-loop load measured.
type loadResult struct {
	ops     int
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (r *loadResult) perSecond() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// quantile is the q-quantile of the latencies (nearest rank).
func (r *loadResult) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := min(len(r.lat)-1, int(q*float64(len(r.lat))))
	return r.lat[i]
}

// runLoad calls op from workers goroutines, each calling again as soon as
// its last call returned, for d, and measures every call. The first error
// stops it: a benchmark that loses work has no figure worth printing.
func runLoad(ctx context.Context, workers int, d time.Duration, op func(ctx context.Context, worker int) error) (*loadResult, error) {
	lats := make([][]time.Duration, workers)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		g.Go(func() error {
			l := make([]time.Duration, 0, 1024)
			for t0 := time.Now(); t0.Before(deadline); t0 = time.Now() {
				if err := op(gctx, w); err != nil {
					return err
				}
				l = append(l, time.Since(t0))
			}
			lats[w] = l
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	r := &loadResult{elapsed: time.Since(start), lat: slices.Concat(lats...)}
	r.ops = len(r.lat)
	slices.Sort(r.lat)
	return r, nil
}

// ms formats a latency in milliseconds.
func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }
