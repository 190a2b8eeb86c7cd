package dispatch_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// runBurst submits n jobs, dispatches them with each fn (one dispatcher
// per entry, as separate gateway processes would), and waits for all.
func runBurst(t *testing.T, n int, fns ...dispatch.Function) []*sluicev1.Job {
	t.Helper()
	q := buffertest.Queue(t, buffer.Config{})
	ids := submit(t, q, fns[0].Name, n)
	for _, fn := range fns {
		d, err := dispatch.New(dispatch.Config{
			Source: q, Functions: []dispatch.Function{fn}, FetchWait: 100 * time.Millisecond, PaceEvery: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	jobs := make([]*sluicev1.Job, len(ids))
	for i, id := range ids {
		jobs[i] = waitJob(t, q, id, time.Minute)
	}
	return jobs
}

func countStates(jobs []*sluicev1.Job) (succeeded, throttles int) {
	for _, j := range jobs {
		if j.State == sluicev1.Job_SUCCEEDED {
			succeeded++
		}
		throttles += int(j.Throttles)
	}
	return succeeded, throttles
}

// A burst meets a platform whose limits Sluice is told: it ramps with the
// platform and is never throttled.
func TestPacedBurstMatchedLimits(t *testing.T) {
	sim := fnsim.New(fnsim.Config{
		Concurrency: 10, InitialBurst: 2, ScalePerMinute: 600,
		ColdStart: 50 * time.Millisecond, Duration: 20 * time.Millisecond,
	})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	jobs := runBurst(t, 300, dispatch.Function{
		Name: "f", Invoker: &dispatch.HTTPInvoker{URL: srv.URL}, Concurrency: 10, Timeout: 5 * time.Second,
		Pacing: dispatch.Pacing{Initial: 2, PerMinute: 600},
	})
	st := sim.Stats()
	if ok, _ := countStates(jobs); ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded", ok, len(jobs))
	}
	if st.Throttled != 0 {
		t.Errorf("platform throttled %d requests; matched pacing should cause none", st.Throttled)
	}
	if st.MaxConcurrent > 10 || st.MaxConcurrent < 8 {
		t.Errorf("max concurrent %d; want the ramp to reach near the limit of 10 and never pass it", st.MaxConcurrent)
	}
	t.Logf("platform saw %+v", st)
}

// Sluice is allowed more than the platform really takes: it learns the
// real limit from the throttles, fails nothing, and is throttled rarely.
func TestPacedBurstUnknownLimit(t *testing.T) {
	sim := fnsim.New(fnsim.Config{Concurrency: 8, Duration: 20 * time.Millisecond})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	jobs := runBurst(t, 600, dispatch.Function{
		Name: "f", Invoker: &dispatch.HTTPInvoker{URL: srv.URL}, Concurrency: 20, Timeout: 5 * time.Second,
		Pacing: dispatch.Pacing{Initial: 4, PerMinute: 600, Adaptive: true},
	})
	st := sim.Stats()
	ok, throttles := countStates(jobs)
	if ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded; throttles must never fail a job", ok, len(jobs))
	}
	for _, j := range jobs {
		if j.Attempts != 1 {
			t.Fatalf("job %s has %d attempts; throttles must not count as attempts", j.Id, j.Attempts)
		}
	}
	if throttles != st.Throttled {
		t.Errorf("jobs record %d throttles, the platform %d", throttles, st.Throttled)
	}
	if limit := st.Invocations * 5 / 100; st.Throttled > limit {
		t.Errorf("platform throttled %d of %d invocations; want at most 5%%", st.Throttled, st.Invocations)
	}
	t.Logf("platform saw %+v", st)
}

// Three dispatchers, as three gateway processes, share one window.
func TestPacedWindowIsGlobal(t *testing.T) {
	sim := fnsim.New(fnsim.Config{Duration: 20 * time.Millisecond})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	fn := dispatch.Function{
		Name: "f", Invoker: &dispatch.HTTPInvoker{URL: srv.URL}, Concurrency: 5, Timeout: 5 * time.Second,
		Pacing: dispatch.Pacing{Initial: 2, PerMinute: 1200},
	}
	jobs := runBurst(t, 300, fn, fn, fn)
	if ok, _ := countStates(jobs); ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded", ok, len(jobs))
	}
	if st := sim.Stats(); st.MaxConcurrent > 5 {
		t.Errorf("three dispatchers put %d invocations in flight at once; the limit is 5", st.MaxConcurrent)
	}
}
