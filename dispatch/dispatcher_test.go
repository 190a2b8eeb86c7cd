package dispatch_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// startDispatcher runs a dispatcher for one function until the test ends,
// and returns a function that stops it and waits for Run to return.
func startDispatcher(t *testing.T, q *buffer.Queue, fn dispatch.Function, drain time.Duration) (stop func()) {
	t.Helper()
	d, err := dispatch.New(dispatch.Config{
		Source:       q,
		Functions:    []dispatch.Function{fn},
		DrainTimeout: drain,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func submit(t *testing.T, q *buffer.Queue, function string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		job, err := q.Submit(t.Context(), function, fmt.Appendf(nil, "job %d", i), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = job.Id
	}
	return ids
}

// waitJob waits for the job to reach a terminal state, and returns it.
func waitJob(t *testing.T, q *buffer.Queue, id string, within time.Duration) *sluicev1.Job {
	t.Helper()
	return waitJobWhere(t, q, id, within, "finished", func(j *sluicev1.Job) bool { return buffer.Terminal(j.State) })
}

// waitJobWhere waits for the job to be as cond says, which what describes
// ("running"), and returns it.
func waitJobWhere(t *testing.T, q *buffer.Queue, id string, within time.Duration, what string, cond func(*sluicev1.Job) bool) *sluicev1.Job {
	t.Helper()
	var job *sluicev1.Job
	buffertest.WaitForNoError(t, within, "job "+id+" "+what, func() error {
		var err error
		if job, err = q.Get(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if !cond(job) {
			return fmt.Errorf("%v after %d attempts, pending %q", job.State, job.Attempts, job.Pending)
		}
		return nil
	})
	return job
}

func TestConcurrencyNeverExceedsLimit(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	sim := fnsim.New(fnsim.Config{Duration: 30 * time.Millisecond})
	srv := httptest.NewServer(sim)
	defer srv.Close()

	ids := submit(t, q, "echo", 40)
	startDispatcher(t, q, dispatch.Function{
		Name: "echo", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 3, Timeout: 5 * time.Second,
	}, time.Second)

	for i, id := range ids {
		job := waitJob(t, q, id, 20*time.Second)
		if job.State != sluicev1.Job_SUCCEEDED || string(job.Result.GetBody()) != fmt.Sprintf("job %d", i) {
			t.Fatalf("job %d = %v, want SUCCEEDED echoing its payload", i, job)
		}
		if job.Attempts != 1 || job.Result.ContentType != "text/plain" || job.Result.HttpStatus != 200 {
			t.Errorf("job %d = %v, want one attempt and a 200 text/plain result", i, job)
		}
	}
	if got := sim.Stats().MaxConcurrent; got != 3 {
		t.Errorf("function saw at most %d invocations at once, want exactly the limit of 3", got)
	}
}

func TestLimitHoldsAcrossDispatchers(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	sim := fnsim.New(fnsim.Config{Duration: 20 * time.Millisecond})
	srv := httptest.NewServer(sim)
	defer srv.Close()

	ids := submit(t, q, "echo", 40)
	fn := dispatch.Function{Name: "echo", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: 5 * time.Second}
	// Two dispatchers, as two gateway processes would run: the limit of 2
	// is held by the server, not doubled.
	startDispatcher(t, q, fn, time.Second)
	startDispatcher(t, q, fn, time.Second)
	for _, id := range ids {
		waitJob(t, q, id, 20*time.Second)
	}
	if got := sim.Stats().MaxConcurrent; got > 2 {
		t.Errorf("function saw %d invocations at once across two dispatchers, want at most 2", got)
	}
}

func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		handler    http.HandlerFunc
		wantError  string
		wantStatus int32
	}{
		{
			name: "error status",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "boom", http.StatusInternalServerError)
			},
			wantError:  "function answered HTTP 500",
			wantStatus: 500,
		},
		{
			name: "hangs past timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body) // then the server notices the caller leave
				<-r.Context().Done()
			},
			wantError: "function did not answer within its timeout of 200ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := buffertest.Queue(t, buffer.Config{})
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			ids := submit(t, q, "f", 1)
			startDispatcher(t, q, dispatch.Function{
				Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 1, Timeout: 200 * time.Millisecond,
				Retry: retry.Policy{MaxAttempts: 1},
			}, time.Second)
			job := waitJob(t, q, ids[0], 10*time.Second)
			if job.State != sluicev1.Job_FAILED || job.Error != tc.wantError || job.Result.GetHttpStatus() != tc.wantStatus {
				t.Errorf("job = %v, want FAILED with %q and status %d", job, tc.wantError, tc.wantStatus)
			}
		})
	}
}

