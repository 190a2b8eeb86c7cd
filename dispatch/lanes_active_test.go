package dispatch_test

import (
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
)

// manyLanes are the lanes of n tenants, t000 and on, each at every
// priority.
func manyLanes(n int) []buffer.Lane {
	var lanes []buffer.Lane
	for i := range n {
		for _, p := range []sluicev1.Priority{sluicev1.Priority_HIGH, sluicev1.Priority_NORMAL, sluicev1.Priority_LOW} {
			lanes = append(lanes, buffer.Lane{Tenant: tenantName(i), Priority: p})
		}
	}
	return lanes
}

func tenantName(i int) string { return fmt.Sprintf("t%03d", i) }

// laneConsumers counts the consumers of function on the stream: its own
// and its lanes'.
func laneConsumers(t *testing.T, js jetstream.JetStream, function string) int {
	t.Helper()
	stream, err := js.Stream(t.Context(), buffer.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	names := stream.ConsumerNames(t.Context())
	for name := range names.Name() {
		if name == buffer.ConsumerName(function) || strings.HasPrefix(name, buffer.ConsumerName(function)+"~") {
			n++
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// A fair function with 300 tenants (900 lanes) holds consumers only for
// the lanes that have work, in two processes at once: jobs in three
// tenants' lanes make three lane consumers and the function's own, not
// 900; once they are done and the idle life has passed the server has
// none left; and a job stored later in a lane that retired runs.
func TestFairLanesHoldConsumersOnlyWhileTheyHaveWork(t *testing.T) {
	s := buffertest.Start(t, "")
	fn := newCountingFunction(20 * time.Millisecond)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	var q *buffer.Queue
	for range 2 { // two gateway processes
		pq, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{})
		if err != nil {
			t.Fatal(err)
		}
		q = pq
		runDispatch(t, dispatch.Config{
			Source: pq, PaceEvery: 10 * time.Millisecond, DrainTimeout: time.Second, ConsumerIdleLife: 2 * time.Second,
			Functions: []dispatch.Function{{
				Name: "fair", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 4, Timeout: 5 * time.Second, Lanes: manyLanes(300),
			}},
		})
	}
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	// The most consumers seen at once, read every 20ms meanwhile.
	var most atomic.Int64
	stop := make(chan struct{})
	var watching sync.WaitGroup
	watching.Go(func() {
		for {
			if n := int64(laneConsumers(t, js, "fair")); n > most.Load() {
				most.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	var ids []string
	for i, tenant := range []int{1, 150, 299} {
		p := []sluicev1.Priority{sluicev1.Priority_HIGH, sluicev1.Priority_NORMAL, sluicev1.Priority_LOW}[i]
		ids = append(ids, submitGroup(t, q, "fair", tenantName(tenant), 10, buffer.WithTenant(tenantName(tenant)), buffer.WithPriority(p))...)
	}
	succeeds(t, q, ids, "jobs in three tenants' lanes")
	buffertest.WaitFor(t, 20*time.Second, "the server removes every consumer of the function once idle", func() bool {
		return laneConsumers(t, js, "fair") == 0
	})
	close(stop)
	watching.Wait()
	t.Logf("at most %d consumers of the function at once", most.Load())
	if n := most.Load(); n < 1 || n > 4 {
		t.Errorf("at most %d consumers of the function at once; want 1 to 4 (three busy lanes and the function's own), of 901", n)
	}
	if got := fn.most.Load(); got > 4 {
		t.Errorf("%d invocations at once, over the function's concurrency of 4", got)
	}
	before := fn.jobs.Load()
	succeeds(t, q, submitGroup(t, q, "fair", "late", 1, buffer.WithTenant(tenantName(150)), buffer.WithPriority(sluicev1.Priority_NORMAL)), "a job in a retired lane whose consumer is gone")
	if got := fn.jobs.Load() - before; got != 1 {
		t.Errorf("the function was called %d times for one job, want 1", got)
	}
}

// Jobs stored one at a time in one lane, spaced around the moment it goes
// quiet and retires, into whichever of two dispatching processes, while
// another lane keeps the function busy (so the lane retires on its own,
// not as the function rests), are all run, once each: none is stored in
// the instant a lane retires and left waiting.
func TestJobsStoredAsLanesRetireAreNotMissed(t *testing.T) {
	s := buffertest.Start(t, "")
	fn := newCountingFunction(0)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	const paceEvery = 3 * time.Millisecond // a lane retires after 30ms without work
	var qs []*buffer.Queue
	for range 2 { // two gateway processes
		pq, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{})
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, pq)
		runDispatch(t, dispatch.Config{
			Source: pq, PaceEvery: paceEvery, DrainTimeout: time.Second, ConsumerIdleLife: 2 * time.Second,
			Functions: []dispatch.Function{{
				Name: "fair", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 4, Timeout: 5 * time.Second, Lanes: manyLanes(20),
			}},
		})
	}
	// A job every 20ms in another lane: the function never rests.
	stop := make(chan struct{})
	var busy sync.WaitGroup
	var background atomic.Int64
	busy.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := qs[0].Submit(t.Context(), "fair", []byte("busy"), "text/plain", buffer.WithTenant(tenantName(19))); err != nil {
				t.Error(err)
				return
			}
			background.Add(1)
		}
	})
	const n = 60
	for i := range n {
		q := qs[rand.N(len(qs))]
		tenant := tenantName(i % 3)
		ids := submitGroup(t, q, "fair", "probe", 1, buffer.WithTenant(tenant), buffer.WithPriority(sluicev1.Priority_LOW))
		succeeds(t, q, ids, fmt.Sprintf("job %d, in %s's low lane", i, tenant))
		time.Sleep(time.Duration(rand.N(60)) * time.Millisecond) // a client's pause: around the lane's retirement, 30ms after its last job
	}
	close(stop)
	busy.Wait()
	want := n + background.Load()
	buffertest.WaitFor(t, 10*time.Second, "every background job run", func() bool { return fn.jobs.Load() >= want })
	if got := fn.jobs.Load(); got != want {
		t.Errorf("the function was called %d times for %d jobs, want %d", got, want, want)
	}
	if got := fn.most.Load(); got > 4 {
		t.Errorf("%d invocations at once, over the function's concurrency of 4", got)
	}
}

// What a fair function's round costs follows its busy lanes, not its
// configured ones: with one lane busy out of 900, a round (the pace loop's
// and the pool leader's) makes a handful of JetStream requests, not one or
// two per lane.
func TestARoundOfAFairFunctionCostsByItsBusyLanes(t *testing.T) {
	s := buffertest.Start(t, "")
	q, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fn := newCountingFunction(100 * time.Millisecond)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	const paceEvery = 20 * time.Millisecond
	runDispatch(t, dispatch.Config{
		Source: q, PaceEvery: paceEvery, DrainTimeout: time.Second,
		Functions: []dispatch.Function{{
			Name: "fair", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: 5 * time.Second, Lanes: manyLanes(300),
		}},
	})
	// JetStream API requests only: a job's state writes, which follow the
	// jobs run and not the lanes, are key-value puts.
	nc := s.Connect(t)
	var requests atomic.Int64
	if _, err := nc.Subscribe("$JS.API.>", func(*nats.Msg) { requests.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Start-up reads every lane once; then the function rests.
	waitQuiet(t, &requests, 25*paceEvery, "no JetStream request once the idle function rests")
	// Two jobs at a time, a tenth of a second each: 40 keep one lane busy
	// for two seconds.
	submitGroup(t, q, "fair", "busy", 40, buffer.WithTenant(tenantName(123)), buffer.WithPriority(sluicev1.Priority_LOW))
	buffertest.WaitFor(t, 10*time.Second, "the first jobs started", func() bool { return fn.jobs.Load() >= 2 })
	before, jobsBefore, start := requests.Load(), fn.jobs.Load(), time.Now()
	time.Sleep(time.Second) // the span measured, not a wait for an event
	made, ran, took := requests.Load()-before, fn.jobs.Load()-jobsBefore, time.Since(start)
	if ran >= 40-jobsBefore {
		t.Fatalf("the backlog ran out within the span measured (%d jobs)", ran)
	}
	rounds := float64(took) / float64(paceEvery)
	perRound := float64(made) / rounds // the jobs' own requests included
	t.Logf("%d JetStream API requests in %v (%.0f rounds, %d jobs run): %.1f a round", made, took.Round(time.Millisecond), rounds, ran, perRound)
	if perRound > 20 {
		t.Errorf("%.1f JetStream API requests a round with one lane busy of 900; want a handful, whatever the lanes configured", perRound)
	}
}
