package main

// A test harness for Sluice in cluster mode: a real three-node JetStream
// cluster on loopback (each node a child process, so that it can be killed
// with SIGKILL, storing with sync_interval always), gateway replicas as
// child processes, the simulated platform in the test process, TCP proxies
// that can cut a gateway off NATS, and a workload that records every
// acknowledged submit and every invocation the function sees.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// envNATSNode, when set to a JSON natsNodeConfig, makes the test binary a
// NATS cluster node instead: the harness starts its nodes that way. It is
// checked in init, before TestMain, so no other code runs in a node.
const envNATSNode = "SLUICE_TEST_NATS_NODE"

func init() {
	if cfg := os.Getenv(envNATSNode); cfg != "" {
		os.Exit(runTestNATSNode(cfg))
	}
}

// natsNodeConfig describes one node of the test cluster.
type natsNodeConfig struct {
	Name                           string
	Port, ClusterPort, MonitorPort int
	Routes                         []string // nats-route://127.0.0.1:port of every node
	StoreDir                       string
}

// runTestNATSNode runs a cluster node until SIGTERM, which stops it through
// lame duck mode (as the deployment files do), or SIGKILL.
func runTestNATSNode(js string) int {
	var c natsNodeConfig
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	if err := os.MkdirAll(c.StoreDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	opts := &server.Options{
		ServerName: c.Name,
		Host:       "127.0.0.1",
		Port:       c.Port,
		HTTPHost:   "127.0.0.1",
		HTTPPort:   c.MonitorPort,
		JetStream:  true,
		StoreDir:   c.StoreDir,
		SyncAlways: true, // sync_interval: always
		MaxPayload: 8 << 20,
		Cluster: server.ClusterOpts{
			Name: "sluice-test", Host: "127.0.0.1", Port: c.ClusterPort,
			// Clients keep to the URLs they were given, so that a gateway
			// behind a proxy cannot go around it.
			NoAdvertise: true,
		},
		Routes:              server.RoutesFromStr(strings.Join(c.Routes, ",")),
		NoSigs:              true,
		LogFile:             filepath.Join(c.StoreDir, "..", c.Name+".log"),
		Logtime:             true,
		LameDuckDuration:    3 * time.Second,
		LameDuckGracePeriod: time.Second,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	srv.ConfigureLogger()
	srv.Start()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.LameDuckShutdown()
	srv.WaitForShutdown()
	return 0
}

// natsNode is one node of a testCluster.
type natsNode struct {
	cfg    natsNodeConfig
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed when cmd has exited
}

// URL is the node's client URL.
func (n *natsNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.cfg.Port) }

func (n *natsNode) start(tb testing.TB) {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := json.Marshal(n.cfg)
	cmd := exec.Command(self)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphans if the test dies
	cmd.Env = append(os.Environ(), envNATSNode+"="+string(b))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // exits are seen through exited
	n.cmd, n.exited = cmd, exited
}

// dead reports whether the node was started and has exited since.
func (n *natsNode) dead() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return true
	default:
		return false
	}
}

// kill stops the node with SIGKILL.
func (n *natsNode) kill() {
	if n.cmd != nil {
		n.cmd.Process.Kill() //nolint:errcheck // it may have gone
		<-n.exited
		n.cmd = nil
	}
}

// stop stops the node with SIGTERM (lame duck mode, then shutdown).
func (n *natsNode) stop() {
	if n.cmd != nil {
		n.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have gone
		select {
		case <-n.exited:
		case <-time.After(30 * time.Second):
			n.cmd.Process.Kill() //nolint:errcheck // it may have gone
			<-n.exited
		}
		n.cmd = nil
	}
}

// healthy reports whether the node's /healthz answers 200: it is up, and
// its JetStream assets are current.
func (n *natsNode) healthy(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.cfg.MonitorPort), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// testCluster is a three-node JetStream cluster on loopback.
type testCluster struct {
	tb    testing.TB
	dir   string
	nodes []*natsNode
}

// startTestCluster starts three nodes and waits until all are healthy. A
// node that cannot bind its ports (another process took one between the
// harness choosing it and the node binding it) exits at once; the cluster is
// then started again on other ports.
func startTestCluster(tb testing.TB) *testCluster {
	tb.Helper()
	c := &testCluster{tb: tb}
	tb.Cleanup(func() {
		c.killAll()
		if tb.Failed() {
			c.dumpLogs()
		}
	})
	const attempts = 3
	for attempt := 1; ; attempt++ {
		c.dir = tb.TempDir()
		c.nodes = nil
		var routes []string
		for i := range 3 {
			n := &natsNode{cfg: natsNodeConfig{
				Name: fmt.Sprintf("n%d", i+1), Port: stablePort(tb), ClusterPort: stablePort(tb), MonitorPort: stablePort(tb),
				StoreDir: filepath.Join(c.dir, fmt.Sprintf("n%d", i+1), "jetstream"),
			}}
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.cfg.ClusterPort))
			c.nodes = append(c.nodes, n)
		}
		for _, n := range c.nodes {
			n.cfg.Routes = routes
			n.start(tb)
		}
		err := c.awaitHealthy(60 * time.Second)
		if err == nil {
			return c
		}
		if !errors.Is(err, errNodeExited) || attempt == attempts {
			tb.Fatal(err)
		}
		tb.Logf("starting the NATS cluster again on other ports: %v", err)
		c.dumpLogs()
		c.killAll()
	}
}

