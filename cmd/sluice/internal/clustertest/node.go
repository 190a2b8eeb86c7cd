package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// envNATSNode, when set to a JSON nodeConfig, makes the test binary a
// NATS cluster node instead: the harness starts its nodes that way. It is
// checked in init, before TestMain, so no other code runs in a node.
const envNATSNode = "SLUICE_TEST_NATS_NODE"

func init() {
	if cfg := os.Getenv(envNATSNode); cfg != "" {
		os.Exit(runTestNATSNode(cfg))
	}
}

// nodeConfig describes one node of the test cluster.
type nodeConfig struct {
	Name                           string
	Port, ClusterPort, MonitorPort int
	Routes                         []string // nats-route://127.0.0.1:port of every node
	StoreDir                       string
}

// runTestNATSNode runs a cluster node until SIGTERM, which stops it through
// lame duck mode (as the deployment files do), or SIGKILL.
func runTestNATSNode(js string) int {
	var c nodeConfig
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

// Node is one node of a Cluster.
type Node struct {
	cfg    nodeConfig
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed when cmd has exited
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.cfg.Port) }

// Name is the node's server name.
func (n *Node) Name() string { return n.cfg.Name }

// Start starts the node (again, after Kill or Stop) as a child process of
// the test binary.
func (n *Node) Start(tb testing.TB) {
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
func (n *Node) dead() bool {
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

// Kill stops the node with SIGKILL.
func (n *Node) Kill() {
	if n.cmd != nil {
		n.cmd.Process.Kill() //nolint:errcheck // it may have gone
		<-n.exited
		n.cmd = nil
	}
}

// Stop stops the node with SIGTERM (lame duck mode, then shutdown).
func (n *Node) Stop() {
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
func (n *Node) healthy(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.cfg.MonitorPort), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
