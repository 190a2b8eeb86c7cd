package dispatch_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// flaky answers each attempt with the next status in its script (the last
// one from then on), and records when each attempt came and its
// Sluice-Attempt header.
type flaky struct {
	script     []int
	retryAfter string

	mu       sync.Mutex
	at       []time.Time
	attempts []string
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	n := len(f.at)
	f.at = append(f.at, time.Now())
	f.attempts = append(f.attempts, r.Header.Get(target.HeaderAttempt))
	f.mu.Unlock()
	status := f.script[min(n, len(f.script)-1)]
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	w.WriteHeader(status)
}

func (f *flaky) calls() ([]time.Time, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...), append([]string(nil), f.attempts...)
}

func runFlaky(t *testing.T, f *flaky, retry retry.Policy, maxAge time.Duration) *sluicev1.Job {
	t.Helper()
	srv := httptest.NewServer(f)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	ids := submit(t, q, "f", 1)
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 1, Timeout: time.Second,
		Retry: retry, MaxAge: maxAge,
	}, time.Second)
	return waitJob(t, q, ids[0], 20*time.Second)
}

func TestRetryThenSucceed(t *testing.T) {
	f := &flaky{script: []int{500, 502, 200}}
	retry := retry.Policy{MaxAttempts: 5, InitialBackoff: 200 * time.Millisecond, Multiplier: 2}
	job := runFlaky(t, f, retry, 0)
	if job.State != sluicev1.Job_SUCCEEDED || job.Attempts != 3 {
		t.Fatalf("job = %v, want SUCCEEDED after 3 attempts", job)
	}
	at, attempts := f.calls()
	if len(at) != 3 || attempts[0] != "1" || attempts[1] != "2" || attempts[2] != "3" {
		t.Fatalf("function saw attempts %v, want 1, 2, 3", attempts)
	}
	wantHistory := []struct {
		status  int32
		outcome sluicev1.Attempt_Outcome
	}{{500, sluicev1.Attempt_FAILED}, {502, sluicev1.Attempt_FAILED}, {200, sluicev1.Attempt_SUCCEEDED}}
	if len(job.History) != len(wantHistory) {
		t.Fatalf("history = %v, want 3 attempts", job.History)
	}
	for i, w := range wantHistory {
		if a := job.History[i]; a.Number != int32(i+1) || a.HttpStatus != w.status || a.Outcome != w.outcome || a.StartTime == nil || a.Duration == nil {
			t.Errorf("history[%d] = %v, want attempt %d answered %d, %v", i, a, i+1, w.status, w.outcome)
		}
	}
	for i := 1; i < len(at); i++ {
		// Full jitter: anywhere from 0 to the backoff, plus dispatch time.
		ceiling := retry.Backoff(i) + 300*time.Millisecond
		if gap := at[i].Sub(at[i-1]); gap > ceiling {
			t.Errorf("wait before attempt %d was %v; the backoff allows at most %v", i+1, gap, ceiling)
		}
	}
}

func TestRetryExhaustsAttempts(t *testing.T) {
	f := &flaky{script: []int{500}}
	job := runFlaky(t, f, retry.Policy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond}, 0)
	at, _ := f.calls()
	if job.State != sluicev1.Job_FAILED || job.Attempts != 3 || len(at) != 3 {
		t.Errorf("job = %v after %d calls; want FAILED after exactly 3 attempts", job, len(at))
	}
	if want := "function answered HTTP 500 (attempt 3 of 3)"; job.Error != want {
		t.Errorf("error = %q, want %q", job.Error, want)
	}
}

func TestPermanentFailuresAreNotRetried(t *testing.T) {
	for _, status := range []int{400, 404, 422, 501} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			f := &flaky{script: []int{status, 200}}
			job := runFlaky(t, f, retry.Policy{MaxAttempts: 5, InitialBackoff: 10 * time.Millisecond}, 0)
			if at, _ := f.calls(); job.State != sluicev1.Job_FAILED || job.Attempts != 1 || len(at) != 1 {
				t.Errorf("job = %v after %d calls; want FAILED at once", job, len(at))
			}
		})
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	f := &flaky{script: []int{500, 200}, retryAfter: "1"}
	job := runFlaky(t, f, retry.Policy{MaxAttempts: 2, InitialBackoff: 10 * time.Millisecond}, 0)
	at, _ := f.calls()
	if job.State != sluicev1.Job_SUCCEEDED || len(at) != 2 {
		t.Fatalf("job = %v after %d calls", job, len(at))
	}
	if gap := at[1].Sub(at[0]); gap < time.Second {
		t.Errorf("retried after %v; the function asked for Retry-After: 1", gap)
	}
}

func TestJobExpiresAfterMaxAge(t *testing.T) {
	f := &flaky{script: []int{503}}
	job := runFlaky(t, f, retry.Policy{MaxAttempts: 1000, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, 400*time.Millisecond)
	if job.State != sluicev1.Job_EXPIRED || job.Error != "not finished within its max age of 400ms" {
		t.Errorf("job = %v, want EXPIRED", job)
	}
}

func TestBackoffGrowsToItsCap(t *testing.T) {
	r := retry.Policy{InitialBackoff: time.Second, MaxBackoff: 5 * time.Minute, Multiplier: 2}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 9: 256 * time.Second, 10: 5 * time.Minute, 100: 5 * time.Minute} {
		if got := r.Backoff(attempt); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", attempt, got, want)
		}
	}
}
