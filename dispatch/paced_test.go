package dispatch_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/dispatch/target"
)

// runBurst submits n jobs, dispatches them with each fn (one dispatcher
// per entry, as separate gateway processes would), and waits for all.
func runBurst(t *testing.T, n int, fns ...dispatch.Function) (*buffer.Queue, []*sluicev1.Job) {
	t.Helper()
	q := buffertest.Queue(t, buffer.Config{})
	ids := submit(t, q, fns[0].Name, n)
	for _, fn := range fns {
		startDispatcher(t, q, fn, time.Second)
	}
	jobs := make([]*sluicev1.Job, len(ids))
	for i, id := range ids {
		jobs[i] = waitJob(t, q, id, time.Minute)
	}
	return q, jobs
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
	q, jobs := runBurst(t, 300, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 10, Timeout: 5 * time.Second,
		Pacing: pacing.Policy{Initial: 2, PerMinute: 600},
	})
	st := sim.Stats()
	if ok, _ := countStates(jobs); ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded", ok, len(jobs))
	}
	if st.Throttled != 0 {
		t.Errorf("platform throttled %d requests; matched pacing should cause none", st.Throttled)
	}
	// The counts are shared every PaceEvery.
	buffertest.WaitForNoError(t, 5*time.Second, fmt.Sprintf("shared counts of the platform's %d cold starts in %d invocations", st.ColdStarts, st.Invocations), func() error {
		p, err := q.Pacing(t.Context(), "f")
		if err != nil {
			t.Fatal(err)
		}
		if p.ColdStarts != int64(st.ColdStarts) || p.WarmStarts != int64(st.Invocations-st.ColdStarts) {
			return fmt.Errorf("%d cold, %d warm", p.ColdStarts, p.WarmStarts)
		}
		return nil
	})
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
	_, jobs := runBurst(t, 600, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 20, Timeout: 5 * time.Second,
		Pacing: pacing.Policy{Initial: 4, PerMinute: 600, Adaptive: true},
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
	for _, j := range jobs {
		var inHistory int32
		for _, a := range j.History {
			if a.Outcome == sluicev1.Attempt_THROTTLED {
				inHistory++
			}
		}
		if inHistory != j.Throttles || j.History[len(j.History)-1].Outcome != sluicev1.Attempt_SUCCEEDED {
			t.Fatalf("job %s: %d throttles, history %v", j.Id, j.Throttles, j.History)
		}
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
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 5, Timeout: 5 * time.Second,
		Pacing: pacing.Policy{Initial: 2, PerMinute: 1200},
	}
	_, jobs := runBurst(t, 300, fn, fn, fn)
	if ok, _ := countStates(jobs); ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded", ok, len(jobs))
	}
	if st := sim.Stats(); st.MaxConcurrent > 5 {
		t.Errorf("three dispatchers put %d invocations in flight at once; the limit is 5", st.MaxConcurrent)
	}
}

func TestKeepWarmHoldsInstancesWhileIdle(t *testing.T) {
	sim := fnsim.New(fnsim.Config{Concurrency: 10, IdleReap: time.Second})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	fn := dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 10, Timeout: time.Second,
		KeepWarm: dispatch.KeepWarm{Instances: 3, Every: 100 * time.Millisecond},
	}
	// Two processes: each round is sent by one of them.
	startDispatcher(t, q, fn, time.Second)
	startDispatcher(t, q, fn, time.Second)
	// Two seconds idle: time for reaps, which the pings must prevent, and
	// for pings by both processes at once, which must not come. The
	// platform reaps an environment idle for a second: ten rounds' worth,
	// so that a loaded machine's late round is no reap.
	time.Sleep(2 * time.Second)
	st := sim.Stats()
	if st.Environments != 3 || st.Invocations != 0 {
		t.Errorf("after two seconds idle: %d environments, %d invocations; want 3 held warm, none run", st.Environments, st.Invocations)
	}
	if rounds := st.Warmups / 3; rounds < 3 || rounds > 21 {
		t.Errorf("%d pings in two seconds at one round of 3 per 100ms; want 3 to 21 rounds (one per 100ms at most), not one per process", st.Warmups)
	}
	if st.ColdStarts != 3 {
		t.Errorf("%d cold starts; want the 3 environments started once and kept", st.ColdStarts)
	}
}

func TestRateLimitSpacesStarts(t *testing.T) {
	var mu sync.Mutex
	var starts []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
	}))
	defer srv.Close()
	runBurst(t, 8, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 8, Timeout: 5 * time.Second,
		RatePerSecond: 20, RateBurst: 1,
	})
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	// 20 per second with no burst: 7 gaps of 50ms; allow the limiter's
	// own rounding.
	if span := starts[len(starts)-1].Sub(starts[0]); span < 300*time.Millisecond {
		t.Errorf("8 starts at 20/s took %v; want at least 300ms", span)
	}
}

// A configured rate holds across gateway processes together: three
// dispatchers of one function share it, they do not each take it whole.
func TestRateLimitIsGlobal(t *testing.T) {
	sim := fnsim.New(fnsim.Config{Duration: 10 * time.Millisecond})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	fn := dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 20, Timeout: 5 * time.Second,
		RatePerSecond: 30, RateBurst: 3,
	}
	start := time.Now()
	_, jobs := runBurst(t, 150, fn, fn, fn)
	took := time.Since(start)
	if ok, _ := countStates(jobs); ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded", ok, len(jobs))
	}
	// 150 starts at 30/s take 5s; at 30/s each, under 2s.
	if took < 4*time.Second {
		t.Errorf("150 jobs at 30/s across three dispatchers took %v; want about 5s", took)
	}
	// A process counts the others from its next step after they announce
	// themselves (100ms), so the first second may see a few more, and
	// each process's share of the burst.
	if st := sim.Stats(); st.MaxStartsPerSecond > 30+3+12 {
		t.Errorf("three dispatchers started %d invocations in one second; the rate is 30/s across them", st.MaxStartsPerSecond)
	}
}
