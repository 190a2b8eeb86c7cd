package harness

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/embedded"
)

// gatewaySpec is one gateway process (sluice serve) as a benchmark starts it.
type gatewaySpec struct {
	config string // the YAML file
	// natsURL is the JetStream it uses; "": one it embeds, storing in
	// dataDir.
	natsURL string
	dataDir string // its --data-dir
	// logLevel is its --log-level; "" means warn.
	logLevel string
	// debugAddr, if set, serves its profiler.
	debugAddr string
}

// gatewayChild is a started gateway process.
type gatewayChild struct {
	// HTTP is its REST base URL; GRPCAddr its gRPC address.
	HTTP, GRPCAddr string
	Cmd            *exec.Cmd
	// Exited is closed once it has exited.
	Exited <-chan struct{}
}

// startGatewayChild starts a gateway process on free loopback ports and
// returns once it is ready; it stops with ctx, and wg tracks it.
func startGatewayChild(ctx context.Context, wg *sync.WaitGroup, stderr io.Writer, g gatewaySpec) (gatewayChild, error) {
	cmd, addrs, exited, err := startListening(ctx, wg, stderr, listeningChild{
		ports: 2, // HTTP, gRPC
		args: func(a []string) []string {
			args := []string{"serve", "--config", g.config, "--http-addr", a[0], "--grpc-addr", a[1],
				"--log-level", cmp.Or(g.logLevel, "warn"), "--data-dir", g.dataDir}
			if g.natsURL != "" {
				args = append(args, "--nats-url", g.natsURL)
			}
			if g.debugAddr != "" {
				args = append(args, "--debug-addr", g.debugAddr)
			}
			return args
		},
		readyURL: func(a []string) string { return "http://" + a[0] + "/readyz" },
	})
	if err != nil {
		return gatewayChild{}, err
	}
	return gatewayChild{HTTP: "http://" + addrs[0], GRPCAddr: addrs[1], Cmd: cmd, Exited: exited}, nil
}

// ReplicaSet is what the burst, pacing, pools and fairness benchmarks run:
// gateway processes with one config on one JetStream embedded in the
// benchmark's process, with a gRPC client to each and the benchmark's own
// view of the buffer.
type ReplicaSet struct {
	// HTTP are the gateways' REST base URLs; Clients their gRPC clients,
	// in the same order.
	HTTP    []string
	Clients []sluicev1.JobServiceClient
	// Queue is the benchmark's own view of the buffer.
	Queue *buffer.Queue

	nats     *embedded.Server
	nc       *nats.Conn
	conns    []*grpc.ClientConn
	cancel   context.CancelFunc
	children sync.WaitGroup // the gateways
}

// StartReplicaSet starts an embedded JetStream storing under dir, and n
// gateways running config (the YAML's text), each with a data directory of
// its own under dir and logging at logLevel ("": warn) to stderr; it
// returns once every gateway is ready.
func StartReplicaSet(ctx context.Context, dir, config string, n int, logLevel string, stderr io.Writer) (_ *ReplicaSet, err error) {
	ctx, cancel := context.WithCancel(ctx)
	r := &ReplicaSet{cancel: cancel}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.nats, err = embedded.Start(embedded.Config{StoreDir: filepath.Join(dir, "nats"), Listen: true}); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, err
	}
	// The gateways start side by side: each waits for JetStream and for
	// its streams and consumers.
	gateways := make([]gatewayChild, n)
	errs := make([]error, n)
	var starting sync.WaitGroup
	for i := range n {
		starting.Go(func() {
			gateways[i], errs[i] = startGatewayChild(ctx, &r.children, stderr, gatewaySpec{config: path, natsURL: r.nats.ClientURL(),
				dataDir: filepath.Join(dir, fmt.Sprint("gw", i)), logLevel: logLevel})
		})
	}
	starting.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, g := range gateways {
		conn, err := grpc.NewClient(g.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		r.conns = append(r.conns, conn)
		r.HTTP = append(r.HTTP, g.HTTP)
		r.Clients = append(r.Clients, sluicev1.NewJobServiceClient(conn))
	}
	if r.nc, err = r.nats.Connect(); err != nil {
		return nil, err
	}
	if r.Queue, err = buffer.Open(ctx, r.nc, buffer.Config{}); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops the gateways, then the JetStream they use.
func (r *ReplicaSet) Close() {
	for _, c := range r.conns {
		c.Close()
	}
	if r.nc != nil {
		r.nc.Close()
	}
	r.cancel()
	r.children.Wait()
	if r.nats != nil {
		r.nats.Shutdown()
	}
}
