package dispatch_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
)

// A dead letter the full dead-letter store refuses must not keep its job
// in the function's window: with concurrency 1, a job stuck that way would
// stop every job after it. The job is parked instead, says so, and its
// dead letter is stored once there is room. (#19 item 1)
func TestFullDeadLetterStoreParksTheJobAndFreesItsSlot(t *testing.T) {
	fn := &switchable{}
	fn.status.Store(http.StatusInternalServerError)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	// Room for one 30 KiB dead letter, not two.
	q := buffertest.Queue(t, buffer.Config{Stores: buffer.StoreLimits{DeadLetterBytes: 48 << 10}})
	payload := bytes.Repeat([]byte("x"), 30<<10)
	var ids []string
	for range 3 {
		job, err := q.Submit(t.Context(), "f", payload, "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, job.Id)
	}
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &dispatch.HTTPInvoker{URL: srv.URL}, Concurrency: 1, Timeout: time.Second,
		Retry:   dispatch.RetryPolicy{MaxAttempts: 1},
		Circuit: dispatch.CircuitPolicy{Disabled: true},
	}, time.Second)

	for _, id := range ids {
		if job := waitJob(t, q, id, 15*time.Second); job.State != sluicev1.Job_FAILED {
			t.Fatalf("job %s = %v; want FAILED", id, job.State)
		}
	}
	// A job's state says FAILED before its dead letter is stored or parked.
	var parked []*sluicev1.Job
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		parked = parked[:0]
		for _, id := range ids {
			job, err := q.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if job.Pending != "" {
				parked = append(parked, job)
			}
		}
		if len(parked) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs say a dead letter is pending; want the 2 the store had no room for", len(parked))
		}
	}
	if n, err := q.ParkedCount(t.Context()); err != nil || n != 2 {
		t.Fatalf("ParkedCount = %d, %v; want 2", n, err)
	}

	// Room appears: the parked dead letters are stored and the jobs' notes
	// cleared.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.RunParked(ctx, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	page, err := q.DeadLetters(t.Context(), "f", "", 0, 10, false)
	if err != nil || len(page.Letters) != 1 {
		t.Fatalf("dead letters = %v, %v; want the one that fitted", page.Letters, err)
	}
	waiting := map[string]bool{parked[0].Id: true, parked[1].Id: true}
	for range parked {
		if err := q.DeleteDeadLetter(t.Context(), "f", "", page.Letters[0].Job.Id); err != nil {
			t.Fatal(err)
		}
		page = waitLetters(t, q, "f", 1)
		if id := page.Letters[0].Job.Id; !waiting[id] {
			t.Fatalf("dead letter of %s stored; want one of the parked %v", id, waiting)
		}
		delete(waiting, page.Letters[0].Job.Id)
	}
	for _, j := range parked {
		deadline := time.Now().Add(10 * time.Second)
		for {
			job, err := q.Get(t.Context(), j.Id)
			if err != nil {
				t.Fatal(err)
			}
			if job.Pending == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s still says %q", j.Id, job.Pending)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// waitLetters waits for the function to have exactly n dead letters.
func waitLetters(t *testing.T, q *buffer.Queue, function string, n int) buffer.DeadLetterPage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		page, err := q.DeadLetters(t.Context(), function, "", 0, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Letters) == n {
			return page
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters; want %d", len(page.Letters), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
