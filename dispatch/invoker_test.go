package dispatch

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// A function invoked at a concurrency above 256 (the pool's size before)
// reuses its connections round after round instead of opening new ones.
func TestHTTPInvokerReusesConnectionsAtHighConcurrency(t *testing.T) {
	const concurrency, rounds = 400, 3
	var opened atomic.Int32
	var arrived sync.WaitGroup
	var release atomic.Pointer[chan struct{}] // closed to answer a round
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gate := *release.Load()
		arrived.Done()
		<-gate
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	inv := &HTTPInvoker{URL: srv.URL}
	for round := range rounds {
		gate := make(chan struct{})
		release.Store(&gate)
		arrived.Add(concurrency)
		var done sync.WaitGroup
		for range concurrency {
			done.Go(func() {
				resp, err := inv.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1, Payload: []byte("x")})
				if err != nil {
					t.Error(err)
					return
				}
				if resp.Status != http.StatusOK {
					t.Errorf("status %d", resp.Status)
				}
			})
		}
		arrived.Wait() // all in flight at once: the function at its limit
		close(gate)
		done.Wait()
		t.Logf("round %d: %d connections opened so far", round+1, opened.Load())
	}
	if n := opened.Load(); n > concurrency {
		t.Errorf("%d rounds of %d concurrent invocations opened %d connections, want at most %d", rounds, concurrency, n, concurrency)
	}
}
