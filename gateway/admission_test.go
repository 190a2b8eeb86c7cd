package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// fakeJobs is a job store in memory for tenant acme's submits: Submit
// stores nothing, and calls beforeReturn, if set, before it returns the
// new job.
type fakeJobs struct {
	Enqueuer
	n            atomic.Int64
	beforeReturn func(job *sluicev1.Job)
}

func (f *fakeJobs) Submit(_ context.Context, function string, _ []byte, _ string, _ ...buffer.SubmitOption) (*sluicev1.Job, error) {
	job := &sluicev1.Job{Id: fmt.Sprintf("JOB%023d", f.n.Add(1)), Function: function, State: sluicev1.Job_QUEUED, Tenant: "acme"}
	if f.beforeReturn != nil {
		f.beforeReturn(job)
	}
	return job, nil
}

// fakeWatcher hands the gateway's watch callback to the test.
type fakeWatcher struct {
	mu      sync.Mutex
	changed func(job *sluicev1.Job, rev uint64)
	rev     uint64
}

func (w *fakeWatcher) WatchJobs(_ context.Context, changed func(job *sluicev1.Job, rev uint64)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.changed = changed
	return nil
}

// finish reports the job's terminal state, as the watch of job states
// would once dispatch wrote it.
func (w *fakeWatcher) finish(job *sluicev1.Job) {
	w.mu.Lock()
	w.rev++
	changed, rev := w.changed, w.rev
	w.mu.Unlock()
	done := &sluicev1.Job{Id: job.Id, Function: job.Function, Tenant: job.Tenant, State: sluicev1.Job_SUCCEEDED}
	changed(done, rev)
}

// fakeDispatch answers FunctionLoad with what load says.
type fakeDispatch struct {
	Dispatch
	mu   sync.Mutex
	load func() (buffer.Load, error)
}

func (d *fakeDispatch) FunctionLoad(context.Context, string) (buffer.Load, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.load()
}

func (d *fakeDispatch) set(load func() (buffer.Load, error)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.load = load
}

// testService is a service over fakes, with function "f" and tenant
// "acme", and the context of a request from acme.
func testService(t *testing.T, jobs Enqueuer, d Dispatch, w Watcher, f Function, acme Ingress) (*Service, context.Context) {
	t.Helper()
	f.Name = "f"
	cfg := Config{Jobs: jobs, Watcher: w, Functions: []Function{f},
		Tenants: []Tenant{{Name: "acme", KeyHashes: [][32]byte{{1}}, Ingress: acme}}}
	if d != nil {
		cfg.Dispatch = d
	}
	s, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Watch(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, context.WithValue(t.Context(), tenantKey{}, s.tenantsByKey[[32]byte{1}])
}

func submitF(ctx context.Context, s *Service) (*sluicev1.Job, error) {
	resp, err := s.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Function: "f", Payload: &httpbody.HttpBody{Data: []byte("{}")}})
	return resp.GetJob(), err
}

func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// A job can finish before the submit that stored it returns: dispatch
// pulls it as soon as JetStream has it. Its finish must still free its
// place in the tenant's max_queued (#19 item 10).
func TestTenantQueuedCountDoesNotLeakWhenAJobFinishesBeforeItsSubmitReturns(t *testing.T) {
	w := &fakeWatcher{}
	jobs := &fakeJobs{}
	jobs.beforeReturn = w.finish // done before the submitter hears it was stored
	s, ctx := testService(t, jobs, nil, w, Function{}, Ingress{MaxQueued: 2})
	for i := range 10 {
		if _, err := submitF(ctx, s); err != nil {
			t.Fatalf("submit %d, with every earlier job finished: %v", i+1, err)
		}
	}
}

// The tenant's max_queued holds however many submits come at once: the
// place is taken before the job is stored, not after (#19 item 10).
func TestTenantMaxQueuedHoldsForConcurrentSubmits(t *testing.T) {
	w := &fakeWatcher{}
	jobs := &fakeJobs{}
	const n = 20
	var entered sync.WaitGroup
	entered.Add(n)
	release := make(chan struct{})
	jobs.beforeReturn = func(*sluicev1.Job) {
		entered.Done()
		<-release
	}
	s, ctx := testService(t, jobs, nil, w, Function{}, Ingress{MaxQueued: 2})
	var accepted, refused atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := submitF(ctx, s)
			switch status.Code(err) {
			case codes.OK:
				accepted.Add(1)
			case codes.ResourceExhausted:
				refused.Add(1)
				entered.Done() // refused before it was stored
			default:
				t.Errorf("submit: %v", err)
			}
		})
	}
	entered.Wait()
	close(release)
	wg.Wait()
	jobs.beforeReturn = nil
	if accepted.Load() != 2 || refused.Load() != n-2 {
		t.Errorf("%d submits at once with max_queued 2: %d accepted, %d refused; want 2 and %d", n, accepted.Load(), refused.Load(), n-2)
	}
	// A finished job frees its place; a failed submit takes none.
	if _, err := submitF(ctx, s); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("submit with 2 queued: %v; want RESOURCE_EXHAUSTED", err)
	}
	w.finish(&sluicev1.Job{Id: fmt.Sprintf("JOB%023d", 1), Function: "f", Tenant: "acme"})
	if _, err := submitF(ctx, s); err != nil {
		t.Fatalf("submit after one of 2 finished: %v", err)
	}
}

