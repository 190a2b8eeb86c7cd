package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/deadletter"
	"github.com/sluicehq/sluice/buffer/store"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// A dead letter the full dead-letter store refuses must not keep its job
// in the function's window: with concurrency 1, a job stuck that way would
// stop every job after it. The job is parked instead, says so, and its
// dead letter is stored once there is room. (#19 item 1)
func TestFullDeadLetterStoreParksTheJobAndFreesItsSlot(t *testing.T) {
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(http.StatusInternalServerError)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	// Room for one 30 KiB dead letter, not two. Each job is another
	// tenant's, none over its share: the store is simply full.
	q := buffertest.Queue(t, buffer.Config{Stores: store.Limits{DeadLetterBytes: 48 << 10}})
	payload := bytes.Repeat([]byte("x"), 30<<10)
	tenants := []string{"t0", "t1", "t2"}
	var ids []string
	for _, tenant := range tenants {
		job, err := q.Submit(t.Context(), "f", payload, "text/plain", buffer.WithTenant(tenant))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, job.Id)
	}
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 1, Timeout: time.Second,
		Retry:   retry.Policy{MaxAttempts: 1},
		Circuit: circuit.Policy{Disabled: true},
	}, time.Second)

	for _, id := range ids {
		if job := waitJob(t, q, id, 15*time.Second); job.State != sluicev1.Job_FAILED {
			t.Fatalf("job %s = %v; want FAILED", id, job.State)
		}
	}
	// A job's state says FAILED before its dead letter is stored or parked.
	parked := map[string]string{} // job ID: tenant
	buffertest.WaitForNoError(t, 10*time.Second, "the 2 jobs the store had no room for saying their dead letter is pending", func() error {
		clear(parked)
		for i, id := range ids {
			job, err := q.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if job.Pending != "" {
				parked[id] = tenants[i]
			}
		}
		if len(parked) != 2 {
			return fmt.Errorf("%d say so", len(parked))
		}
		return nil
	})
	if n, err := q.ParkedCount(t.Context()); err != nil || n != 2 {
		t.Fatalf("ParkedCount = %d, %v; want 2", n, err)
	}

	// Room appears: the parked dead letters are stored, one at a time as
	// there is room, and the jobs' notes cleared.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.RunParked(ctx, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	stored := ids[0] // the first to fail found room
	if _, ok := parked[stored]; ok {
		t.Fatalf("the first job to fail, %s, is parked; the store had room for it", stored)
	}
	tenantOf := map[string]string{ids[0]: "t0", ids[1]: "t1", ids[2]: "t2"}
	// Not a range over parked: deleting from a map while ranging over it
	// ends the range early.
	for len(parked) > 0 {
		if err := q.DeleteDeadLetter(t.Context(), "f", tenantOf[stored], stored); err != nil {
			t.Fatal(err)
		}
		stored = waitStored(t, q, parked)
		delete(parked, stored)
	}
	for _, id := range ids {
		waitJobWhere(t, q, id, 10*time.Second, "with no dead letter pending", func(j *sluicev1.Job) bool { return j.Pending == "" })
	}
}

// waitStored waits for the dead letter of one of the parked jobs (ID:
// tenant) to be stored, and returns its job's ID.
func waitStored(t *testing.T, q *buffer.Queue, parked map[string]string) string {
	t.Helper()
	var stored string
	buffertest.WaitFor(t, 15*time.Second, fmt.Sprintf("one of the parked dead letters %v stored", parked), func() bool {
		for id, tenant := range parked {
			page, err := q.DeadLetters(t.Context(), "f", tenant, 0, 10, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Letters) == 1 && page.Letters[0].Job.Id == id {
				stored = id
				return true
			}
		}
		return false
	})
	return stored
}