func TestUnreachableFunctionFailsWithoutAddress(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	ids := submit(t, q, "f", 1)
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: url}, Concurrency: 1, Timeout: time.Second,
		Retry: retry.Policy{MaxAttempts: 1},
	}, time.Second)
	job := waitJob(t, q, ids[0], 10*time.Second)
	if job.State != sluicev1.Job_FAILED || job.Error != "could not connect to the function" {
		t.Errorf("job = %v, want FAILED: could not connect", job)
	}
	if strings.Contains(job.Error, "127.0.0.1") {
		t.Errorf("job error %q shows the function's address", job.Error)
	}
}

func TestShutdownHandsBackRunningJobs(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	slow := httptest.NewServer(fnsim.New(fnsim.Config{Duration: time.Minute}))
	defer slow.Close()
	ids := submit(t, q, "f", 1)
	stop := startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: slow.URL}, Concurrency: 1, Timeout: 2 * time.Minute,
	}, 100*time.Millisecond)
	waitJobWhere(t, q, ids[0], 10*time.Second, "running", func(j *sluicev1.Job) bool { return j.State == sluicev1.Job_RUNNING })
	stop()
	job, err := q.Get(t.Context(), ids[0])
	if err != nil || job.State != sluicev1.Job_QUEUED {
		t.Fatalf("after shutdown job = %v, %v; want QUEUED again", job, err)
	}

	// The next dispatcher picks it up at once, not after the ack wait.
	fast := fnsim.New(fnsim.Config{})
	fastSrv := httptest.NewServer(fast)
	defer fastSrv.Close()
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: fastSrv.URL}, Concurrency: 1, Timeout: 2 * time.Minute,
	}, time.Second)
	job = waitJob(t, q, ids[0], 5*time.Second)
	if job.State != sluicev1.Job_SUCCEEDED || job.Attempts != 2 || fast.JobInvocations(ids[0]) != 1 {
		t.Errorf("job = %v, want SUCCEEDED on its second attempt", job)
	}
}

func TestPausedFunctionKeepsItsJobs(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	fn := dispatch.Function{Name: "resize", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 4, Timeout: time.Second,
		Pacing: pacing.Policy{Initial: 4}, KeepWarm: dispatch.KeepWarm{Instances: 1, Every: 10 * time.Millisecond}, Paused: true}
	ids := submit(t, q, "resize", 3)
	stop := startDispatcher(t, q, fn, time.Second)
	time.Sleep(500 * time.Millisecond) // time for calls that must not come, keep-warm ones every 10ms among them
	stop()
	if n := calls.Load(); n != 0 {
		t.Errorf("paused function was called %d times", n)
	}
	for _, id := range ids {
		if job, err := q.Get(t.Context(), id); err != nil || job.State != sluicev1.Job_QUEUED {
			t.Errorf("job %s = %v, %v: want QUEUED", id, job.GetState(), err)
		}
	}
	fn.Paused = false
	startDispatcher(t, q, fn, time.Second)
	for _, id := range ids {
		if job := waitJob(t, q, id, 10*time.Second); job.State != sluicev1.Job_SUCCEEDED {
			t.Errorf("after resuming, job %s ended %v", id, job.State)
		}
	}
}

// TestResultContentTypeIsBounded: a response's Content-Type over
// buffer.MaxContentTypeBytes is not kept with the result (the job's
// state has no room for more); one at the bound is.
func TestResultContentTypeIsBounded(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	at := "text/plain; x=" + strings.Repeat("a", buffer.MaxContentTypeBytes-len("text/plain; x="))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ct := at
		if string(body) == "job 1" {
			ct += "a"
		}
		w.Header().Set("Content-Type", ct)
		w.Write(body) //nolint:errcheck
	}))
	defer srv.Close()
	ids := submit(t, q, "f", 2)
	startDispatcher(t, q, dispatch.Function{Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: 5 * time.Second}, time.Second)
	for i, want := range []string{at, ""} {
		job := waitJob(t, q, ids[i], 10*time.Second)
		if job.State != sluicev1.Job_SUCCEEDED || job.Result.GetContentType() != want {
			t.Errorf("job %d: %v, result content type of %d bytes; want SUCCEEDED with one of %d", i, job.State, len(job.Result.GetContentType()), len(want))
		}
	}
}
