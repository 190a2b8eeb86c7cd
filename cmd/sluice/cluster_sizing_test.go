package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

// TestClusterSizing measures what one gateway replica sustains against a
// three-node R3 JetStream cluster with sync_interval always, for the
// sizing table of deploy/README.md. It runs only when asked:
//
//	SLUICE_SIZING=1 go test ./cmd/sluice -run TestClusterSizing -v -timeout 20m
func TestClusterSizing(t *testing.T) {
	if os.Getenv("SLUICE_SIZING") == "" {
		t.Skip("set SLUICE_SIZING=1 to measure")
	}
	const (
		clients = 64
		window  = 10 * time.Second
		payload = 1024
	)
	body := bytes.Repeat([]byte("x"), payload)

	// Ingress: the function is paused, so only submits are measured.
	s := startClusterStackWith(t, clusterStackOptions{gateways: 2, paused: true})
	pid := s.gateways[0].cmd.Process.Pid
	t.Logf("gateway RSS idle: %d MiB", rssMiB(t, pid))
	grpcOp := func(gw int) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := s.gateways[gw].client.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Function: "f",
				Payload: &httpbody.HttpBody{ContentType: "application/octet-stream", Data: body}})
			return err
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second}
	restOp := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.gateways[0].httpAddr+"/v1/functions/f/jobs", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("submit: %s", resp.Status)
		}
		return nil
	}
	for _, p := range []struct {
		name string
		ops  []func(context.Context) error
	}{
		{"gRPC, one replica", []func(context.Context) error{grpcOp(0)}},
		{"REST, one replica", []func(context.Context) error{restOp}},
		{"gRPC, two replicas together", []func(context.Context) error{grpcOp(0), grpcOp(1)}},
	} {
		cpu0 := cpuTime(t, pid)
		n, errs := drive(t.Context(), p.ops, clients, window)
		cpu := cpuTime(t, pid) - cpu0
		rate := float64(n) / window.Seconds()
		fmt.Fprintf(faultOut, "sizing: %s: %d clients, %d-byte payloads: %.0f submits/s (%d errors); replica 1 CPU %.2f cores, %.2f cores per 1,000 submits/s; RSS %d MiB\n",
			p.name, clients*len(p.ops), payload, rate, errs, cpu.Seconds()/window.Seconds(),
			cpu.Seconds()/window.Seconds()/(rate/float64(len(p.ops))/1000), rssMiB(t, pid))
	}

	// Dispatch: a backlog drained by one replica to a function that returns
	// at once, with room for 200 in flight.
	d := startClusterStackWith(t, clusterStackOptions{gateways: 1, limit: 200, instant: true})
	const jobs = 20_000
	w := &workload{s: d, submitters: clients, refused: map[string]int{}}
	w.faultDone.Store(true) // no fault: the burst is jobs long
	start := time.Now()
	w.run(t.Context(), jobs)
	submitted := time.Since(start)
	buffertest.WaitFor(t, 5*time.Minute, fmt.Sprintf("all %d jobs invoked", jobs), func() bool { return d.sim.Stats().Invocations >= jobs })
	took := time.Since(start)
	fmt.Fprintf(faultOut, "sizing: dispatch, one replica: %d jobs submitted in %s and all invoked within %s of the first submit: %.0f invocations/s (submits and dispatch on the same replica); max concurrent %d; RSS %d MiB\n",
		jobs, submitted.Round(time.Millisecond), took.Round(time.Millisecond), float64(jobs)/took.Seconds(), d.sim.Stats().MaxConcurrent, rssMiB(t, d.gateways[0].cmd.Process.Pid))
}

// drive runs clients goroutines per op for d and counts successes.
func drive(ctx context.Context, ops []func(context.Context) error, clients int, d time.Duration) (ok, failed int64) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n, e atomic.Int64
	var wg sync.WaitGroup
	for _, op := range ops {
		for range clients {
			wg.Go(func() {
				for ctx.Err() == nil {
					if err := op(ctx); err == nil {
						n.Add(1)
					} else if ctx.Err() == nil {
						e.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	return n.Load(), e.Load()
}

// cpuTime is the user plus system CPU time of a process.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// rssMiB is the resident memory of a process.
func rssMiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb >> 10
		}
	}
	return 0
}
