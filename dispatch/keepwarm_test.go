package dispatch_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
)

// countingFunction is an HTTP function that holds every request, job or
// keep-warm ping, for took, and keeps the most it served at once.
type countingFunction struct {
	took           time.Duration
	inFlight, most atomic.Int64
	pings, jobs    atomic.Int64
	firstPing      chan struct{}
	firstPingSeen  atomic.Bool
}

func newCountingFunction(took time.Duration) *countingFunction {
	return &countingFunction{took: took, firstPing: make(chan struct{})}
}

func (f *countingFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.most.Load(); n > m && !f.most.CompareAndSwap(m, n); m = f.most.Load() {
	}
	if r.Header.Get(target.HeaderWarmup) == "1" {
		f.pings.Add(1)
		if f.firstPingSeen.CompareAndSwap(false, true) {
			close(f.firstPing)
		}
	} else {
		f.jobs.Add(1)
	}
	select {
	case <-time.After(f.took):
	case <-r.Context().Done():
	}
}

// Keep-warm pings take their places in the function's window: jobs that
// arrive while a round is in flight wait for them, and a round finds no
// room while jobs fill the window. Jobs and pings together never exceed
// the concurrency.
func TestKeepWarmPingsFitInTheWindow(t *testing.T) {
	const concurrency = 3
	fn := newCountingFunction(300 * time.Millisecond)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: concurrency, Timeout: 5 * time.Second,
		KeepWarm: dispatch.KeepWarm{Instances: concurrency, Every: 50 * time.Millisecond},
	}, time.Second)
	select {
	case <-fn.firstPing:
	case <-time.After(5 * time.Second):
		t.Fatal("no keep-warm ping within 5s")
	}
	// A burst lands while the round is in flight, and keeps the window
	// full for a while, through more rounds' ticks.
	ids := submit(t, q, "f", 4*concurrency)
	for _, id := range ids {
		if job := waitJob(t, q, id, 20*time.Second); job.State != sluicev1.Job_SUCCEEDED {
			t.Errorf("job %s ended %v", id, job.State)
		}
	}
	t.Logf("%d pings, %d jobs; most at once %d", fn.pings.Load(), fn.jobs.Load(), fn.most.Load())
	if most := fn.most.Load(); most > concurrency {
		t.Errorf("the function served %d requests at once (jobs and keep-warm pings); its concurrency is %d", most, concurrency)
	}
}

// In a pool, an idle function's pings come out of its own share: they do
// not take the slots the pool gave a busy neighbour.
func TestKeepWarmPingsFitInThePool(t *testing.T) {
	const pool = 4
	fn := newCountingFunction(200 * time.Millisecond) // both functions, one platform
	srv := httptest.NewServer(fn)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	busy := submitMany(t, q, "busy", 40)
	startPooled(t, q, []dispatch.Function{
		{Name: "busy", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: pool, Timeout: 5 * time.Second, Pool: "account"},
		{Name: "idle", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: pool, Timeout: 5 * time.Second, Pool: "account",
			KeepWarm: dispatch.KeepWarm{Instances: pool, Every: 50 * time.Millisecond}},
	}, []dispatch.Pool{{Name: "account", Concurrency: pool}})
	for _, id := range busy {
		if job := waitJob(t, q, id, 30*time.Second); job.State != sluicev1.Job_SUCCEEDED {
			t.Errorf("job %s ended %v", id, job.State)
		}
	}
	t.Logf("%d pings, %d jobs; most at once %d", fn.pings.Load(), fn.jobs.Load(), fn.most.Load())
	if fn.pings.Load() == 0 {
		t.Error("no keep-warm ping while the idle function's share was free")
	}
	if most := fn.most.Load(); most > pool {
		t.Errorf("the pool's functions had %d requests at once (jobs and keep-warm pings); the pool's concurrency is %d", most, pool)
	}
}
