package dispatch_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
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
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
			n.Add(1)
			if os.Getenv("DEBUGJS") != "" {
				fmt.Println(time.Now().Format("15:04:05.000"), m.Subject)
			}
		}); err != nil {
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

// runDispatch runs a dispatcher with cfg until the test ends.
func runDispatch(t *testing.T, cfg dispatch.Config) {
	t.Helper()
	d, err := dispatch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// succeeds waits for the jobs to succeed.
func succeeds(t *testing.T, q *buffer.Queue, ids []string, what string) {
	t.Helper()
	for _, id := range ids {
		if job := waitJob(t, q, id, 10*time.Second); job.State != sluicev1.Job_SUCCEEDED {
			t.Fatalf("%s: job %s = %v, want SUCCEEDED", what, id, job.State)
		}
	}
}

func TestIdleFunctionsCostNoJetStreamRequest(t *testing.T) {
	s := buffertest.Start(t, "")
	q, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fn := newCountingFunction(0)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	// Twenty functions, two of them sharing a pool, and a fair one; a few
	// of them get work.
	var fns []dispatch.Function
	for i := range 20 {
		fns = append(fns, dispatch.Function{Name: fmt.Sprintf("f%d", i), Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 4, Timeout: 5 * time.Second})
	}
	fns[10].Pool, fns[11].Pool = "shared", "shared"
	fns[12].Lanes = []buffer.Lane{{Tenant: "acme"}, {Tenant: "bolt"}, {Tenant: "bolt", Priority: sluicev1.Priority_HIGH}}
	const paceEvery = 20 * time.Millisecond
	runDispatch(t, dispatch.Config{
		Source: q, Functions: fns, Pools: []dispatch.Pool{{Name: "shared", Concurrency: 4}},
		PaceEvery: paceEvery, DrainTimeout: time.Second,
	})

	traffic := jetStreamTraffic(t, s)
	succeeds(t, q, submit(t, q, "f3", 5), "a plain function")
	succeeds(t, q, submit(t, q, "f10", 5), "a pooled function")
	succeeds(t, q, submitGroup(t, q, "f12", "acme", 5, buffer.WithTenant("acme")), "a fair function")
	// Paced every 20ms, these functions and their pool would make well
	// over a thousand requests a second; at rest they make none.
	waitQuiet(t, traffic, 50*paceEvery, "no JetStream request for 1s once every function is idle")

	// A job wakes its function, and its pool's leader, which gives a
	// pooled function's consumers their caps (0 while idle).
	for _, tc := range []struct {
		what, function string
		opts           []buffer.SubmitOption
	}{
		{"a plain function", "f7", nil},
		{"a pooled function", "f11", nil},
		{"a fair function's lane", "f12", []buffer.SubmitOption{buffer.WithTenant("bolt"), buffer.WithPriority(sluicev1.Priority_HIGH)}},
	} {
		before := fn.jobs.Load()
		succeeds(t, q, submitGroup(t, q, tc.function, tc.what, 1, tc.opts...), "a job into "+tc.what+" at rest")
		if got := fn.jobs.Load() - before; got != 1 {
			t.Errorf("%s was called %d times for one job, want 1", tc.what, got)
		}
		waitQuiet(t, traffic, 50*paceEvery, "no JetStream request for 1s once "+tc.what+" is idle again")
	}
}

// Jobs submitted one at a time, spaced around the moment an idle function
// goes to rest, each into whichever of two dispatching processes, are all
// run, once each: none is stored in the instant a function begins to rest
// and left waiting.
func TestJobsStoredAsFunctionsGoToRestAreNotMissed(t *testing.T) {
	s := buffertest.Start(t, "")
	fn := newCountingFunction(0)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	const paceEvery = 2 * time.Millisecond // rests after 20ms without work
	var q *buffer.Queue
	for range 2 { // two gateway processes
		pq, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{})
		if err != nil {
			t.Fatal(err)
		}
		q = pq
		runDispatch(t, dispatch.Config{
			Source: pq, PaceEvery: paceEvery, DrainTimeout: time.Second,
			Functions: []dispatch.Function{
				{Name: "plain", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: 5 * time.Second},
				{Name: "pooled", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: 5 * time.Second, Pool: "p"},
			},
			Pools: []dispatch.Pool{{Name: "p", Concurrency: 2}},
		})
	}
	for i := range 40 {
		for _, function := range []string{"plain", "pooled"} {
			ids := submit(t, q, function, 1)
			succeeds(t, q, ids, fmt.Sprintf("job %d of %s", i, function))
		}
		time.Sleep(time.Duration(rand.N(150)) * time.Millisecond) // a client's pause: around the rest's onset
	}
	if got := fn.jobs.Load(); got != 80 {
		t.Errorf("the function was called %d times for 80 jobs, want 80", got)
	}
}
