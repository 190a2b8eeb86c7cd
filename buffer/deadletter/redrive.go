package deadletter

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/jobid"
)

// Requeue queues a dead letter's job again, its state first and then its
// message, and returns the job queued. When the job is no longer
// dead-lettered (it finished otherwise since: a dead letter left behind by
// a crash), it changes nothing and returns the job as it stands, stale.
type Requeue func(ctx context.Context, dl *sluicev1.DeadLetter) (job *sluicev1.Job, stale bool, err error)

// Redrive queues the dead-lettered jobs of function and tenant with the
// given IDs again, one at a time, with requeue. It returns the jobs queued
// again, and the IDs that are not among the function's dead letters.
// Each letter is removed once its job is queued, or found stale: a crash
// in between leaves it in place, and redriving it again finishes the work.
func (s *Store) Redrive(ctx context.Context, function, tenant string, ids []string, requeue Requeue) (jobs []*sluicev1.Job, notFound []string, err error) {
	for _, id := range ids {
		sl, err := s.get(ctx, function, tenant, id)
		if errors.Is(err, jobid.ErrNotFound) || errors.Is(err, jobid.ErrInvalid) {
			notFound = append(notFound, id)
			continue
		}
		if err != nil {
			return jobs, notFound, err
		}
		if lean(sl.DeadLetter) {
			return jobs, notFound, fmt.Errorf("%w: %s", ErrPayloadNotKept, sl.Job.Id)
		}
		job, err := s.redriveOne(ctx, sl, requeue)
		if err != nil {
			return jobs, notFound, err
		}
		jobs = append(jobs, job)
	}
	return jobs, notFound, nil
}

// RedrivePage is what one call of a redrive of all did.
type RedrivePage struct {
	// Jobs are the jobs queued again, as [Store.Redrive] returns them.
	Jobs []*sluicev1.Job
	// Next is where the next call goes on; 0 when none are left.
	Next uint64
	// Until is the last stream position the redrive covers: the dead
	// letters there were when it started. Pass it to every call after the
	// first.
	Until uint64
}

// RedriveAll queues the dead-lettered jobs of function and tenant again,
// as [Store.Redrive] does, oldest first, up to limit of them: those at
// stream position from (0 to start) up to until (0 to start: the stream's
// last position now, which the page returns). It reads and redrives one
// letter at a time, holding two payloads at most. Call it again with the
// page's Next and Until while Next is not 0.
func (s *Store) RedriveAll(ctx context.Context, function, tenant string, from, until uint64, limit int, requeue Requeue) (RedrivePage, error) {
	if until == 0 {
		info, err := s.stream.Info(ctx)
		if err != nil {
			return RedrivePage{}, fmt.Errorf("buffer: dead letters: %w", err)
		}
		if until = info.State.LastSeq; until == 0 {
			return RedrivePage{}, nil // none was ever stored
		}
	}
	page := RedrivePage{Until: until}
	err := s.each(ctx, function, tenant, from, until, func(sl stored) (bool, error) {
		if len(page.Jobs) == limit {
			page.Next = sl.seq // there is more
			return false, nil
		}
		if lean(sl.DeadLetter) {
			return true, nil // nothing to run: it stays, to be read and discarded
		}
		job, err := s.redriveOne(ctx, sl, requeue)
		if err != nil {
			return false, err
		}
		page.Jobs = append(page.Jobs, job)
		return true, nil
	})
	return page, err
}

// get is the dead letter of the job, if it is the tenant's: another
// tenant's is [jobid.ErrNotFound], as if it were not there.
func (s *Store) get(ctx context.Context, function, tenant, id string) (stored, error) {
	if !jobid.Valid(id) {
		return stored{}, jobid.ErrInvalid
	}
	msg, err := s.last(ctx, Subject(function, tenant, id), legacySubject(function, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return stored{}, jobid.ErrNotFound
	}
	if err != nil {
		return stored{}, fmt.Errorf("buffer: read dead letter %s: %w", id, err)
	}
	dl, err := decode(msg)
	if err != nil {
		return stored{}, err
	}
	if dl.Job.Tenant != tenant {
		return stored{}, jobid.ErrNotFound
	}
	return stored{dl, msg.Sequence}, nil
}

// redriveOne queues one dead letter's job again with requeue, and then
// removes the letter.
func (s *Store) redriveOne(ctx context.Context, sl stored, requeue Requeue) (*sluicev1.Job, error) {
	job, stale, err := requeue(ctx, sl.DeadLetter)
	if err != nil {
		return nil, err
	}
	if err := s.stream.DeleteMsg(ctx, sl.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		if stale {
			return nil, fmt.Errorf("buffer: discard stale dead letter %s: %w", sl.Job.Id, err)
		}
		return nil, fmt.Errorf("buffer: remove redriven dead letter %s: %w", sl.Job.Id, err)
	}
	return job, nil
}

// Delete discards the job's dead letter for good. forget, called first,
// takes the dead letter out of the job's state: a redelivered message of
// the job then finds it no longer dead-lettered and does not publish the
// dead letter again. It returns [jobid.ErrNotFound] when the function has
// no dead letter for that ID of the tenant's.
func (s *Store) Delete(ctx context.Context, function, tenant, id string, forget func(ctx context.Context, id string) error) error {
	sl, err := s.get(ctx, function, tenant, id)
	if err != nil {
		return err
	}
	if err := forget(ctx, id); err != nil {
		return err
	}
	if err := s.stream.DeleteMsg(ctx, sl.seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return jobid.ErrNotFound // discarded meanwhile by another caller
		}
		return fmt.Errorf("buffer: discard dead letter %s: %w", id, err)
	}
	return nil
}
