package buffer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/callbacks"
	"github.com/sluicehq/sluice/buffer/deadletter"
	"github.com/sluicehq/sluice/buffer/store"
)

// deadLettered reports whether a job that ended in state s goes to the dead
// letters.
func deadLettered(s sluicev1.Job_State) bool {
	return s == sluicev1.Job_FAILED || s == sluicev1.Job_EXPIRED
}

// afterFinish makes sure of what a finished job leads to: its dead letter,
// if it FAILED or EXPIRED, and its callback, if it has one. written says
// whether the caller has just written the job's terminal state (so neither
// can exist yet); otherwise this is a redelivery after a crash or a lost
// ack, and a dead letter is published only if missing.
func (q *Queue) afterFinish(ctx context.Context, job *sluicev1.Job, payload []byte, written bool) error {
	if job.GetDeadLetterTime() != nil {
		err := q.deadStore.Put(ctx, job, payload, written, func() {
			q.update(ctx, job.Id, nil, nil, func(j *sluicev1.Job) error { //nolint:errcheck // the dead letter says it too
				j.Notice = deadletter.LeanNotice
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	if job.GetCallbackUrl() != "" {
		return q.callbackStore.Publish(ctx, job)
	}
	return nil
}

// ConsumeCallbacks delivers stored callbacks to handle as they come, at
// most maxPending unfinished at once across every gateway process (those
// waiting to be retried included), until ctx ends. A callback handle
// leaves unfinished comes back after ackWait.
func (q *Queue) ConsumeCallbacks(ctx context.Context, maxPending int, ackWait time.Duration, handle func(*callbacks.Callback)) error {
	cons, err := q.callbackStore.Consumer(ctx, maxPending, ackWait)
	if err != nil {
		return err
	}
	return consume(ctx, cons, callbacks.Buffered(maxPending), func(msg jetstream.Msg) { handle(callbacks.FromMsg(msg)) })
}

// DeadLetters returns a page of the function's dead letters of jobs of
// tenant: see [deadletter.Store.List].
func (q *Queue) DeadLetters(ctx context.Context, function, tenant string, from uint64, limit int, withPayload bool) (deadletter.Page, error) {
	return q.deadStore.List(ctx, function, tenant, from, limit, withPayload)
}

// DeadLetterCount is how many dead letters the function has, of every
// tenant.
func (q *Queue) DeadLetterCount(ctx context.Context, function string) (int64, error) {
	return q.deadStore.Count(ctx, function)
}

// Redrive queues the dead-lettered jobs of function and tenant with the
// given IDs again, one at a time. Each keeps its ID and gets a fresh
// attempt budget; its history records the redrive, and its max age counts
// from it. It returns the jobs queued again, and the IDs that are not among
// the function's dead letters.
//
// A dead letter whose job has meanwhile finished otherwise (a dead letter
// left behind by a crash) is discarded, and its job returned as it stands.
func (q *Queue) Redrive(ctx context.Context, function, tenant string, ids []string) (jobs []*sluicev1.Job, notFound []string, err error) {
	return q.deadStore.Redrive(ctx, function, tenant, ids, q.redrive)
}

// RedriveAll queues the dead-lettered jobs of function and tenant again,
// as [Queue.Redrive] does, a page at a time: see
// [deadletter.Store.RedriveAll].
func (q *Queue) RedriveAll(ctx context.Context, function, tenant string, from, until uint64, limit int) (deadletter.RedrivePage, error) {
	return q.deadStore.RedriveAll(ctx, function, tenant, from, until, limit, q.redrive)
}

// errStaleDeadLetter: the dead letter's job is no longer dead-lettered.
var errStaleDeadLetter = errors.New("buffer: dead letter is stale")

// redrive queues one dead letter's job again: a [deadletter.Requeue]. The
// state is written first, then the job's message.
func (q *Queue) redrive(ctx context.Context, dl *sluicev1.DeadLetter) (*sluicev1.Job, bool, error) {
	id, now := dl.Job.Id, timestamppb.New(q.now())
	snap, err := q.update(ctx, id, nil, func() *sluicev1.Job { return proto.CloneOf(dl.Job) }, func(j *sluicev1.Job) error {
		switch {
		case j.State == sluicev1.Job_QUEUED && j.Redrives > dl.Job.Redrives:
			return ErrFinished // redriven before, and the message may be missing: publish it
		case !deadLettered(j.State):
			return errStaleDeadLetter
		}
		j.State = sluicev1.Job_QUEUED
		j.Attempts = 0
		j.Redrives++
		j.RedriveTime = now
		j.Error, j.Result, j.StartTime, j.FinishTime, j.DeadLetterTime = "", nil, nil, nil, nil
		j.History = append(j.History, &sluicev1.Attempt{Number: 0, StartTime: now, Outcome: sluicev1.Attempt_REDRIVEN})
		if n := len(j.History); n > maxHistory {
			j.History = j.History[n-maxHistory:]
		}
		return nil
	})
	switch {
	case errors.Is(err, errStaleDeadLetter):
		return snap.job, true, nil
	case err != nil && !errors.Is(err, ErrFinished):
		return nil, false, err
	}
	if err := q.requeue(ctx, snap.job, dl.Payload); err != nil {
		return nil, false, err
	}
	return proto.CloneOf(snap.job), false, nil
}

// requeue publishes a redriven job's message, unless it is already there.
// An earlier message of the job may be there too, finished and not yet
// removed: the message of this redrive carries its number.
func (q *Queue) requeue(ctx context.Context, job *sluicev1.Job, payload []byte) error {
	last, err := q.stream.GetLastMsgForSubject(ctx, msgSubject(job))
	switch {
	case err == nil && last.Header.Get(headerRedrives) == strconv.Itoa(int(job.Redrives)):
		return nil
	case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("buffer: read job %s: %w", job.Id, err)
	}
	msg := jobMsg(job, payload)
	msgID := job.Id + ".redrive." + strconv.Itoa(int(job.Redrives))
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID)); err != nil {
		return store.PublishError(err)
	}
	return nil
}

// DeleteDeadLetter discards the job's dead letter for good; the job's state
// stays as it ended, no longer dead-lettered. It returns [ErrNotFound] when
// the function has no dead letter for that ID of the tenant's.
func (q *Queue) DeleteDeadLetter(ctx context.Context, function, tenant, id string) error {
	return q.deadStore.Delete(ctx, function, tenant, id, func(ctx context.Context, id string) error {
		_, err := q.update(ctx, id, nil, nil, func(j *sluicev1.Job) error {
			if j.DeadLetterTime == nil {
				return ErrFinished // nothing to change
			}
			j.DeadLetterTime = nil
			return nil
		})
		return ignore(ignore(err, ErrFinished), ErrNotFound)
	})
}
