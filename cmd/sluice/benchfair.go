package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// runBenchFairness runs a fair function behind gateway processes against a
// simulated platform (fnsim): tenant A stores a backlog, then tenant B a
// few jobs, and then A a few high-priority ones; it reports how much of A's
// backlog had drained when B's jobs had all finished, and when A's
// high-priority jobs had all started.
func runBenchFairness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench fairness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		backlog, few, high, concurrency, gateways, submitters int
		handler                                               time.Duration
	)
	fs.IntVar(&backlog, "backlog", 5000, "tenant A's backlog")
	fs.IntVar(&few, "few", 50, "tenant B's jobs, submitted after A's")
	fs.IntVar(&high, "high", 20, "tenant A's high-priority jobs, submitted after B's")
	fs.IntVar(&concurrency, "concurrency", 20, "the function's concurrency")
	fs.IntVar(&gateways, "gateways", 2, "gateway processes sharing one NATS")
	fs.IntVar(&submitters, "submitters", 32, "concurrent submitting clients")
	fs.DurationVar(&handler, "duration", 100*time.Millisecond, "handler run time per invocation")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if backlog < 2 || few < 1 || high < 1 || concurrency < 2 || gateways < 1 || submitters < 1 {
		return errors.New("bench fairness: counts must be positive")
	}
	dir, removeDir, err := benchScratch()
	if err != nil {
		return err
	}
	defer removeDir()
	ctx, cancel := context.WithCancel(ctx)
	var children sync.WaitGroup
	defer children.Wait()
	defer cancel()

	// The platform, in this process: it tells the jobs apart by their
	// payloads, which name their group ("a", "b" or "high").
	sim := fnsim.New(fnsim.Config{Duration: handler})
	var mu sync.Mutex
	started, done := map[string]int{}, map[string]int{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		group := string(body)
		mu.Lock()
		started[group]++
		mu.Unlock()
		sim.ServeHTTP(w, r)
		mu.Lock()
		done[group]++
		mu.Unlock()
	})
	counts := func(group string) (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return started[group], done[group]
	}
	ln, stopServing, err := serveLoopback(mux)
	if err != nil {
		return err
	}
	defer stopServing()

	nats, err := buffer.StartEmbedded(buffer.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats"), Listen: true})
	if err != nil {
		return err
	}
	defer func() {
		cancel()
		children.Wait()
		nats.Shutdown()
	}()
	keyA, keyB := "bench-key-tenant-a-0123456789", "bench-key-tenant-b-0123456789"
	config := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `functions:
  - name: shared
    url: http://%s/
    concurrency: %d
    timeout: 30s
    fairness: true
tenants:
  - name: a
    api_keys: [%q]
  - name: b
    api_keys: [%q]
`, ln.Addr(), concurrency, gateway.HashKey(keyA), gateway.HashKey(keyB)), 0o600); err != nil {
		return err
	}
	grpcAddrs, err := startReplicas(ctx, &children, stderr, dir, config, nats.ClientURL(), gateways)
	if err != nil {
		return err
	}
	var clients []sluicev1.JobServiceClient
	for _, addr := range grpcAddrs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients = append(clients, sluicev1.NewJobServiceClient(conn))
	}
	submit := func(group, key string, n int, priority sluicev1.Priority) error {
		var next atomic.Int64
		g, gctx := errgroup.WithContext(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key))
		for range submitters {
			g.Go(func() error {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					_, err := clients[i%len(clients)].SubmitJob(gctx, &sluicev1.SubmitJobRequest{
						Function: "shared", Priority: priority,
						Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte(group)},
					})
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		return g.Wait()
	}
	fmt.Fprintf(stdout, "fair function, concurrency %d, handler %s, %d gateway process(es); tenant A: backlog of %d, then tenant B: %d jobs, then A: %d high-priority jobs\n\n",
		concurrency, handler, gateways, backlog, few, high)

	start := time.Now()
	if err := submit("a", keyA, backlog, sluicev1.Priority_NORMAL); err != nil {
		return fmt.Errorf("submit A: %w", err)
	}
	_, aDone0 := counts("a")
	fmt.Fprintf(stdout, "A's %d jobs stored in %s; %d finished meanwhile: backlog %d\n", backlog, time.Since(start).Round(time.Millisecond), aDone0, backlog-aDone0)
	bAt := time.Now()
	if err := submit("b", keyB, few, sluicev1.Priority_NORMAL); err != nil {
		return fmt.Errorf("submit B: %w", err)
	}
	var bDoneAt time.Duration
	var aDoneAtB int
	for {
		if _, d := counts("b"); d >= few {
			bDoneAt = time.Since(bAt)
			_, aDoneAtB = counts("a")
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	drained := aDoneAtB - aDone0
	fmt.Fprintf(stdout, "B's %d jobs all finished %s after B submitted; A drained %d of its backlog of %d meanwhile (%.1f%%)\n",
		few, bDoneAt.Round(time.Millisecond), drained, backlog-aDone0, 100*float64(drained)/float64(backlog-aDone0))

	aStartedH, _ := counts("a")
	hAt := time.Now()
	if err := submit("high", keyA, high, sluicev1.Priority_HIGH); err != nil {
		return fmt.Errorf("submit high: %w", err)
	}
	for {
		if s, _ := counts("high"); s >= high {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	aStartedAfter, _ := counts("a")
	fmt.Fprintf(stdout, "A's %d high-priority jobs all started %s after submit; %d of A's normal jobs started meanwhile, %d still waiting\n",
		high, time.Since(hAt).Round(time.Millisecond), aStartedAfter-aStartedH, backlog-aStartedAfter)
	st := sim.Stats()
	fmt.Fprintf(stdout, "fnsim: %d invocations, max concurrent %d (limit %d)\n", st.Invocations, st.MaxConcurrent, concurrency)
	var errs []error
	if drained >= (backlog-aDone0)/2 {
		errs = append(errs, fmt.Errorf("tenant A drained %d of %d before B finished: not less than half", drained, backlog-aDone0))
	}
	if backlog-aStartedAfter <= 0 {
		errs = append(errs, errors.New("tenant A's backlog drained before its high-priority jobs started"))
	}
	if st.MaxConcurrent > concurrency {
		errs = append(errs, fmt.Errorf("fnsim saw %d at once, over %d", st.MaxConcurrent, concurrency))
	}
	return errors.Join(errs...)
}
