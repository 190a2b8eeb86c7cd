package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/keyed"
	"github.com/sluicehq/sluice/buffer/store"
)

// runKeyed runs q's release of keyed jobs until the test ends.
func runKeyed(t *testing.T, q *buffer.Queue) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() { q.RunKeyed(ctx, slog.New(slog.DiscardHandler)) }) //nolint:errcheck // nil at the end
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestKeyedJobsWaitForTheirKey: with key_concurrency 1, a key's second job
// is not delivered while its first is unfinished, whatever its tenant's
// or other keys' jobs do; it is delivered once the first ends, first in
// first out; the same key of another tenant is another key; a waiting job
// reads and cancels as any other, and a cancelled one lets the next go.
func TestKeyedJobsWaitForTheirKey(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{KeyConcurrency: map[string]int{"f": 1}})
	runKeyed(t, q)
	ctx := t.Context()
	submit := func(body, tenant, key string) *sluicev1.Job {
		t.Helper()
		job, err := q.Submit(ctx, "f", []byte(body), "text/plain", buffer.WithTenant(tenant), buffer.WithConcurrencyKey(key))
		if err != nil {
			t.Fatal(err)
		}
		return job
	}
	k1 := submit("k1", "acme", "k")
	k2 := submit("k2", "acme", "k")
	k3 := submit("k3", "acme", "k")
	other := submit("other", "acme", "other")
	theirs := submit("theirs", "globex", "k")

	got, err := q.Get(ctx, k2.Id)
	if err != nil || got.State != sluicev1.Job_QUEUED || got.ConcurrencyKey != "k" || got.Function != "f" || got.Tenant != "acme" {
		t.Fatalf("Get(waiting job) = %v, %v; want QUEUED, key k, f, acme", got, err)
	}
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var held []*buffer.Delivery
	buffertest.WaitFor(t, 10*time.Second, "the first job of each key delivered", func() bool {
		ds, err := fetch(t, c, 10, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ds...)
		return len(held) >= 3
	})
	ids := func(ds []*buffer.Delivery) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.JobID)
		}
		slices.Sort(out)
		return out
	}
	want := []string{k1.Id, other.Id, theirs.Id}
	slices.Sort(want)
	if ds, _ := fetch(t, c, 10, 300*time.Millisecond); len(ds) > 0 || !slices.Equal(ids(held), want) {
		t.Fatalf("delivered %v, then %v; want %v alone: one per key and tenant", ids(held), ids(ds), want)
	}
	if held[slices.IndexFunc(held, func(d *buffer.Delivery) bool { return d.JobID == k1.Id })].ConcurrencyKey != "k" {
		t.Error("a delivery does not carry its concurrency key")
	}
	if _, err := q.Cancel(ctx, k3.Id); err != nil {
		t.Fatalf("cancel a waiting job: %v", err)
	}

	finish := func(d *buffer.Delivery) {
		t.Helper()
		if _, err := d.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Succeed(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range held {
		if d.JobID == k1.Id {
			finish(d)
		}
	}
	var next []*buffer.Delivery
	buffertest.WaitFor(t, 10*time.Second, "k's second job delivered once its first finished", func() bool {
		ds, err := fetch(t, c, 10, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		next = append(next, ds...)
		return len(next) > 0
	})
	if len(next) != 1 || next[0].JobID != k2.Id {
		t.Fatalf("after k1: %v; want k2 alone", ids(next))
	}
	finish(next[0])
	// k3 was cancelled: it is delivered, found finished, and skipped.
	buffertest.WaitFor(t, 10*time.Second, "the cancelled k3 delivered", func() bool {
		ds, err := fetch(t, c, 10, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return false
		}
		if len(ds) != 1 || ds[0].JobID != k3.Id {
			t.Fatalf("delivered %d jobs, the first %s; want k3 alone", len(ds), ds[0].JobID)
		}
		if _, err := ds[0].Prepare(ctx); !errors.Is(err, buffer.ErrFinished) {
			t.Fatalf("Prepare(cancelled k3) = %v; want ErrFinished", err)
		}
		if err := ds[0].Skip(ctx); err != nil {
			t.Fatal(err)
		}
		return true
	})
	k4 := submit("k4", "acme", "k")
	buffertest.WaitFor(t, 10*time.Second, "k4 delivered: the cancelled job let its slot go", func() bool {
		ds, err := fetch(t, c, 10, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return len(ds) == 1 && ds[0].JobID == k4.Id
	})
}

// TestKeyedSubmitsStopAtTheJobStoresHighWater: a keyed submit is refused
// once the job store is past its high water mark, keeping the room above
// it for keyed jobs let go from waiting (each copied before its waiting
// message goes); an unkeyed submit still takes that room.
func TestKeyedSubmitsStopAtTheJobStoresHighWater(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{MaxJobs: 10, KeyConcurrency: map[string]int{"f": 1}})
	ctx := t.Context()
	for i := range 9 {
		if _, err := q.Submit(ctx, "f", []byte("x"), "", buffer.WithConcurrencyKey(fmt.Sprint("k", i))); err != nil {
			t.Fatalf("keyed submit %d of 9, below the high water mark (90%%): %v", i+1, err)
		}
	}
	// Submits read the stores' fill at most once a second.
	buffertest.WaitFor(t, 5*time.Second, "the stores read with the 9 jobs", func() bool {
		usage, err := q.Stores(ctx)
		return err == nil && slices.ContainsFunc(usage, func(u store.Usage) bool { return u.Name == store.Jobs && u.Msgs == 9 })
	})
	if _, err := q.Submit(ctx, "f", []byte("x"), "", buffer.WithConcurrencyKey("k-last")); !errors.Is(err, store.ErrHighWater) {
		t.Fatalf("keyed submit at 9 of 10 jobs: %v; want ErrHighWater", err)
	}
	if _, err := q.Submit(ctx, "f", []byte("x"), ""); err != nil {
		t.Fatalf("unkeyed submit past the high water mark, below max_jobs: %v", err)
	}
}

// TestRedrivenKeyedJobWaitsForItsKeyAgain: a keyed job redriven from the
// dead letters waits for its key like a new one: not delivered while
// another job of its key is in flight, delivered once that one ends.
func TestRedrivenKeyedJobWaitsForItsKeyAgain(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{KeyConcurrency: map[string]int{"f": 1}})
	runKeyed(t, q)
	ctx := t.Context()
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	next := nextDelivery(t, c)
	failed, err := q.Submit(ctx, "f", []byte("a"), "", buffer.WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	if err := next("the first job delivered").Fail(ctx, "broken", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Submit(ctx, "f", []byte("b"), "", buffer.WithConcurrencyKey("k")); err != nil {
		t.Fatal(err)
	}
	running := next("the second job delivered, the first having let its key go")
	if _, notFound, err := q.Redrive(ctx, "f", "", []string{failed.Id}); err != nil || len(notFound) > 0 {
		t.Fatalf("Redrive = %v, %v", notFound, err)
	}
	if ds, _ := fetch(t, c, 10, 500*time.Millisecond); len(ds) > 0 {
		t.Fatalf("the redriven job delivered while its key's other job runs")
	}
	if err := running.Succeed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if d := next("the redriven job delivered once its key had room"); d.JobID != failed.Id {
		t.Fatalf("delivered %s; want the redriven job", d.JobID)
	}
}

// nextDelivery returns a function that waits for c's next delivery, which
// must come alone, and prepares it; what says what it is, for the error.
func nextDelivery(t *testing.T, c *buffer.Consumer) func(what string) *buffer.Delivery {
	return func(what string) *buffer.Delivery {
		t.Helper()
		var got *buffer.Delivery
		buffertest.WaitFor(t, 10*time.Second, what, func() bool {
			ds, err := fetch(t, c, 10, 100*time.Millisecond)
			if err != nil || len(ds) > 1 {
				t.Fatalf("fetch: %d, %v; want one at most", len(ds), err)
			}
			if len(ds) == 1 {
				got = ds[0]
			}
			return got != nil
		})
		if _, err := got.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		return got
	}
}

// TestKeyedSubmitsShareTheirKeysWrites: each keyed submit writes its key's
// set, and concurrent ones are group-committed as submits are, rather
// than each waiting for an fsync of its own; a key whose set was purged
// (its marker still there) is held again.
func TestKeyedSubmitsShareTheirKeysWrites(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{KeyConcurrency: map[string]int{"f": 1}})
	ctx := t.Context()
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := q.Submit(ctx, "f", []byte("x"), "", buffer.WithConcurrencyKey(fmt.Sprint("k", i))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := q.BatchStats()["keys"]
	t.Logf("%d concurrent keyed submits: %d batches of keys' sets holding %d writes, the rest alone", n, st.Batches, st.Messages)
	if st.Batches == 0 || st.Messages < n/2 {
		t.Errorf("stats %+v: want most of %d concurrent keys' writes stored in batches", st, n)
	}

	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: n, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var got []*buffer.Delivery
	buffertest.WaitFor(t, 10*time.Second, "every keyed job delivered, each key having room", func() bool {
		ds, err := fetch(t, c, n, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
		return len(got) == n
	})
	for _, d := range got[:1] {
		if _, err := d.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Succeed(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	again, err := q.Submit(ctx, "f", []byte("y"), "", buffer.WithConcurrencyKey(got[0].ConcurrencyKey))
	if err != nil {
		t.Fatal(err)
	}
	buffertest.WaitFor(t, 10*time.Second, "a job of a key whose set was purged delivered", func() bool {
		ds, err := fetch(t, c, 1, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return len(ds) == 1 && ds[0].JobID == again.Id
	})
}

// TestEndingJobLooksForWaitingOnlyWhenSomeWait: a keyed job that ends
// asks the job stream for its key's waiting jobs only when its key's set
// says some wait; the job that waits is let go all the same, and once none
// wait, the next end asks nothing again.
func TestEndingJobLooksForWaitingOnlyWhenSomeWait(t *testing.T) {
	s := buffertest.Start(t, "")
	q, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{KeyConcurrency: map[string]int{"f": 1}})
	if err != nil {
		t.Fatal(err)
	}
	runKeyed(t, q)
	var lookups atomic.Int64
	spy := s.Connect(t)
	if _, err := spy.Subscribe("$JS.API.STREAM.MSG.GET."+buffer.StreamName, func(m *nats.Msg) {
		if strings.Contains(string(m.Data), keyed.Prefix) {
			lookups.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	next := nextDelivery(t, c)
	// lookupsDuring counts the lookups while f runs, and a moment after.
	lookupsDuring := func(f func()) int64 {
		t.Helper()
		before := lookups.Load()
		f()
		if err := spy.Flush(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		return lookups.Load() - before
	}
	succeed := func(d *buffer.Delivery) func() {
		return func() {
			if err := d.Succeed(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
	}

	if _, err := q.Submit(ctx, "f", []byte("a"), "", buffer.WithConcurrencyKey("k")); err != nil {
		t.Fatal(err)
	}
	first := next("the first job delivered")
	if n := lookupsDuring(succeed(first)); n != 0 {
		t.Errorf("a job whose key nobody waits for looked for waiting jobs %d times as it ended; want none", n)
	}

	if _, err := q.Submit(ctx, "f", []byte("b"), "", buffer.WithConcurrencyKey("k")); err != nil {
		t.Fatal(err)
	}
	held := next("the second job delivered")
	waiting, err := q.Submit(ctx, "f", []byte("c"), "", buffer.WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	if n := lookupsDuring(succeed(held)); n == 0 {
		t.Errorf("a job whose key a job waits for ended without looking for it")
	}
	released := next("the waiting job delivered once its key had room")
	if released.JobID != waiting.Id {
		t.Fatalf("delivered %s; want the waiting job %s", released.JobID, waiting.Id)
	}
	if n := lookupsDuring(succeed(released)); n != 0 {
		t.Errorf("the last waiting job, let go, looked for waiting jobs %d times as it ended; want none", n)
	}
}
