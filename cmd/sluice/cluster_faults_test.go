package main

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
)

// The fault runs of issue #8: each starts a three-node JetStream cluster
// (sync_interval always, R3) with gateway replicas, submits a burst, injects
// one fault a third of the way in, and checks that every acknowledged job
// reached a terminal state, that the function never saw more than the
// concurrency limit in flight, and that an idempotency key sent to two
// gateways at once gave one job. Each prints acknowledged / completed /
// lost / duplicate-invocation counts and how long submits were refused.
//
// They are skipped with -short. SLUICE_FAULTS=long runs them with bigger
// bursts and longer faults:
//
//	SLUICE_FAULTS=long go test ./cmd/sluice -run 'TestClusterFault' -v -timeout 60m

// faultScale is the size of the fault runs: burst size and fault length.
func faultScale(t *testing.T) (jobs int, outage time.Duration) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a NATS cluster and gateway processes")
	}
	if os.Getenv("SLUICE_FAULTS") == "long" {
		return 20_000, 20 * time.Second
	}
	return 1500, 3 * time.Second
}

// TestClusterFaultKillGateway kills a gateway replica with SIGKILL during a
// burst: its unfinished jobs go to the other replicas after the ack wait.
func TestClusterFaultKillGateway(t *testing.T) {
	jobs, _ := faultScale(t)
	s := startClusterStack(t, 3, 0)
	runFault(t, s, "kill -9 of a gateway replica", jobs, func() {
		s.gateways[0].kill()
	})
}

// TestClusterFaultKillStreamLeader kills the node leading SLUICE_JOBS with
// SIGKILL during a burst, and starts it again after a while.
func TestClusterFaultKillStreamLeader(t *testing.T) {
	jobs, outage := faultScale(t)
	s := startClusterStack(t, 3, 0)
	runFault(t, s, "kill -9 of the SLUICE_JOBS leader node", jobs, func() {
		leader, err := s.nats.streamLeader(t.Context(), buffer.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("killing %s, the leader of %s", leader.cfg.Name, buffer.StreamName)
		leader.kill()
		time.Sleep(outage)
		leader.start(t)
	})
	s.nats.waitHealthy(time.Minute)
}

// TestClusterFaultNetworkCut cuts one gateway off NATS during a burst: its
// connections are dropped (drop) or go silent (blackhole), then heal.
func TestClusterFaultNetworkCut(t *testing.T) {
	jobs, outage := faultScale(t)
	for _, blackhole := range []bool{false, true} {
		name := "network cut (connections dropped) between a gateway and NATS"
		if blackhole {
			name = "network cut (connections silent) between a gateway and NATS"
		}
		t.Run(map[bool]string{false: "drop", true: "blackhole"}[blackhole], func(t *testing.T) {
			s := startClusterStack(t, 3, 1)
			runFault(t, s, name, jobs, func() {
				for _, p := range s.proxies[0] {
					p.Cut(blackhole)
				}
				time.Sleep(outage)
				for _, p := range s.proxies[0] {
					p.Restore()
				}
			})
		})
	}
}

// TestClusterFaultRollingRestart restarts the three NATS nodes one after
// another under load, each through lame duck mode, waiting for the cluster
// to be healthy before the next.
func TestClusterFaultRollingRestart(t *testing.T) {
	jobs, _ := faultScale(t)
	s := startClusterStack(t, 3, 0)
	runFault(t, s, "rolling restart of the 3 NATS nodes", jobs, func() {
		for _, n := range s.nats.nodes {
			n.stop()
			n.start(t)
			s.nats.waitHealthy(2 * time.Minute)
		}
	})
}

// TestClusterReplicasChecks checks --replicas against a real cluster: R1 on
// a cluster is warned about, and a gateway whose --replicas contradicts the
// streams already there refuses to start, changing nothing.
func TestClusterReplicasChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster")
	}
	c := startTestCluster(t)
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: "http://127.0.0.1:1/"}}}
	var logs buffertest.LockedBuffer
	p, err := servertest.New(t, "", cfg, server.Options{NATSURL: c.URLs(), Replicas: 1}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	servertest.Run(t, p)
	if !strings.Contains(logs.String(), "NATS is a cluster but --replicas is 1") {
		t.Errorf("no warning about R1 on a cluster in:\n%s", logs.String())
	}

	_, err = server.New(t.Context(), cfg, server.Options{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", NATSURL: c.URLs(), Replicas: 3,
	}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, buffer.ErrDurability) || !strings.Contains(err.Error(), "--replicas=3") ||
		!strings.Contains(err.Error(), "has 1 replicas") {
		t.Fatalf("gateway with --replicas=3 on R1 streams: %v, want ErrDurability naming --replicas", err)
	}
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(t.Context(), buffer.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 1 {
		t.Errorf("the refused gateway changed %s to %d replicas", buffer.StreamName, r)
	}

}
