package dispatch_test

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/dispatch"
)

// otherPlatform is a platform unlike fnsim, so that pacing is not fitted to
// one simulator: its limit counts an environment busy for a while after
// it answered (as Lambda tears down a request), its 429s carry no
// Retry-After and take a few milliseconds of their own, as a gateway in
// front of a function does, and its run times are skewed.
type otherPlatform struct {
	mu                sync.Mutex
	limit             int
	busy, max         int
	taken, throttled  int
	releaseAfter      time.Duration
	minRun, extraRun  time.Duration
	throttleLatencyTo time.Duration
}

func (o *otherPlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	if o.busy >= o.limit {
		o.throttled++
		o.mu.Unlock()
		time.Sleep(rand.N(o.throttleLatencyTo))
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	o.busy++
	o.taken++
	o.max = max(o.max, o.busy)
	o.mu.Unlock()
	// Skewed: mostly near minRun, now and then much longer.
	run := o.minRun + time.Duration(rand.ExpFloat64()*float64(o.extraRun))
	time.Sleep(run)
	w.WriteHeader(http.StatusOK)
	go func() {
		time.Sleep(o.releaseAfter)
		o.mu.Lock()
		o.busy--
		o.mu.Unlock()
	}()
}

func (o *otherPlatform) setLimit(n int) {
	o.mu.Lock()
	o.limit = n
	o.mu.Unlock()
}

func (o *otherPlatform) stats() (taken, throttled, maxBusy int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.taken, o.throttled, o.max
}

// The simplest config (concurrency only) meets a platform whose real limit
// is less than half of it, and that limit then falls and comes back: the
// limit is found from the throttles and few invocations are refused.
func TestPacingOnAnotherPlatform(t *testing.T) {
	runOther(t, &otherPlatform{
		limit: 12, releaseAfter: 5 * time.Millisecond,
		minRun: 30 * time.Millisecond, extraRun: 20 * time.Millisecond, throttleLatencyTo: 5 * time.Millisecond,
	})
}

func runOther(t *testing.T, plat *otherPlatform) {
	srv := httptest.NewServer(plat)
	defer srv.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-time.After(1500 * time.Millisecond):
			plat.setLimit(6)
		case <-stop:
			return
		}
		select {
		case <-time.After(1500 * time.Millisecond):
			plat.setLimit(12)
		case <-stop:
		}
	}()
	start := time.Now()
	_, jobs := runBurst(t, 800, dispatch.Function{
		Name: "f", Invoker: &dispatch.HTTPInvoker{URL: srv.URL}, Concurrency: 30, Timeout: 5 * time.Second,
		Pacing: dispatch.Pacing{Adaptive: true},
	})
	took := time.Since(start)
	if ok, _ := countStates(jobs); ok != len(jobs) {
		t.Errorf("%d of %d jobs succeeded", ok, len(jobs))
	}
	taken, throttled, maxBusy := plat.stats()
	share := float64(throttled) / float64(taken+throttled)
	t.Logf("800 jobs in %v: %d invocations taken, %d throttled (%.1f%%), at most %d busy", took, taken, throttled, 100*share, maxBusy)
	// 800 jobs of ~55ms (with the release) at 12, then 6 for 1.5s: about
	// 4.4s at best; measured here about 7s (a slot this platform holds
	// after answering is one Sluice cannot see). The controller before
	// this one took 26s and had 15% of its invocations throttled.
	if share > 0.05 {
		t.Errorf("%.1f%% of invocations throttled, want at most 5%%", 100*share)
	}
	if took > 12*time.Second {
		t.Errorf("800 jobs took %v; the ideal is about 4.4s", took)
	}
}
