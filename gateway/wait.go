package gateway

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// Watcher reports every job state written, by any process.
type Watcher interface {
	// WatchJobs calls changed with each job state written from now on,
	// until ctx ends.
	WatchJobs(ctx context.Context, changed func(*sluicev1.Job)) error
}

var _ Watcher = (*buffer.Queue)(nil)

// MaxWait caps how long one request may wait for a job to finish.
const MaxWait = 60 * time.Second

// waiters lets requests wait for jobs to finish. One watch of all job states
// feeds it (see [Service.Watch]), so a waiting request costs a map entry,
// not a poll. It is safe for concurrent use.
type waiters struct {
	mu   sync.Mutex
	byID map[string]map[chan *sluicev1.Job]struct{}
}

func (w *waiters) add(id string) (<-chan *sluicev1.Job, func()) {
	ch := make(chan *sluicev1.Job, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID == nil {
		w.byID = make(map[string]map[chan *sluicev1.Job]struct{})
	}
	if w.byID[id] == nil {
		w.byID[id] = make(map[chan *sluicev1.Job]struct{})
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

// notify hands a job's new state to whoever waits for it; a waiter that
// has not taken the previous one gets the newer in its place.
func (w *waiters) notify(job *sluicev1.Job) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.byID[job.GetId()] {
		select {
		case <-ch:
		default:
		}
		ch <- job
	}
}

// Watch starts the one watch of job states that waiting requests rely on;
// it runs until ctx ends. Without it, a wait answers at once.
func (s *Service) Watch(ctx context.Context) error {
	if s.watcher == nil {
		return nil
	}
	if err := s.watcher.WatchJobs(ctx, s.waiters.notify); err != nil {
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
	changes, stop := s.waiters.add(id)
	defer stop()
	job, err := s.getJob(ctx, id)
	if err != nil || buffer.Terminal(job.State) {
		return job, err
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case j := <-changes:
			if buffer.Terminal(j.State) {
				return j, nil
			}
		case <-timer.C:
			return s.getJob(ctx, id)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}
