package gateway

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// Watcher reports every job state written, by any process.
type Watcher interface {
	// WatchJobs calls changed with each job state written from now on, and
	// its revision, until ctx ends.
	WatchJobs(ctx context.Context, changed func(job *sluicev1.Job, rev uint64)) error
}

// change is one new state of a job and its revision.
type change struct {
	job *sluicev1.Job
	rev uint64
}

var _ Watcher = (*buffer.Queue)(nil)

// MaxWait caps how long one request may wait for a job to finish.
const MaxWait = 60 * time.Second

// waiters lets requests wait for jobs to finish. One watch of all job states
// feeds it (see [Service.Watch]), so a waiting request costs a map entry,
// not a poll. It is safe for concurrent use.
type waiters struct {
	mu   sync.Mutex
	byID map[string]map[chan change]struct{}
}

// add registers a waiter for the job's changes, keeping up to keep of
// them; a waiter that falls further behind loses the oldest.
func (w *waiters) add(id string, keep int) (<-chan change, func()) {
	ch := make(chan change, keep)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID == nil {
		w.byID = make(map[string]map[chan change]struct{})
	}
	if w.byID[id] == nil {
		w.byID[id] = make(map[chan change]struct{})
	}
	w.byID[id][ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.byID[id], ch)
		if len(w.byID[id]) == 0 {
			delete(w.byID, id)
		}
	}
}

// notify hands a job's new state to whoever waits for it, dropping a
// waiter's oldest unread change when it has no room.
func (w *waiters) notify(job *sluicev1.Job, rev uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.byID[job.GetId()] {
		for {
			select {
			case ch <- change{job, rev}:
			default:
				select {
				case <-ch:
				default:
				}
				continue
			}
			break
		}
	}
}

// Watch starts the one watch of job states that waiting requests rely on;
// it runs until ctx ends. Without it, a wait answers at once.
func (s *Service) Watch(ctx context.Context) error {
	if s.watcher == nil {
		return nil
	}
	changed := func(job *sluicev1.Job, rev uint64) {
		s.admission.observe(job)
		s.waiters.notify(job, rev)
	}
	if err := s.watcher.WatchJobs(ctx, changed); err != nil {
		return err
	}
	s.watching.Store(true)
	return nil
}

// waitFinished returns the job once it is finished, or as it stands after
// d (capped at MaxWait), whichever comes first.
func (s *Service) waitFinished(ctx context.Context, id string, d time.Duration) (*sluicev1.Job, error) {
	d = min(d, MaxWait)
	if d <= 0 || !s.watching.Load() {
		return s.getJob(ctx, id)
	}
	// Listen before reading, so that a change in between is not missed.
	changes, stop := s.waiters.add(id, 1)
	defer stop()
	job, err := s.getJob(ctx, id)
	if err != nil || buffer.Terminal(job.State) {
		return job, err
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case c := <-changes:
			if buffer.Terminal(c.job.State) {
				return c.job, nil
			}
		case <-timer.C:
			return s.getJob(ctx, id)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// WatchJob streams the job's state now and at every change until it
// finishes.
func (s *Service) WatchJob(req *sluicev1.WatchJobRequest, stream sluicev1.JobService_WatchJobServer) error {
	ctx := stream.Context()
	if !s.watching.Load() {
		return status.Error(codes.Unavailable, "watching jobs is not available on this gateway")
	}
	release, err := s.openWatch(ctx)
	if err != nil {
		return err
	}
	defer release()
	changes, stop := s.waiters.add(req.GetId(), 16)
	defer stop()
	job, sent, err := s.jobs.GetRevision(ctx, req.GetId())
	if err == nil && job.GetTenant() != tenantName(ctx) {
		err = buffer.ErrNotFound // another tenant's
	}
	if err != nil {
		return s.jobError(ctx, req.GetId(), err)
	}
	for {
		if err := stream.Send(&sluicev1.WatchJobResponse{Job: job}); err != nil {
			return err
		}
		if buffer.Terminal(job.State) {
			return nil
		}
		// Changes from before the state just sent may still be queued:
		// only a later revision moves the watcher on.
		for next := false; !next; {
			select {
			case c := <-changes:
				if c.rev > sent {
					job, sent, next = c.job, c.rev, true
				}
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
}