// One tenant's failures must not take the whole dead-letter store: past
// half full, a tenant over its share has its dead letters kept without
// their payload, and another tenant's still have theirs. (#19 item 1)
func TestDeadLetterStoreIsSharedBetweenTenants(t *testing.T) {
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(http.StatusInternalServerError)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{Stores: store.Limits{DeadLetterBytes: 300 << 10}})
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 1, Timeout: time.Second,
		Retry:   retry.Policy{MaxAttempts: 1},
		Circuit: circuit.Policy{Disabled: true},
	}, time.Second)
	payload := bytes.Repeat([]byte("x"), 30<<10)
	fail := func(tenant string, n int) []string {
		var ids []string
		for range n {
			job, err := q.Submit(t.Context(), "f", payload, "text/plain", buffer.WithTenant(tenant))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, job.Id)
		}
		return ids
	}
	// Tenant a alone fills half the store; the reading of how full it is
	// is renewed at most once a second, by whoever asks for it then.
	fail("a", 5)
	waitTenantLetters(t, q, "a", 5)
	buffertest.WaitForNoError(t, 5*time.Second, "a reading of the dead-letter store with tenant a's 5 letters", func() error {
		stores, err := q.Stores(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range stores {
			if u.Name == store.DeadLetters && u.Bytes >= uint64(5*len(payload)) {
				return nil
			}
		}
		return fmt.Errorf("read %+v", stores)
	})
	more := fail("a", 3)
	waitTenantLetters(t, q, "a", 8)
	b := fail("b", 3)
	letters := waitTenantLetters(t, q, "b", 3)
	for _, dl := range letters {
		if len(dl.Payload) != len(payload) {
			t.Errorf("tenant b's dead letter of %s has %d payload bytes; want all %d", dl.Job.Id, len(dl.Payload), len(payload))
		}
	}
	lean := 0
	for _, dl := range waitTenantLetters(t, q, "a", 8) {
		if len(dl.Payload) == 0 {
			lean++
			if dl.Job.Notice == "" {
				t.Errorf("dead letter of %s has no payload and does not say why", dl.Job.Id)
			}
			if job, err := q.Get(t.Context(), dl.Job.Id); err != nil || job.Notice == "" {
				t.Errorf("job %s = %v, %v; want its state to say its payload was not kept", dl.Job.Id, job, err)
			}
		}
	}
	if lean < 2 {
		t.Errorf("%d of tenant a's last %d dead letters kept without payload; want at least 2 (a held half the store alone)", lean, len(more))
	}
	// A letter without its payload cannot run again: a redrive of it says
	// so, and a redrive of all leaves it.
	for _, dl := range waitTenantLetters(t, q, "a", 8) {
		if len(dl.Payload) > 0 {
			continue
		}
		if _, _, err := q.Redrive(t.Context(), "f", "a", []string{dl.Job.Id}); !errors.Is(err, deadletter.ErrPayloadNotKept) {
			t.Errorf("redrive of a dead letter without its payload: %v; want ErrPayloadNotKept", err)
		}
		break
	}
	page, err := q.RedriveAll(t.Context(), "f", "a", 0, 0, 100)
	if err != nil || len(page.Jobs) != 8-lean {
		t.Errorf("redrive of all of tenant a's = %d jobs, %v; want the %d with their payload", len(page.Jobs), err, 8-lean)
	}
	for _, id := range append(more, b...) {
		if job, _ := q.Get(t.Context(), id); job.GetPending() != "" {
			t.Errorf("job %s is parked (%s); the store had room", id, job.Pending)
		}
	}
}

// waitTenantLetters waits for tenant to have n dead letters of function f,
// and returns them with their payloads.
func waitTenantLetters(t *testing.T, q *buffer.Queue, tenant string, n int) []*sluicev1.DeadLetter {
	t.Helper()
	var page deadletter.Page
	buffertest.WaitForNoError(t, 15*time.Second, fmt.Sprintf("%d dead letters of tenant %s", n, tenant), func() error {
		var err error
		if page, err = q.DeadLetters(t.Context(), "f", tenant, 0, 100, true); err != nil {
			t.Fatal(err)
		}
		if len(page.Letters) != n {
			return fmt.Errorf("%d of them", len(page.Letters))
		}
		return nil
	})
	return page.Letters
}
