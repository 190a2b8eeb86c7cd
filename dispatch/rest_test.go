package dispatch_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
)

// jetStreamTraffic counts the JetStream API requests and key-value writes
// that reach the server, from any client.
func jetStreamTraffic(t *testing.T, s *buffertest.Server) *atomic.Int64 {
	t.Helper()
	nc := s.Connect(t)
	var n atomic.Int64
	for _, subject := range []string{"$JS.API.>", "$KV.>"} {
		if _, err := nc.Subscribe(subject, func(*nats.Msg) { n.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

// waitQuiet waits until n has not moved for quiet, and fails if that does
// not happen within 15s.
func waitQuiet(t *testing.T, n *atomic.Int64, quiet time.Duration, what string) {
	t.Helper()
	last, since := n.Load(), time.Now()
	buffertest.WaitFor(t, 15*time.Second, what, func() bool {
		if now := n.Load(); now != last {
			last, since = now, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

func TestIdleFunctionsCostNoJetStreamRequest(t *testing.T) {
	s := buffertest.Start(t, "")
	q, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var started atomic.Int64
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		w.Write([]byte("ok")) //nolint:errcheck // the test reads the job's state
	}))
	defer fn.Close()

	// Twenty functions; one of them gets work.
	var fns []dispatch.Function
	for i := range 20 {
		fns = append(fns, dispatch.Function{Name: fmt.Sprintf("f%d", i), Invoker: &target.HTTP{URL: fn.URL}, Concurrency: 4, Timeout: 5 * time.Second})
	}
	const paceEvery = 20 * time.Millisecond
	d, err := dispatch.New(dispatch.Config{Source: q, Functions: fns, PaceEvery: paceEvery, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	traffic := jetStreamTraffic(t, s)
	for _, id := range submit(t, q, "f3", 5) {
		if job := waitJob(t, q, id, 10*time.Second); job.State != sluicev1.Job_SUCCEEDED {
			t.Fatalf("job %s = %v, want SUCCEEDED", id, job.State)
		}
	}
	// Paced every 20ms, twenty functions would make a thousand requests a
	// second; at rest they make none.
	waitQuiet(t, traffic, 50*paceEvery, "no JetStream request for 1s once every function is idle")

	// A job wakes its function.
	before := started.Load()
	ids := submit(t, q, "f7", 1)
	if job := waitJob(t, q, ids[0], 10*time.Second); job.State != sluicev1.Job_SUCCEEDED {
		t.Fatalf("job %s into a resting function = %v, want SUCCEEDED", ids[0], job.State)
	}
	if got := started.Load() - before; got != 1 {
		t.Errorf("the function was called %d times for one job, want 1", got)
	}
	waitQuiet(t, traffic, 50*paceEvery, "no JetStream request for 1s once the woken function is idle again")
}
