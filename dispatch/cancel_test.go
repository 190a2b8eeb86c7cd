package dispatch_test

import (
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
	"github.com/sluicehq/sluice/dispatch/target"
)

// A cancel that lands once the function has the request, but before the
// job's state says RUNNING (dispatch writes that only after the attempt
// has run for RunningAfter, 250ms), must not say the job was cancelled
// before it ran: the answer says an attempt may have started, and once
// dispatch knows it sent one the job ends as a cancel of a running job
// does (the attempt counted, its outcome discarded). A cancel after
// RUNNING is the same in the end.
func TestCancelAsTheAttemptStarts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running bool // the cancel waits for the job to say RUNNING
	}{
		{"before RUNNING is written", false},
		{"once RUNNING", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := buffertest.Queue(t, buffer.Config{})
			received := make(chan struct{}, 1)
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				received <- struct{}{}
				time.Sleep(time.Second) // the function's work, during which the cancel comes
				w.Write([]byte("done")) //nolint:errcheck
			}))
			defer srv.Close()
			ids := submit(t, q, "slow", 1)
			startDispatcher(t, q, dispatch.Function{
				Name: "slow", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 1, Timeout: 5 * time.Second,
			}, 5*time.Second)
			select {
			case <-received:
			case <-time.After(10 * time.Second):
				t.Fatal("the function got no request")
			}
			if tc.running {
				waitJobWhere(t, q, ids[0], 5*time.Second, "running", func(j *sluicev1.Job) bool { return j.State == sluicev1.Job_RUNNING })
			}
			answer, err := q.Cancel(t.Context(), ids[0])
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("cancel answered: %s, %d attempts: %q", answer.State, answer.Attempts, answer.Error)
			if answer.State != sluicev1.Job_CANCELLED || strings.Contains(answer.Error, "before it ran") {
				t.Errorf("cancel answered %s %q while the function was running the job", answer.State, answer.Error)
			}
			// Once dispatch has the function's answer, the job says what
			// happened: one attempt, cancelled while running, no result.
			waitJobWhere(t, q, ids[0], 10*time.Second, "with its attempt counted", func(j *sluicev1.Job) bool { return j.Attempts > 0 })
			// The function answers a second after it got the request: time
			// for its outcome to be written over the cancel, which must not
			// happen.
			time.Sleep(1500 * time.Millisecond)
			job, err := q.Get(t.Context(), ids[0])
			if err != nil {
				t.Fatal(err)
			}
			if job.State != sluicev1.Job_CANCELLED || job.Attempts != 1 || job.StartTime == nil || job.Result != nil ||
				!strings.HasPrefix(job.Error, "cancelled while running") {
				t.Errorf("job = %s, %d attempts, started %v, result %v, error %q; want CANCELLED while running, its one attempt counted and its outcome discarded",
					job.State, job.Attempts, job.StartTime.AsTime(), job.Result, job.Error)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("the function was called %d times, want once", n)
			}
		})
	}
}
