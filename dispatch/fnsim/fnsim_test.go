package fnsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/buffertest"
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
	buffertest.WaitFor(t, 5*time.Second, "the first request in flight", func() bool { return f.Stats().InFlight > 0 })
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
	if st["invocations"] != 1 || st["throttled"] != 1 || st["cold_starts"] != 1 || st["max_concurrent"] != 1 || st["warmups"] != 1 ||
		st["max_starts_per_second"] != 1 || st["limit"] != 1 {
		t.Errorf("GET /stats = %v", st)
	}
	for _, key := range []string{"rate_limited", "time_to_use_ns"} {
		if _, ok := st[key]; !ok {
			t.Errorf("GET /stats has no %q: %v", key, st)
		}
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

// phase is one step of a scripted test: advance the clock, end release
// invocations, then try to start acquire more.
type phase struct {
	advance   time.Duration
	release   int
	acquire   int
	wantGot   int // of acquire
	wantLimit int // Stats().Limit afterwards
}

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cfg           Config
		phases        []phase
		wantThrottled int
		wantTimeToUse time.Duration
	}{
		{
			name: "a drop refuses at the new limit however many are idle",
			cfg:  Config{Concurrency: 50, Schedule: []Step{{After: 3 * time.Second, Concurrency: 20}}},
			phases: []phase{
				{acquire: 50, wantGot: 50, wantLimit: 50},
				{release: 40, advance: 3 * time.Second, acquire: 20, wantGot: 10, wantLimit: 20}, // 10 busy, 40 idle
				{release: 5, acquire: 10, wantGot: 5, wantLimit: 20},
			},
			wantThrottled: 10 + 5,
		},
		{
			name: "a rise admits more, and the time to use it is counted from the rise",
			cfg:  Config{Concurrency: 20, Schedule: []Step{{After: 3 * time.Second, Concurrency: 50}}},
			phases: []phase{
				{acquire: 30, wantGot: 20, wantLimit: 20},
				{advance: 3500 * time.Millisecond, acquire: 40, wantGot: 30, wantLimit: 50},
			},
			wantThrottled: 10 + 10,
			wantTimeToUse: 500 * time.Millisecond,
		},
		{
			name: "the schedule runs from the first request, not from New",
			cfg:  Config{Concurrency: 10, Schedule: []Step{{After: 2 * time.Second, Concurrency: 5}}},
			phases: []phase{
				{advance: time.Minute, acquire: 10, wantGot: 10, wantLimit: 10},
				{release: 10, advance: time.Second, acquire: 10, wantGot: 10, wantLimit: 10},
				{release: 10, advance: time.Second, acquire: 10, wantGot: 5, wantLimit: 5},
			},
			wantThrottled: 5,
		},
		{
			name: "steps apply in order of After, and a step of 0 lifts the limit",
			cfg: Config{Concurrency: 4, Schedule: []Step{
				{After: 2 * time.Second, Concurrency: 0}, {After: time.Second, Concurrency: 2},
			}},
			phases: []phase{
				{acquire: 1, wantGot: 1, wantLimit: 4},
				{advance: time.Second, acquire: 3, wantGot: 1, wantLimit: 2},
				{advance: time.Second, acquire: 100, wantGot: 100, wantLimit: 0},
			},
			wantThrottled: 2,
		},
		{
			name: "a rise respects the scaling ramp",
			cfg: Config{Concurrency: 10, ScalePerMinute: 600, InitialBurst: 10,
				Schedule: []Step{{After: time.Second, Concurrency: 20}}},
			phases: []phase{
				{acquire: 10, wantGot: 10, wantLimit: 10}, // all busy: scaling starts
				{advance: time.Second, acquire: 20, wantGot: 10, wantLimit: 20},
			},
			wantThrottled: 10,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, clock := newAt(tc.cfg)
			for i, p := range tc.phases {
				for range p.release {
					f.release()
				}
				clock.advance(p.advance)
				if got, _ := acquireN(f, p.acquire); got != p.wantGot {
					t.Errorf("phase %d: got %d of %d, want %d", i, got, p.acquire, p.wantGot)
				}
				if got := f.Stats().Limit; got != p.wantLimit {
					t.Errorf("phase %d: limit %d, want %d", i, got, p.wantLimit)
				}
			}
			st := f.Stats()
			if st.Throttled != tc.wantThrottled || st.RateLimited != 0 || st.TimeToUse != tc.wantTimeToUse {
				t.Errorf("stats = %+v; want %d throttled, none rate limited, time to use %v", st, tc.wantThrottled, tc.wantTimeToUse)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rate      float64
		burst     int
		wantBurst int
	}{
		{"burst defaults to a tenth of a second", 100, 0, 10},
		{"burst defaults to at least 1", 5, 0, 1},
		{"burst given", 10, 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, clock := newAt(Config{RatePerSecond: tc.rate, RateBurst: tc.burst})
			n := 3 * tc.wantBurst
			if got, _ := acquireN(f, n); got != tc.wantBurst {
				t.Errorf("at once: got %d of %d, want the burst, %d", got, n, tc.wantBurst)
			}
			clock.advance(time.Second)
			if got, _ := acquireN(f, n); got != tc.wantBurst {
				t.Errorf("a second later, at once: got %d of %d, want the burst again, %d", got, n, tc.wantBurst)
			}
			// At just under the rate, for a second: every request gets a
			// token; at twice it, half do (and the tokens saved by being
			// 1% slower).
			perSecond := int(tc.rate)
			for i := range perSecond {
				clock.advance(time.Duration(1.01 * float64(time.Second) / tc.rate))
				if _, ok := f.acquire(false); !ok {
					t.Errorf("at the rate: request %d of %d refused", i+1, perSecond)
				}
			}
			got := 0
			for range 2 * perSecond {
				clock.advance(time.Duration(0.505 * float64(time.Second) / tc.rate))
				if _, ok := f.acquire(false); ok {
					got++
				}
			}
			if want := int(1.02 * tc.rate); got < want-1 || got > want {
				t.Errorf("at twice the rate for a second: %d of %d admitted, want %d (or one fewer)", got, 2*perSecond, want)
			}
			refused := 2*(n-tc.wantBurst) + 2*perSecond - got
			if st := f.Stats(); st.RateLimited != refused || st.Throttled != refused {
				t.Errorf("stats = %+v; want %d rate limited and throttled", st, refused)
			}
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" means no header
	}{
		{"default", Config{}, "1"},
		{"rounded up to seconds", Config{RetryAfter: 2500 * time.Millisecond}, "3"},
		{"omitted", Config{OmitRetryAfter: true, RetryAfter: 2 * time.Second}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Concurrency = 1
			f, _ := newAt(tc.cfg)
			acquireN(f, 1) // the only environment is busy
			rec := httptest.NewRecorder()
			f.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x")))
			_, has := rec.Result().Header["Retry-After"]
			if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != tc.want || has != (tc.want != "") {
				t.Errorf("got %d, Retry-After %q (present %v); want 429, %q", rec.Code, rec.Header().Get("Retry-After"), has, tc.want)
			}
		})
	}
}

func TestMaxStartsPerSecond(t *testing.T) {
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name   string
		cfg    Config
		starts []time.Duration // since the first, in order; each released at once
		warmup bool
		want   int
	}{
		{"none", Config{}, nil, false, 0},
		{"one", Config{}, []time.Duration{0}, false, 1},
		{"a second apart do not share a window", Config{}, []time.Duration{0, ms(1000), ms(2000)}, false, 1},
		{"just under a second apart do", Config{}, []time.Duration{0, ms(999)}, false, 2},
		{"the busiest window", Config{}, []time.Duration{0, ms(100), ms(900), ms(950), ms(1000), ms(1050), ms(1100), ms(2500)}, false, 5},
		{"simultaneous", Config{}, []time.Duration{ms(5), ms(5), ms(5), ms(5)}, false, 4},
		{"throttled requests are no starts", Config{RatePerSecond: 2, RateBurst: 2}, []time.Duration{0, 0, 0, 0, ms(10)}, false, 2},
		{"keep-warm pings are no starts", Config{}, []time.Duration{0, 0, 0}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, clock := newAt(tc.cfg)
			at := time.Duration(0)
			for _, s := range tc.starts {
				clock.advance(s - at)
				at = s
				if _, ok := f.acquire(tc.warmup); ok {
					f.release()
				}
			}
			if got := f.Stats().MaxStartsPerSecond; got != tc.want {
				t.Errorf("MaxStartsPerSecond = %d, want %d", got, tc.want)
			}
		})
	}
}
