package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/clustertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// TestCrashLosesNothing kills a gateway (and its embedded JetStream) with
// SIGKILL in the middle of a burst, restarts it on the same data directory,
// and checks that every job whose submit was acknowledged reaches a
// terminal state.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	sim := fnsim.New(fnsim.Config{Duration: 50 * time.Millisecond})
	fn := httptest.NewServer(sim)
	t.Cleanup(fn.Close)
	dir := t.TempDir()
	config := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "functions:\n  - name: f\n    url: %s\n    concurrency: 20\n    timeout: 1s\n", fn.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr, grpcAddr := clustertest.StableAddr(t), clustertest.StableAddr(t) // the gateway restarts on them
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(self, "serve", "--config", config, "--data-dir", filepath.Join(dir, "data"),
			"--http-addr", httpAddr, "--grpc-addr", grpcAddr, "--log-level", "error")
		cmd.Env = append(os.Environ(), "SLUICE_TEST_AS_MAIN=1")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitHTTP(t.Context(), "http://"+httpAddr+"/v1/functions", 30*time.Second, nil); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	gw := start()
	t.Cleanup(func() { gw.Process.Kill(); gw.Wait() }) //nolint:errcheck // best effort

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := sluicev1.NewJobServiceClient(conn)

	const jobs = 2000
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	next := make(chan int, jobs)
	for i := range jobs {
		next <- i
	}
	close(next)
	for range 16 {
		wg.Go(func() {
			for range next {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := client.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Function: "f"})
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, resp.GetJob().GetId())
					mu.Unlock()
				}
			}
		})
	}
	// Kill it once the function has run a few hundred jobs.
	buffertest.WaitFor(t, time.Minute, "300 jobs run before the kill", func() bool { return sim.Stats().Invocations >= 300 })
	if err := gw.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gw.Wait() //nolint:errcheck // killed
	ranBefore := sim.Stats().Invocations
	wg.Wait()
	gw = start()

	succeeded := 0 // acked[:succeeded] did
	buffertest.WaitForNoError(t, 2*time.Minute, "every acknowledged job succeeded", func() error {
		for ; succeeded < len(acked); succeeded++ {
			id := acked[succeeded]
			resp, err := client.GetJob(t.Context(), &sluicev1.GetJobRequest{Id: id}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatalf("acknowledged job %s: %v", id, err)
			}
			if st := resp.GetJob().GetState(); st == sluicev1.Job_QUEUED || st == sluicev1.Job_RUNNING {
				return fmt.Errorf("job %s still %v, %d of %d succeeded", id, st, succeeded, len(acked))
			} else if st != sluicev1.Job_SUCCEEDED {
				t.Fatalf("acknowledged job %s ended %v", id, st)
			}
		}
		return nil
	})
	twice := 0
	for _, id := range acked {
		if sim.JobInvocations(id) > 1 {
			twice++
		}
	}
	t.Logf("%d of %d submits acknowledged; %d ran before the kill; all %d succeeded after the restart; %d ran more than once",
		len(acked), jobs, ranBefore, len(acked), twice)
}