var errLoadRead = errors.New("consumer info: timeout")

// A function's max_queued is enforced when its load cannot be read: with
// the last load read within maxLoadAge and the submits admitted since, and
// with 503 and Retry-After once none is that recent (#19 item 11).
func TestFunctionMaxQueuedWhenItsLoadCannotBeRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDispatch{load: func() (buffer.Load, error) { return buffer.Load{Backlog: 1}, nil }}
		s, ctx := testService(t, &fakeJobs{}, d, &fakeWatcher{}, Function{Ingress: Ingress{MaxQueued: 3}}, Ingress{})
		if _, err := submitF(ctx, s); err != nil {
			t.Fatalf("submit with 1 of 3 queued: %v", err)
		}
		d.set(func() (buffer.Load, error) { return buffer.Load{}, errLoadRead })
		time.Sleep(2 * loadTTL) // the load is read again, and fails
		if _, err := submitF(ctx, s); err != nil {
			t.Fatalf("submit with 2 of 3 queued (the load read %s ago, plus one since): %v", 2*loadTTL, err)
		}
		time.Sleep(2 * loadTTL)
		_, err := submitF(ctx, s)
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("submit with 3 of 3 queued, by the last load read and the submits since: %v; want RESOURCE_EXHAUSTED", err)
		}
		time.Sleep(maxLoadAge)
		_, err = submitF(ctx, s)
		if status.Code(err) != codes.Unavailable || retryDelay(err) < time.Second {
			t.Fatalf("submit with no load read within %s: %v (retry after %s); want UNAVAILABLE with a Retry-After", maxLoadAge, err, retryDelay(err))
		}
		// A function without max_queued needs no load to admit.
		d.set(func() (buffer.Load, error) { return buffer.Load{Backlog: 1}, nil })
		time.Sleep(2 * loadTTL)
		if _, err := submitF(ctx, s); err != nil {
			t.Fatalf("submit once the load reads again, 1 of 3 queued: %v", err)
		}
	})
}

// Before dispatch has started for a function (its consumer does not exist
// yet) its max_queued counts the submits this process admitted (#19 item
// 11).
func TestFunctionMaxQueuedBeforeDispatchStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDispatch{load: func() (buffer.Load, error) { return buffer.Load{}, buffer.ErrNotFound }}
		s, ctx := testService(t, &fakeJobs{}, d, &fakeWatcher{}, Function{Ingress: Ingress{MaxQueued: 2}}, Ingress{})
		for i := range 2 {
			if _, err := submitF(ctx, s); err != nil {
				t.Fatalf("submit %d of 2: %v", i+1, err)
			}
			time.Sleep(2 * loadTTL)
		}
		if _, err := submitF(ctx, s); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("third submit with max_queued 2, before dispatch started: %v; want RESOURCE_EXHAUSTED", err)
		}
	})
}

// Finishes kept for submits in flight are dropped once no submit that
// began before them is in flight: their memory is bounded.
func TestTenantCountsForgetFinishesNoSubmitCanBind(t *testing.T) {
	var tc tenantCounts
	r1, _, _ := tc.reserve("acme", 10)
	tc.finished("A", "acme") // another process's job, or r1's
	r2, _, _ := tc.reserve("acme", 10)
	tc.finished("B", "acme")
	tc.accepted(r1, "C") // A finished before r2 began: it cannot be r2's job
	c := tc.by["acme"]
	if _, ok := c.ended["A"]; ok || len(c.ended) != 1 {
		t.Errorf("after the first submit returned, kept finishes %v; want only B, which the second may still bind", c.ended)
	}
	tc.accepted(r2, "B") // B finished before its submit returned
	if n := tc.queued("acme"); n != 1 || len(c.ended) != 0 || len(c.endedOrder) != 0 || len(c.inFlight) != 0 {
		t.Errorf("queued %d, kept %v %v, in flight %v; want 1 (C) and nothing kept", n, c.ended, c.endedOrder, c.inFlight)
	}
	tc.finished("C", "acme")
	if n := tc.queued("acme"); n != 0 {
		t.Errorf("queued %d after C finished; want 0", n)
	}
}
