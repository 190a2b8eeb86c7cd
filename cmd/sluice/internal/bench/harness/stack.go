package harness

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
)

// Stack is what the ingress, pipeline, invoke, queued and scale
// benchmarks measure: a JetStream (embedded in a process of its own,
// `bench jetstream`, or the one at --nats-url, or embedded in the gateway
// with StackFlags.InGateway) and one gateway process of its own that uses
// it, so that the gateway's CPU and memory are its own.
type Stack struct {
	// HTTP is the gateway's REST base URL; GRPCAddr its gRPC address.
	HTTP, GRPCAddr string
	// Gateway is the gateway's process; GatewayExited is closed once it
	// has exited.
	Gateway       *exec.Cmd
	GatewayExited <-chan struct{}
	// NC is the benchmark's own connection to the JetStream; JS over it.
	// Both nil with StackFlags.InGateway.
	NC *nats.Conn
	JS jetstream.JetStream
	// NATS is the JetStream's process; nil with --nats-url or InGateway.
	NATS *exec.Cmd

	cancel       context.CancelFunc
	stopNATS     context.CancelFunc
	children     sync.WaitGroup // the gateway
	natsChildren sync.WaitGroup // the JetStream, stopped after the gateway
}

// StackFlags are the flags of the benchmarks that run a Stack (ingress,
// pipeline, invoke, queued): which JetStream, and profilers.
type StackFlags struct {
	// NATSURL is a NATS server to use instead of an embedded one; "":
	// embedded, in a process of its own.
	NATSURL string
	// Durability is the embedded server's: always (fsync before ack) or
	// interval.
	Durability string
	// GatewayDebugAddr, if set, serves the gateway's profiler;
	// NATSDebugAddr the JetStream process's.
	GatewayDebugAddr, NATSDebugAddr string
	// InGateway, with NATSURL empty, has the gateway embed its JetStream
	// (sluice serve without --nats-url), as a gateway on its own does:
	// no JetStream process, and no connection of the benchmark's own.
	// A benchmark sets it; Register adds no flag for it.
	InGateway bool
}

// Register registers the flags on fs.
func (f *StackFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.NATSURL, "nats-url", "", "a NATS server to use instead of an embedded one")
	fs.StringVar(&f.Durability, "durability", "always", "the embedded server's durability: always (fsync before ack) or interval")
	fs.StringVar(&f.GatewayDebugAddr, "gateway-debug-addr", "", "serve the gateway's profiler here (see serve --debug-addr)")
	fs.StringVar(&f.NATSDebugAddr, "nats-debug-addr", "", "serve the JetStream process's profiler here")
}

// StartStack starts the JetStream the flags say and a gateway running
// config (the YAML's text), storing under dir (a scratch directory the
// caller removes), and returns once the gateway answers.
func StartStack(ctx context.Context, f StackFlags, dir, config string, stderr io.Writer) (_ *Stack, err error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &Stack{cancel: cancel}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	natsURL := f.NATSURL
	natsCtx, stopNATS := context.WithCancel(context.WithoutCancel(ctx))
	s.stopNATS = stopNATS
	inGateway := f.InGateway && natsURL == ""
	if natsURL == "" && !inGateway {
		if natsURL, s.NATS, err = startJetStreamProcess(natsCtx, &s.natsChildren, filepath.Join(dir, "nats"), f.Durability, f.NATSDebugAddr, stderr); err != nil {
			return nil, err
		}
	}
	if !inGateway {
		if s.NC, err = nats.Connect(natsURL, nats.Name("sluice-bench")); err != nil {
			return nil, err
		}
		if s.JS, err = jetstream.New(s.NC); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, err
	}
	gw, err := startGatewayChild(ctx, &s.children, stderr, gatewaySpec{config: path, natsURL: natsURL,
		dataDir: filepath.Join(dir, "gw"), debugAddr: f.GatewayDebugAddr})
	if err != nil {
		return nil, err
	}
	s.Gateway, s.GatewayExited, s.HTTP, s.GRPCAddr = gw.Cmd, gw.Exited, gw.HTTP, gw.GRPCAddr
	return s, nil
}

