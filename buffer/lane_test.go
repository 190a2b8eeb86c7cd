package buffer_test

import (
	"fmt"
	"maps"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

// TestLanes: a job with a tenant or a priority is read by its ID and
// cancelled like any other; a function's own consumer pulls every lane in
// the order the jobs came, a lane's consumer only its lane.
func TestLanes(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	plain, err := q.Submit(ctx, "f", []byte("plain"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	high, err := q.Submit(ctx, "f", []byte("high"), "text/plain", buffer.WithTenant("acme"), buffer.WithPriority(sluicev1.Priority_HIGH))
	if err != nil {
		t.Fatal(err)
	}
	low, err := q.Submit(ctx, "f", []byte("low"), "text/plain", buffer.WithPriority(sluicev1.Priority_LOW))
	if err != nil {
		t.Fatal(err)
	}
	got, err := q.Get(ctx, high.Id)
	if err != nil || got.State != sluicev1.Job_QUEUED || got.Tenant != "acme" || got.Priority != sluicev1.Priority_HIGH || got.Function != "f" {
		t.Fatalf("Get(high) = %v, %v; want QUEUED, acme's, HIGH, for f", got, err)
	}

	// One lane's consumer.
	lane := buffer.Lane{Tenant: "acme", Priority: sluicev1.Priority_HIGH}
	lc, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 5, AckWait: time.Minute, Lane: &lane})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := fetch(t, lc, 5, 500*time.Millisecond)
	if err != nil || len(ds) != 1 || ds[0].JobID != high.Id || ds[0].Priority != sluicev1.Priority_HIGH || ds[0].Function != "f" {
		t.Fatalf("lane fetch = %d deliveries, %v; want the high job alone", len(ds), err)
	}

	// The function's own consumer: all three, as they came.
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 5, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ds, err = fetch(t, c, 5, 500*time.Millisecond)
	if err != nil || len(ds) != 3 || ds[0].JobID != plain.Id || ds[1].JobID != high.Id || ds[2].JobID != low.Id {
		t.Fatalf("function fetch = %d deliveries, %v; want all three in order", len(ds), err)
	}

	cancelled, err := q.Cancel(ctx, low.Id)
	if err != nil || cancelled.State != sluicev1.Job_CANCELLED || cancelled.Priority != sluicev1.Priority_LOW {
		t.Fatalf("Cancel(low) = %v, %v", cancelled, err)
	}
}

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]sluicev1.Priority{
		"": sluicev1.Priority_NORMAL, "normal": sluicev1.Priority_NORMAL, "HIGH": sluicev1.Priority_HIGH, "low": sluicev1.Priority_LOW,
	} {
		if got, ok := buffer.ParsePriority(in); !ok || got != want {
			t.Errorf("ParsePriority(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	if _, ok := buffer.ParsePriority("urgent"); ok {
		t.Error("ParsePriority(urgent) is ok")
	}
}

// TestPooledConsumerLifecycle: a pooled consumer starts paused and
// delivers nothing until its cap is set; a function taken out of its pool
// gets its consumer back unpaused.
func TestPooledConsumerLifecycle(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	if _, err := q.Submit(ctx, "f", []byte("x"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 5, AckWait: time.Minute, Pooled: true})
	if err != nil {
		t.Fatal(err)
	}
	load, err := c.Load(ctx)
	if err != nil || !load.Paused || load.Backlog != 1 {
		t.Fatalf("new pooled consumer: load %+v, %v; want paused with the job waiting", load, err)
	}
	if ds, err := fetch(t, c, 1, 300*time.Millisecond); err != nil || len(ds) != 0 {
		t.Fatalf("paused consumer delivered %d, %v", len(ds), err)
	}
	if err := c.SetPooledCap(ctx, 2, load); err != nil {
		t.Fatal(err)
	}
	// It resumes a moment later.
	buffertest.WaitForNoError(t, 5*time.Second, "resumed with a cap of 2 after SetPooledCap(2)", func() error {
		if load, err = c.Load(ctx); err != nil || load.Paused || load.MaxInFlight != 2 {
			return fmt.Errorf("load %+v, %v", load, err)
		}
		return nil
	})
	if err := c.SetPooledCap(ctx, 0, load); err != nil {
		t.Fatal(err)
	}
	// Out of the pool: the consumer is made as configured, and resumed.
	c2, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 3, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if load, err = c2.Load(ctx); err != nil || load.Paused || load.MaxInFlight != 3 {
		t.Fatalf("unpooled again: %+v, %v; want resumed with a cap of 3", load, err)
	}
	if ds, err := fetch(t, c2, 1, 2*time.Second); err != nil || len(ds) != 1 {
		t.Fatalf("unpooled consumer delivered %d, %v; want the job", len(ds), err)
	}
}

// TestFunctionJoiningAPoolIsPausedUntilItsLeaderCounts: a function's consumer
// made before it joined a pool (its cap its window) is paused when a pooled
// process binds to it, so it delivers nothing the pool's leader has not
// counted.
func TestFunctionJoiningAPoolIsPausedUntilItsLeaderCounts(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	if _, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 50, AckWait: time.Minute}); err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 50, AckWait: time.Minute, Pooled: true})
	if err != nil {
		t.Fatal(err)
	}
	if load, err := c.Load(ctx); err != nil || !load.Paused {
		t.Fatalf("joined a pool: %+v, %v; want paused", load, err)
	}
	// Bound again by another process: left as the leader set it.
	if err := c.SetPooledCap(ctx, 4, buffer.Load{MaxInFlight: 50, Paused: true}); err != nil {
		t.Fatal(err)
	}
	c2, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 50, AckWait: time.Minute, Pooled: true})
	if err != nil {
		t.Fatal(err)
	}
	// The leader's resume takes effect a moment later.
	buffertest.WaitForNoError(t, 5*time.Second, "bound again: the leader's cap of 4, running", func() error {
		if load, err := c2.Load(ctx); err != nil || load.Paused || load.MaxInFlight != 4 {
			return fmt.Errorf("load %+v, %v", load, err)
		}
		return nil
	})
}

