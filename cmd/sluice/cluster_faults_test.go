package main

import (
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
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
		leader, err := s.nats.StreamLeader(t.Context(), buffer.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("killing %s, the leader of %s", leader.Name(), buffer.StreamName)
		leader.Kill()
		time.Sleep(outage) // the fault lasts this long
		leader.Start(t)
	})
	s.nats.WaitHealthy(time.Minute)
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
				time.Sleep(outage) // the fault lasts this long
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
		for _, n := range s.nats.Nodes() {
			n.Stop()
			n.Start(t)
			s.nats.WaitHealthy(2 * time.Minute)
		}
	})
}