// Close stops the gateway, then the JetStream.
func (s *Stack) Close() {
	s.cancel()
	s.children.Wait()
	if s.NC != nil {
		s.NC.Close()
	}
	s.stopNATS()
	s.natsChildren.Wait()
}

// NATSRSS is the JetStream process's resident memory; 0 with --nats-url.
func (s *Stack) NATSRSS() (int64, error) {
	m, err := s.NATSMemory()
	return m.RSS, err
}

// NATSMemory is the JetStream process's resident memory and its peak;
// zero without a JetStream process (--nats-url, InGateway).
func (s *Stack) NATSMemory() (Memory, error) {
	if s.NATS == nil {
		return Memory{}, nil
	}
	return processMemory(s.NATS.Process.Pid)
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

// RunJetStream runs an embedded JetStream listening on loopback, prints
// its URL and serves until stopped: the benchmarks' JetStream, `sluice
// bench jetstream`, which a Stack starts in a process of its own.
func RunJetStream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench jetstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("store-dir", "", "where JetStream stores (required)")
	durability := fs.String("durability", "always", "always (fsync before ack) or interval")
	debugAddr := fs.String("debug-addr", "", "serve Go's profiler here")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	e, err := embedded.Start(embedded.Config{StoreDir: *dir, Listen: true, NoSyncAlways: *durability == "interval"})
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
func (s *Stack) GRPCClients(n int) ([]sluicev1.JobServiceClient, func(), error) {
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

// GatewayRSS is the gateway process's resident memory, from /proc.
func (s *Stack) GatewayRSS() (int64, error) { return processRSS(s.Gateway.Process.Pid) }

// GatewayMemory is the gateway process's resident memory and its peak.
func (s *Stack) GatewayMemory() (Memory, error) { return processMemory(s.Gateway.Process.Pid) }

// CPUTimes are the CPU times used so far by the gateway, the JetStream
// process (0 with --nats-url) and this process (the load generator), and
// by the whole machine: busy (every process, a simulated platform's too,
// and the kernel's network work) and in all (busy and idle, every core).
type CPUTimes struct{ gateway, nats, self, machineBusy, machineAll time.Duration }

// Gateway and NATS are the gateway's and the JetStream process's CPU
// times in t.
func (t CPUTimes) Gateway() time.Duration { return t.gateway }
func (t CPUTimes) NATS() time.Duration    { return t.nats }

// CPU reads the three processes' CPU times and the machine's.
func (s *Stack) CPU() (CPUTimes, error) {
	var t CPUTimes
	var err1, err2, err3, err4 error
	t.gateway, err1 = processCPU(s.Gateway.Process.Pid)
	if s.NATS != nil {
		t.nats, err2 = processCPU(s.NATS.Process.Pid)
	}
	t.self, err3 = processCPU(os.Getpid())
	t.machineBusy, t.machineAll, err4 = machineCPU()
	return t, errors.Join(err1, err2, err3, err4)
}

// MachineLoad formats the machine's CPU between two readings: how busy its
// cores were, and its busy CPU time per operation in µs.
func MachineLoad(from, to CPUTimes, ops int) string {
	share, busy := MachineBusy(from, to)
	if share < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%, %d µs", 100*share, busy.Microseconds()/int64(max(ops, 1)))
}

// MachineBusy is the machine's busy share of all its cores' time between
// two readings (-1 if no time passed), and its busy CPU time.
func MachineBusy(from, to CPUTimes) (share float64, busy time.Duration) {
	busy, all := to.machineBusy-from.machineBusy, to.machineAll-from.machineAll
	if all <= 0 {
		return -1, busy
	}
	return float64(busy) / float64(all), busy
}

// PerOp formats the CPU used between two readings per operation, in µs:
// gateway / JetStream / load generator.
func PerOp(from, to CPUTimes, ops int) string {
	us := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/float64(max(ops, 1)), 'f', 0, 64)
	}
	return us(to.gateway-from.gateway) + " / " + us(to.nats-from.nats) + " / " + us(to.self-from.self)
}