// killAll kills every running node.
func (c *testCluster) killAll() {
	for _, n := range c.nodes {
		n.kill()
	}
}

// usedStablePorts are the ports stablePort handed out in this process, so
// that a restarted cluster does not get a port a killed one still holds.
var usedStablePorts sync.Map

// stableAddr is "127.0.0.1:" and a stablePort.
func stableAddr(tb testing.TB) string {
	tb.Helper()
	return fmt.Sprintf("127.0.0.1:%d", stablePort(tb))
}

// stablePort returns a free loopback port for a process that a test restarts
// on the same port (a NATS node, a gateway), chosen below the kernel's
// ephemeral range: a port from that range may, while the process is down,
// become the local end of any outgoing connection on the machine (go test
// runs other packages' tests alongside).
func stablePort(tb testing.TB) int {
	tb.Helper()
	low := 32768 // Linux's default start of the ephemeral range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	const first = 10000
	if low-first < 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // no room below the range: take the kernel's choice
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	for range 1000 {
		port := first + rand.IntN(low-first)
		if _, taken := usedStablePorts.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	tb.Fatalf("no free port in [%d, %d)", first, low)
	return 0
}

// URLs is every node's client URL, comma-separated, as --nats-url takes them.
func (c *testCluster) URLs() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// errNodeExited is awaitHealthy's error when a started node has exited.
var errNodeExited = errors.New("NATS node exited")

// waitHealthy waits until every running node is healthy.
func (c *testCluster) waitHealthy(within time.Duration) {
	c.tb.Helper()
	if err := c.awaitHealthy(within); err != nil {
		c.tb.Fatal(err)
	}
}

// awaitHealthy waits until every running node is healthy, and fails at once
// if one of them has exited.
func (c *testCluster) awaitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ok := true
		for _, n := range c.nodes {
			if n.dead() {
				return fmt.Errorf("%w: %s", errNodeExited, n.cfg.Name)
			}
			if n.cmd != nil && !n.healthy(context.Background()) {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("NATS cluster not healthy within %s", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// node returns the node with that server name.
func (c *testCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.cfg.Name == name {
			return n
		}
	}
	return nil
}

// streamLeader returns the node leading the stream.
func (c *testCluster) streamLeader(ctx context.Context, stream string) (*natsNode, error) {
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || c.node(info.Cluster.Leader) == nil {
		return nil, fmt.Errorf("stream %s has no known leader: %+v", stream, info.Cluster)
	}
	return c.node(info.Cluster.Leader), nil
}

// dumpLogs prints the tail of every node's log.
func (c *testCluster) dumpLogs() {
	for _, n := range c.nodes {
		b, err := os.ReadFile(filepath.Join(c.dir, n.cfg.Name, n.cfg.Name+".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		c.tb.Logf("NATS node %s, last lines of its log:\n%s", n.cfg.Name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// cutProxy forwards TCP connections to a target until cut: then it drops
// every connection it holds and refuses new ones (dropMode), or keeps them
// open and forwards nothing (blackhole mode), until restored.
type cutProxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	cut       bool
	blackhole bool
	conns     map[net.Conn]bool
}

func startCutProxy(tb testing.TB, target string) *cutProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	tb.Cleanup(func() { ln.Close(); p.closeAll() })
	go p.serve()
	return p
}

func (p *cutProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst, holding bytes back while blackholed.
func (p *cutProxy) pipe(dst, src net.Conn) {
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				hold := p.cut && p.blackhole
				p.mu.Unlock()
				if !hold {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Whatever arrived during a blackhole is held back and
			// delivered after it, as TCP retransmits across a short
			// partition.
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Cut drops the connections (or, with blackhole, silences them).
func (p *cutProxy) Cut(blackhole bool) {
	p.mu.Lock()
	p.cut, p.blackhole = true, blackhole
	p.mu.Unlock()
	if !blackhole {
		p.closeAll()
	}
}

// Restore forwards again.
func (p *cutProxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *cutProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

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
	nats     *testCluster
	gateways []*clusterGateway
	proxies  [][]*cutProxy // by gateway; nil for a gateway connected directly
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
	s := &clusterStack{tb: tb, nats: startTestCluster(tb)}
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
		httpAddr, grpcAddr := stableAddr(tb), stableAddr(tb) // a killed gateway restarts on them
		urls := s.nats.URLs()
		var proxies []*cutProxy
		if i < proxied {
			var pu []string
			for _, n := range s.nats.nodes {
				p := startCutProxy(tb, strings.TrimPrefix(n.URL(), "nats://"))
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
		time.Sleep(50 * time.Millisecond)
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
// passed) and counts the outcome.
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
			time.Sleep(500 * time.Millisecond)
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
