package buffer_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/groupcommit"
)

// submitAll submits n jobs at once and returns the IDs acknowledged and the
// errors of the others.
func submitAll(t *testing.T, q *buffer.Queue, payloads [][]byte) (ids []string, errs []error) {
	t.Helper()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, p := range payloads {
		wg.Go(func() {
			job, err := q.Submit(t.Context(), "resize", p, "application/octet-stream")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ids = append(ids, job.Id)
		})
	}
	wg.Wait()
	return ids, errs
}

func payloads(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{'x'}, size)
	}
	return out
}

// assertStored checks that every acknowledged job can be read back.
func assertStored(t *testing.T, q *buffer.Queue, ids []string) {
	t.Helper()
	for _, id := range ids {
		if _, err := q.Get(t.Context(), id); err != nil {
			t.Errorf("acknowledged job %s: %v", id, err)
		}
	}
}

func TestConcurrentSubmitsAreGroupCommitted(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ids, errs := submitAll(t, q, payloads(500, 1024))
	if len(errs) > 0 {
		t.Fatalf("%d submits failed, first: %v", len(errs), errs[0])
	}
	assertStored(t, q, ids)
	st := q.BatchStats()["jobs"]
	t.Logf("500 concurrent submits: %d batches holding %d jobs, the rest alone", st.Batches, st.Messages)
	if st.Batches == 0 || st.Messages < 250 {
		t.Errorf("stats %+v: want most of 500 concurrent submits stored in batches", st)
	}
}

func TestLoneSubmitIsNotDelayed(t *testing.T) {
	// Linger 0: a submit with nothing in flight goes at once and alone.
	q := buffertest.Queue(t, buffer.Config{})
	for range 5 {
		if _, err := q.Submit(t.Context(), "resize", []byte("x"), ""); err != nil {
			t.Fatal(err)
		}
	}
	if st := q.BatchStats()["jobs"]; st.Batches != 0 {
		t.Errorf("stats %+v: sequential submits should not be batched", st)
	}
}

func TestBatchRefusalFailsOnlyTheSubmitsThatCannotBeStored(t *testing.T) {
	// A linger long enough that every submit lands in one batch.
	q := buffertest.Queue(t, buffer.Config{MaxMessageBytes: 4096, Batch: groupcommit.Config{Linger: 200 * time.Millisecond, MaxInFlight: 1}})
	in := payloads(20, 100)
	in[7] = bytes.Repeat([]byte{'x'}, 8192) // larger than the stream takes
	ids, errs := submitAll(t, q, in)
	if len(ids) != 19 || len(errs) != 1 {
		t.Fatalf("%d stored, errors %v: want 19 stored and the oversized one refused", len(ids), errs)
	}
	if !bytes.Contains([]byte(errs[0].Error()), []byte("maximum")) {
		t.Errorf("error %q does not say the message was too large", errs[0])
	}
	assertStored(t, q, ids)
	if st := q.BatchStats()["jobs"]; st.Fallbacks != 1 {
		t.Errorf("stats %+v: want the one refused batch retried job by job", st)
	}
}

func TestFullBufferAcknowledgesOnlyWhatItStored(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{MaxJobs: 30, Batch: groupcommit.Config{Linger: 50 * time.Millisecond, MaxInFlight: 1}})
	ids, errs := submitAll(t, q, payloads(100, 64))
	if len(ids) != 30 || len(errs) != 70 {
		t.Fatalf("%d acknowledged, %d refused: want 30 and 70", len(ids), len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, buffer.ErrFull) {
			t.Fatalf("refusal %v is not ErrFull", err)
		}
	}
	assertStored(t, q, ids)
}

func TestStateWritesAreGroupCommittedAndRacesStillLose(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{Batch: groupcommit.Config{Linger: 50 * time.Millisecond, MaxInFlight: 1}})
	ids, errs := submitAll(t, q, payloads(50, 16))
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	cancelAll := func(ids []string) (cancelled, already int) {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for _, id := range ids {
			wg.Go(func() {
				_, err := q.Cancel(t.Context(), id)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					cancelled++
				case errors.Is(err, buffer.ErrFinished):
					already++
				default:
					t.Errorf("cancel %s: %v", id, err)
				}
			})
		}
		wg.Wait()
		return cancelled, already
	}
	if cancelled, already := cancelAll(ids[1:]); cancelled != 49 || already != 0 {
		t.Errorf("49 cancels: %d cancelled, %d found finished", cancelled, already)
	}
	st := q.BatchStats()["states"]
	t.Logf("49 concurrent cancels: %d state batches holding %d writes", st.Batches, st.Messages)
	if st.Batches == 0 || st.Fallbacks != 0 {
		t.Errorf("state stats %+v: want concurrent state writes batched, none refused", st)
	}
	// Two cancels of one job in one batch: they race, the batch is
	// refused as a whole, each write is tried alone, and one wins.
	if cancelled, already := cancelAll([]string{ids[0], ids[0]}); cancelled != 1 || already != 1 {
		t.Errorf("two cancels of one job: %d cancelled, %d found finished; want 1 and 1", cancelled, already)
	}
	for _, id := range ids {
		if job, err := q.Get(t.Context(), id); err != nil || job.State.String() != "CANCELLED" {
			t.Errorf("job %s: %v, %v", id, job.GetState(), err)
		}
	}
}

// TestQueueWithoutAtomicBatches: a queue on a server that stores no
// atomic batches (as Open finds one older than 2.12) publishes each write
// alone, and stores them all.
func TestQueueWithoutAtomicBatches(t *testing.T) {
	q, err := buffer.Open(t.Context(), buffertest.Start(t, "").Connect(t), buffer.Config{Batch: groupcommit.Config{PerMessage: true, Linger: 50 * time.Millisecond, MaxInFlight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	ids := make([]string, 50)
	for i := range ids {
		wg.Go(func() {
			job, err := q.Submit(t.Context(), "f", []byte("x"), "")
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = job.Id
		})
	}
	wg.Wait()
	for _, id := range ids {
		if _, err := q.Get(t.Context(), id); err != nil {
			t.Errorf("job %s: %v", id, err)
		}
	}
	if jobs := q.BatchStats()["jobs"]; jobs.Batches != 0 {
		t.Errorf("stats %+v: want no atomic batch", jobs)
	}
}
