package dispatch_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/deadletter"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

func TestExhaustedJobIsDeadLetteredAndRedriveRunsItAgain(t *testing.T) {
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(500)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	ids := submit(t, q, "f", 3)
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 3, Timeout: time.Second,
		Retry:   retry.Policy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond},
		Circuit: circuit.Policy{Disabled: true}, // this test counts attempts, not outages
	}, time.Second)

	for _, id := range ids {
		job := waitJob(t, q, id, 20*time.Second)
		if job.State != sluicev1.Job_FAILED || job.Attempts != 3 || job.DeadLetterTime == nil {
			t.Fatalf("job = %v; want FAILED and dead-lettered after exactly 3 attempts", job)
		}
	}
	if got := fn.Calls.Load(); got != 9 {
		t.Errorf("function was called %d times; want 3 jobs × 3 attempts", got)
	}
	page := waitDeadLetters(t, q, "f", 3)
	payloadOf := map[string]string{} // dead letters come in the order the jobs died
	for i, id := range ids {
		payloadOf[id] = fmt.Sprintf("job %d", i)
	}
	for i, dl := range page.Letters {
		if _, ok := payloadOf[dl.Job.Id]; !ok || dl.Reason != "function answered HTTP 500 (attempt 3 of 3)" || len(dl.Job.History) != 3 || dl.Payload != nil {
			t.Errorf("dead letter %d = %v; want one of the jobs, its reason, 3 attempts and no payload unasked", i, dl)
		}
	}
	paged, err := q.DeadLetters(t.Context(), "f", "", 0, 2, true)
	if err != nil || len(paged.Letters) != 2 || paged.Next == 0 || string(paged.Letters[0].Payload) != payloadOf[paged.Letters[0].Job.Id] {
		t.Fatalf("first page of 2 = %+v, %v; want 2 with payloads and a next page", paged, err)
	}
	if rest, err := q.DeadLetters(t.Context(), "f", "", paged.Next, 2, false); err != nil || len(rest.Letters) != 1 || rest.Next != 0 {
		t.Fatalf("second page = %+v, %v; want the last one", rest, err)
	}

	// Discard one, fix the function, redrive the rest.
	if err := q.DeleteDeadLetter(t.Context(), "f", "", ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := q.DeleteDeadLetter(t.Context(), "f", "", ids[2]); err != buffer.ErrNotFound {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	fn.Status.Store(200)
	jobs, notFound, err := q.Redrive(t.Context(), "f", "", []string{ids[0], ids[1], ids[2]})
	if err != nil || len(jobs) != 2 || len(notFound) != 1 || notFound[0] != ids[2] {
		t.Fatalf("Redrive = %v, not found %v, %v; want 2 redriven and the discarded one not found", jobs, notFound, err)
	}
	for _, id := range ids[:2] {
		job := waitJob(t, q, id, 20*time.Second)
		h := job.History
		if job.State != sluicev1.Job_SUCCEEDED || job.Attempts != 1 || job.Redrives != 1 || job.DeadLetterTime != nil ||
			len(h) != 5 || h[3].Outcome != sluicev1.Attempt_REDRIVEN || h[4].Outcome != sluicev1.Attempt_SUCCEEDED {
			t.Errorf("redriven job = %v; want SUCCEEDED on a fresh attempt, its history showing the redrive", job)
		}
	}
	if n, err := q.DeadLetterCount(t.Context(), "f"); err != nil || n != 0 {
		t.Errorf("dead letters left = %d, %v; want none", n, err)
	}
	discarded, err := q.Get(t.Context(), ids[2])
	if err != nil || discarded.State != sluicev1.Job_FAILED || discarded.DeadLetterTime != nil {
		t.Errorf("discarded job = %v, %v; want FAILED and no longer dead-lettered", discarded, err)
	}
}

func TestThrottlesNeverDeadLetter(t *testing.T) {
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(http.StatusTooManyRequests)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	ids := submit(t, q, "f", 2)
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: time.Second,
		Retry: retry.Policy{MaxAttempts: 1},
	}, time.Second)
	// Many more throttles than attempts allowed.
	buffertest.WaitFor(t, 20*time.Second, "10 throttled calls", func() bool { return fn.Calls.Load() >= 10 })
	fn.Status.Store(200)
	for _, id := range ids {
		job := waitJob(t, q, id, 20*time.Second)
		if job.State != sluicev1.Job_SUCCEEDED || job.Attempts != 1 || job.Throttles < 1 || job.DeadLetterTime != nil {
			t.Errorf("job = %v; want SUCCEEDED on its one attempt after throttles", job)
		}
	}
	if n, err := q.DeadLetterCount(t.Context(), "f"); err != nil || n != 0 {
		t.Errorf("dead letters = %d, %v; want none", n, err)
	}
	// The shared totals count every throttle (they are shared every 100ms).
	buffertest.WaitForNoError(t, 5*time.Second, "shared totals of at least 10 throttles, 2 succeeded, none dead-lettered", func() error {
		p, err := q.Pacing(t.Context(), "f")
		if err != nil {
			t.Fatal(err)
		}
		if p.Counts.Throttles >= 10 && p.Counts.Succeeded == 2 && p.Counts.DeadLettered == 0 {
			return nil
		}
		return fmt.Errorf("totals %+v", p.Counts)
	})
}

func waitDeadLetters(t *testing.T, q *buffer.Queue, function string, n int) deadletter.Page {
	t.Helper()
	var page deadletter.Page
	buffertest.WaitForNoError(t, 10*time.Second, fmt.Sprintf("%d dead letters of %s", n, function), func() error {
		var err error
		if page, err = q.DeadLetters(t.Context(), function, "", 0, 100, false); err != nil {
			t.Fatal(err)
		}
		if len(page.Letters) < n {
			return fmt.Errorf("%d of them", len(page.Letters))
		}
		return nil
	})
	return page
}