// FunctionConsumers counts a function's own consumer and its lanes', and
// no other function's.
func TestFunctionConsumers(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	count := func(function string, want int) {
		t.Helper()
		if n, err := q.FunctionConsumers(ctx, function); err != nil || n != want {
			t.Fatalf("FunctionConsumers(%s) = %d, %v; want %d", function, n, err, want)
		}
	}
	count("f", 0)
	for _, lane := range []*buffer.Lane{{}, {Tenant: "acme"}, {Tenant: "bolt", Priority: sluicev1.Priority_LOW}} {
		if _, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 1, AckWait: time.Minute, Lane: lane}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "ff", MaxInFlight: 1, AckWait: time.Minute}); err != nil {
		t.Fatal(err)
	}
	count("f", 3)
	count("ff", 1)
}

// TestLaneConsumersAndLanesHolding: which lanes of a function have a
// consumer, and which hold a job, each read with one request, by Key;
// another function's are not counted.
func TestLaneConsumersAndLanesHolding(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	bolt := buffer.Lane{Tenant: "bolt", Priority: sluicev1.Priority_LOW}
	for _, lane := range []*buffer.Lane{{}, &bolt} {
		if _, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 1, AckWait: time.Minute, Lane: lane}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "ff", MaxInFlight: 1, AckWait: time.Minute, Lane: &buffer.Lane{Tenant: "acme"}}); err != nil {
		t.Fatal(err)
	}
	got, err := q.LaneConsumers(ctx, "f")
	if want := map[string]bool{buffer.Lane{}.Key(): true, bolt.Key(): true}; err != nil || !maps.Equal(got, want) {
		t.Errorf("LaneConsumers(f) = %v, %v; want %v", got, err, want)
	}
	for _, o := range [][]buffer.SubmitOption{
		{buffer.WithTenant("acme"), buffer.WithPriority(sluicev1.Priority_HIGH)},
		{buffer.WithTenant("acme"), buffer.WithPriority(sluicev1.Priority_HIGH)},
		{buffer.WithPriority(sluicev1.Priority_LOW)},
		nil, // the default lane's: not among them
	} {
		if _, err := q.Submit(ctx, "f", []byte("x"), "", o...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Submit(ctx, "ff", []byte("x"), "", buffer.WithTenant("bolt")); err != nil {
		t.Fatal(err)
	}
	got, err = q.LanesHolding(ctx, "f")
	want := map[string]bool{
		buffer.Lane{Tenant: "acme", Priority: sluicev1.Priority_HIGH}.Key(): true,
		buffer.Lane{Priority: sluicev1.Priority_LOW}.Key():                  true,
	}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("LanesHolding(f) = %v, %v; want %v", got, err, want)
	}
}
