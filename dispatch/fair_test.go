package dispatch_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/dispatch/target"
)

// laneInvoker invokes a simulated function (fnsim, each job taking took)
// and records, by the group its job was put in (tenant or priority), how
// many started and finished, and when each job started.
type laneInvoker struct {
	inner   dispatch.Invoker
	sim     *fnsim.Function
	mu      sync.Mutex
	started map[string]int
	done    map[string]int
	startAt map[string]time.Time
}

func newLaneInvoker(t *testing.T, took time.Duration) *laneInvoker {
	sim := fnsim.New(fnsim.Config{Duration: took})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &laneInvoker{
		inner: &target.HTTP{URL: srv.URL}, sim: sim,
		started: map[string]int{}, done: map[string]int{}, startAt: map[string]time.Time{},
	}
}

func (i *laneInvoker) Invoke(ctx context.Context, inv *target.Invocation) (*target.Response, error) {
	group := string(inv.Payload)
	i.mu.Lock()
	i.started[group]++
	i.startAt[inv.JobID] = time.Now()
	i.mu.Unlock()
	resp, err := i.inner.Invoke(ctx, inv)
	if err == nil && resp.Status == 200 {
		i.mu.Lock()
		i.done[group]++
		i.mu.Unlock()
	}
	return resp, err
}

func (i *laneInvoker) counts(group string) (started, done int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.started[group], i.done[group]
}

// submitGroup stores n jobs for function whose payload names their group.
func submitGroup(t *testing.T, q *buffer.Queue, function, group string, n int, opts ...buffer.SubmitOption) []string {
	t.Helper()
	ids := make([]string, n)
	var g errgroup.Group
	g.SetLimit(64)
	for i := range ids {
		g.Go(func() error {
			job, err := q.Submit(t.Context(), function, []byte(group), "text/plain", opts...)
			if err != nil {
				return err
			}
			ids[i] = job.Id
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func fairLanes(tenants ...string) []buffer.Lane {
	var out []buffer.Lane
	for _, t := range append([]string{""}, tenants...) {
		for _, p := range []sluicev1.Priority{sluicev1.Priority_HIGH, sluicev1.Priority_NORMAL, sluicev1.Priority_LOW} {
			out = append(out, buffer.Lane{Tenant: t, Priority: p})
		}
	}
	return out
}

// TestTenantFairness: tenant A has a backlog of 5,000 jobs when tenant B
// submits 50 to the same fair function; all of B's finish before A's
// backlog is half drained (in fact after a small part of it).
func TestTenantFairness(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	inv := newLaneInvoker(t, 50*time.Millisecond)
	// Stored before dispatch starts, as a backlog that built up.
	submitGroup(t, q, "shared", "a", 5000, buffer.WithTenant("a"))
	startPooled(t, q, []dispatch.Function{{
		Name: "shared", Invoker: inv, Concurrency: 20, Timeout: 5 * time.Second, Lanes: fairLanes("a", "b"),
	}}, nil)
	buffertest.WaitFor(t, 30*time.Second, "20 of tenant a's jobs started", func() bool {
		started, _ := inv.counts("a")
		return started >= 20
	})
	_, aDoneBefore := inv.counts("a")
	backlog := 5000 - aDoneBefore
	submittedAt := time.Now()
	bIDs := submitGroup(t, q, "shared", "b", 50, buffer.WithTenant("b"))
	buffertest.WaitFor(t, 30*time.Second, "all 50 of tenant b's jobs finished", func() bool {
		_, done := inv.counts("b")
		return done >= 50
	})
	took := time.Since(submittedAt)
	_, aDone := inv.counts("a")
	drained := aDone - aDoneBefore
	t.Logf("B's 50 jobs all finished %v after they were submitted; meanwhile A drained %d of its backlog of %d (%.1f%%)",
		took.Round(time.Millisecond), drained, backlog, 100*float64(drained)/float64(backlog))
	if st := inv.sim.Stats(); st.MaxConcurrent > 20 {
		t.Errorf("fnsim saw %d invocations at once, over the function's 20", st.MaxConcurrent)
	}
	if drained >= backlog/2 {
		t.Errorf("A drained %d of its backlog of %d before B's 50 jobs finished, want less than half", drained, backlog)
	}
	for _, id := range bIDs {
		if job := waitJob(t, q, id, 10*time.Second); job.State != sluicev1.Job_SUCCEEDED || job.Tenant != "b" {
			t.Fatalf("b's job %v", job)
		}
	}
}

// TestHighPriorityOvertakesBacklog: high-priority jobs submitted behind a
// backlog of normal ones start before the backlog drains.
func TestHighPriorityOvertakesBacklog(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	inv := newLaneInvoker(t, 50*time.Millisecond)
	submitGroup(t, q, "prio", "normal", 1000)
	startPooled(t, q, []dispatch.Function{{
		Name: "prio", Invoker: inv, Concurrency: 10, Timeout: 5 * time.Second, Lanes: fairLanes(),
	}}, nil)
	buffertest.WaitFor(t, 30*time.Second, "10 normal jobs started", func() bool {
		started, _ := inv.counts("normal")
		return started >= 10
	})
	high := submitGroup(t, q, "prio", "high", 20, buffer.WithPriority(sluicev1.Priority_HIGH))
	buffertest.WaitFor(t, 30*time.Second, "all 20 high-priority jobs started", func() bool {
		started, _ := inv.counts("high")
		return started >= 20
	})
	normalStarted, _ := inv.counts("normal")
	t.Logf("all 20 high-priority jobs started while %d of the 1000 normal ones had started (%d still waiting)", normalStarted, 1000-normalStarted)
	if st := inv.sim.Stats(); st.MaxConcurrent > 10 {
		t.Errorf("fnsim saw %d invocations at once, over the function's 10", st.MaxConcurrent)
	}
	if normalStarted >= 1000 {
		t.Errorf("the normal backlog drained before the high-priority jobs started")
	}
	if normalStarted > 200 {
		t.Errorf("%d normal jobs started before the last high one, want them to overtake at once", normalStarted)
	}
	job := waitJob(t, q, high[0], 10*time.Second)
	if job.Priority != sluicev1.Priority_HIGH {
		t.Errorf("job priority = %v, want HIGH", job.Priority)
	}
}

// TestLowPriorityAges: with a steady supply of high-priority work, a low
// one still starts once it waited past the aging period.
func TestLowPriorityAges(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	inv := newLaneInvoker(t, 40*time.Millisecond)
	submitGroup(t, q, "aging", "high", 1500, buffer.WithPriority(sluicev1.Priority_HIGH))
	submitGroup(t, q, "aging", "low", 5, buffer.WithPriority(sluicev1.Priority_LOW))
	startPooled(t, q, []dispatch.Function{{
		Name: "aging", Invoker: inv, Concurrency: 10, Timeout: 5 * time.Second, Lanes: fairLanes(),
		PriorityAging: 500 * time.Millisecond,
	}}, nil)
	buffertest.WaitFor(t, 30*time.Second, "all 5 low-priority jobs started", func() bool {
		started, _ := inv.counts("low")
		return started >= 5
	})
	highStarted, _ := inv.counts("high")
	t.Logf("the 5 low-priority jobs started with %d of 1500 high ones started", highStarted)
	if highStarted >= 1500 {
		t.Errorf("low-priority jobs waited until every high one had started")
	}
}
