package target

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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
	inv := &HTTP{URL: srv.URL}
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

// A function that redirects elsewhere must not lead the invoker to send
// the configured headers (an API key, say) to another origin: the redirect
// is not followed and the attempt fails, not to be retried. A redirect
// within the configured origin is followed, headers and all.
func TestHTTPInvokerFollowsRedirectsOnlyWithinItsOrigin(t *testing.T) {
	var elsewhere atomic.Int32
	var leaked atomic.Value // the key the other origin saw
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		leaked.Store(r.Header.Get("X-Api-Key"))
	}))
	defer other.Close()
	var keyAtNew atomic.Value
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/stolen", http.StatusTemporaryRedirect)
		case "/old":
			http.Redirect(w, r, "/new", http.StatusPermanentRedirect)
		case "/new":
			keyAtNew.Store(r.Header.Get("X-Api-Key"))
			w.Write([]byte("moved")) //nolint:errcheck
		}
	}))
	defer fn.Close()
	header := http.Header{"X-Api-Key": {"secret-123"}}

	inv := &HTTP{URL: fn.URL + "/away", Header: header}
	resp, err := inv.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1, Payload: []byte("x")})
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the invoker followed a redirect to another origin (%d requests there, X-Api-Key %q)", n, leaked.Load())
	}
	if err != nil {
		t.Fatalf("Invoke = %v; want the redirect as the function's answer", err)
	}
	if resp.Status != http.StatusTemporaryRedirect {
		t.Errorf("status %d, want 307, a failed attempt not retried (dispatch's TestRetryableStatus)", resp.Status)
	}
	if !strings.Contains(resp.Error, "another origin") || strings.Contains(resp.Error, other.URL) {
		t.Errorf("error %q: want it to say the redirect led to another origin, without naming it", resp.Error)
	}

	// Keep-warm pings carry the headers too.
	if _, err := inv.Invoke(t.Context(), &Invocation{Warmup: true}); err != nil || elsewhere.Load() != 0 {
		t.Errorf("keep-warm ping: %v, %d requests at the other origin; want none", err, elsewhere.Load())
	}

	inv = &HTTP{URL: fn.URL + "/old", Header: header}
	resp, err = inv.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1, Payload: []byte("x")})
	if err != nil || resp.Status != http.StatusOK || string(resp.Body) != "moved" || resp.Error != "" {
		t.Fatalf("same-origin redirect: %+v, %v; want it followed to a 200", resp, err)
	}
	if got, _ := keyAtNew.Load().(string); got != "secret-123" {
		t.Errorf("after a same-origin redirect the function got X-Api-Key %q, want the configured one", got)
	}
}

// An origin is its scheme, host and port, the port written or not.
func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"http://fn.example.com/a", "http://fn.example.com:80/b?x", true},
		{"https://fn.example.com/a", "https://FN.example.com:443/", true},
		{"http://fn.example.com/a", "https://fn.example.com/a", false},
		{"https://fn.example.com/a", "https://fn.example.com:8443/a", false},
		{"https://fn.example.com/a", "https://evil.example.com/a", false},
		{"https://fn.example.com/a", "https://api.fn.example.com/a", false},
		{"http://[::1]:8080/", "http://[::1]:8080/x", true},
	} {
		a, _ := url.Parse(c.a)
		b, _ := url.Parse(c.b)
		if got := sameOrigin(a, b); got != c.want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
