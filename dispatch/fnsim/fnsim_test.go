package fnsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newAt(cfg Config) (*Function, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	cfg.Now = clock.now
	return New(cfg), clock
}

// acquireN takes n environments and reports how many it got and how many
// of those were cold.
func acquireN(f *Function, n int) (got, cold int) {
	for range n {
		c, ok := f.acquire(false)
		if ok {
			got++
			if c {
				cold++
			}
		}
	}
	return got, cold
}

func TestBurstThenRamp(t *testing.T) {
	f, clock := newAt(Config{Concurrency: 50, InitialBurst: 10, ScalePerMinute: 600})
	if got, cold := acquireN(f, 15); got != 10 || cold != 10 {
		t.Fatalf("burst of 15: got %d (%d cold), want the initial 10, all cold", got, cold)
	}
	clock.advance(100 * time.Millisecond) // 600/min = one more every 100ms
	if got, _ := acquireN(f, 5); got != 1 {
		t.Errorf("after 100ms of scaling got %d more, want 1", got)
	}
	clock.advance(time.Second)
	if got, _ := acquireN(f, 20); got != 10 {
		t.Errorf("after 1.1s of scaling got %d more, want 10 (21 in all)", got)
	}
	clock.advance(time.Minute)
	if got, _ := acquireN(f, 100); got != 29 {
		t.Errorf("after a minute got %d more, want 29: the limit of 50", got)
	}
	if st := f.Stats(); st.Throttled != 5+4+10+71 || st.MaxConcurrent != 50 || st.ColdStarts != 50 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWarmReuseAndIdleReap(t *testing.T) {
	f, clock := newAt(Config{Concurrency: 5, IdleReap: 10 * time.Minute})
	acquireN(f, 3)
	for range 3 {
		f.release()
	}
	clock.advance(time.Minute)
	if got, cold := acquireN(f, 3); got != 3 || cold != 0 {
		t.Errorf("after a minute idle: %d environments, %d cold; want 3 warm", got, cold)
	}
	for range 3 {
		f.release()
	}
	clock.advance(10 * time.Minute)
	if got, cold := acquireN(f, 2); got != 2 || cold != 2 {
		t.Errorf("after the reap time: %d environments, %d cold; want 2 cold", got, cold)
	}
	if st := f.Stats(); st.Environments != 2 || st.ColdStarts != 5 {
		t.Errorf("stats = %+v, want 2 environments and 5 cold starts", st)
	}
}

func TestRampStartsAgainAfterIdle(t *testing.T) {
	f, clock := newAt(Config{Concurrency: 50, InitialBurst: 10, ScalePerMinute: 600, IdleReap: time.Minute})
	acquireN(f, 10)
	clock.advance(time.Second)
	acquireN(f, 10) // 20 environments
	for range 20 {
		f.release()
	}
	clock.advance(2 * time.Minute) // all reaped
	if got, cold := acquireN(f, 15); got != 10 || cold != 10 {
		t.Errorf("a later burst got %d (%d cold), want the initial 10 again, cold", got, cold)
	}
}

func TestHTTP(t *testing.T) {
	f := New(Config{Concurrency: 1, Duration: 200 * time.Millisecond, RetryAfter: 2 * time.Second})
	srv := httptest.NewServer(f)
	defer srv.Close()

	done := make(chan *http.Response)
	go func() {
		resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	for f.Stats().InFlight == 0 {
		time.Sleep(time.Millisecond)
	}
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("too many"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("second concurrent request: %d, Retry-After %q; want 429, 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	first := <-done
	first.Body.Close()
	if first.StatusCode != http.StatusOK || first.Header.Get(HeaderColdStart) != "true" {
		t.Errorf("first request: %d, cold %q; want 200, true", first.StatusCode, first.Header.Get(HeaderColdStart))
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	req.Header.Set(HeaderWarmup, "1")
	warm, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	warm.Body.Close()
	if warm.StatusCode != http.StatusNoContent || warm.Header.Get(HeaderColdStart) != "false" {
		t.Errorf("warmup: %d, cold %q; want 204 on the warm environment", warm.StatusCode, warm.Header.Get(HeaderColdStart))
	}

	stats, err := http.Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Body.Close()
	var st map[string]int
	if err := json.NewDecoder(stats.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st["invocations"] != 1 || st["throttled"] != 1 || st["cold_starts"] != 1 || st["max_concurrent"] != 1 || st["warmups"] != 1 {
		t.Errorf("GET /stats = %v", st)
	}
}

func TestErrorRate(t *testing.T) {
	f := New(Config{ErrorRate: 1})
	srv := httptest.NewServer(f)
	defer srv.Close()
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || f.Stats().Errors != 1 {
		t.Errorf("with error rate 1: %d, stats %+v; want 500", resp.StatusCode, f.Stats())
	}
}

func TestDownFor(t *testing.T) {
	f, clock := newAt(Config{DownFor: time.Minute})
	call := func() int {
		rec := httptest.NewRecorder()
		f.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x")))
		return rec.Code
	}
	if code := call(); code != http.StatusServiceUnavailable {
		t.Errorf("during the outage: %d, want 503", code)
	}
	clock.advance(time.Minute)
	if code := call(); code != http.StatusOK {
		t.Errorf("after the outage: %d, want 200", code)
	}
	if s := f.Stats(); s.Unavailable != 1 || s.Invocations != 1 {
		t.Errorf("stats = %+v; want 1 unavailable, 1 invocation", s)
	}
}
