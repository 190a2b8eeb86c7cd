// Package clustertest runs a real three-node JetStream cluster on loopback
// for tests: each node a child process of the test binary (so that it can
// be killed with SIGKILL), storing with sync_interval always, on ports
// below the ephemeral range so that a node restarts on its own; and TCP
// proxies that can cut a client off NATS. A test binary that imports it
// becomes a cluster node when the harness starts it as one (see init).
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a three-node JetStream cluster on loopback.
type Cluster struct {
	tb    testing.TB
	dir   string
	nodes []*Node
}

// Start starts three nodes and waits until all are healthy. A
// node that cannot bind its ports (another process took one between the
// harness choosing it and the node binding it) exits at once; the cluster is
// then started again on other ports.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb}
	tb.Cleanup(func() {
		c.KillAll()
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
			n := &Node{cfg: nodeConfig{
				Name: fmt.Sprintf("n%d", i+1), Port: StablePort(tb), ClusterPort: StablePort(tb), MonitorPort: StablePort(tb),
				StoreDir: filepath.Join(c.dir, fmt.Sprintf("n%d", i+1), "jetstream"),
			}}
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.cfg.ClusterPort))
			c.nodes = append(c.nodes, n)
		}
		for _, n := range c.nodes {
			n.cfg.Routes = routes
			n.Start(tb)
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
		c.KillAll()
	}
}

// Nodes are the cluster's nodes.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// KillAll kills every running node.
func (c *Cluster) KillAll() {
	for _, n := range c.nodes {
		n.Kill()
	}
}

// URLs is every node's client URL, comma-separated, as --nats-url takes them.
func (c *Cluster) URLs() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// errNodeExited is awaitHealthy's error when a started node has exited.
var errNodeExited = errors.New("NATS node exited")

// WaitHealthy waits until every running node is healthy.
func (c *Cluster) WaitHealthy(within time.Duration) {
	c.tb.Helper()
	if err := c.awaitHealthy(within); err != nil {
		c.tb.Fatal(err)
	}
}

// awaitHealthy waits until every running node is healthy, and fails at once
// if one of them has exited.
func (c *Cluster) awaitHealthy(within time.Duration) error {
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

// Node returns the node with that server name.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.cfg.Name == name {
			return n
		}
	}
	return nil
}

// StreamLeader returns the node leading the stream.
func (c *Cluster) StreamLeader(ctx context.Context, stream string) (*Node, error) {
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
	if info.Cluster == nil || c.Node(info.Cluster.Leader) == nil {
		return nil, fmt.Errorf("stream %s has no known leader: %+v", stream, info.Cluster)
	}
	return c.Node(info.Cluster.Leader), nil
}

// dumpLogs prints the tail of every node's log.
func (c *Cluster) dumpLogs() {
	for _, n := range c.nodes {
		b, err := os.ReadFile(filepath.Join(c.dir, n.cfg.Name, n.cfg.Name+".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		c.tb.Logf("NATS node %s, last lines of its log:\n%s", n.cfg.Name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}
