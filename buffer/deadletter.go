package buffer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/buffer/store"
)

// Dead letters are kept in their own stream, one message per job: a
// sluicev1.DeadLetter holding the job as it ended and its payload, so that a
// redrive needs nothing else, even once the job's state entry has expired.
const (
	// DeadLetterStream holds the jobs that FAILED or EXPIRED.
	DeadLetterStream = "SLUICE_DEAD_LETTERS"
	// DeadLetterPrefix starts every dead letter's subject; the function's
	// name, the tenant's and the job's ID follow it (see
	// [DeadLetterSubject]).
	DeadLetterPrefix = "sluice.dead."
)

// maxDeadResultBytes bounds the function's response kept in a dead letter;
// the job's state keeps all of it until its retention passes.
const maxDeadResultBytes = 64 << 10

func deadLetterStreamConfig(cfg Config, maxMsg int32) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "Sluice: jobs that failed or expired, kept for inspection and redrive",
		Subjects:    []string{DeadLetterPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		// Discard new, as for jobs: when full, dead-lettering fails and the
		// job stays in the work queue rather than an older dead letter
		// being dropped.
		Discard:    jetstream.DiscardNew,
		MaxAge:     cfg.DeadLetterRetention,
		MaxMsgs:    cfg.MaxJobs,
		MaxBytes:   cfg.Stores.DeadLetterBytes,
		MaxMsgSize: maxMsg,
		Replicas:   cfg.Replicas,
		Duplicates: 10 * time.Minute,
	}
}

// DeadLetterSubject is the subject of a job's dead letter:
// sluice.dead.<function>.<tenant>.<id>, "_" standing for no tenant (no
// tenant's name can be "_"), so that one tenant's dead letters are read
// without reading another's.
func DeadLetterSubject(function, tenant, id string) string {
	return DeadLetterPrefix + function + "." + tenantToken(tenant) + "." + id
}

func tenantToken(tenant string) string {
	if tenant == "" {
		return "_"
	}
	return tenant
}

// tenantDeadLetters matches the tenant's dead letters of function.
func tenantDeadLetters(function, tenant string) string {
	return DeadLetterPrefix + function + "." + tenantToken(tenant) + ".*"
}

// functionDeadLetters matches every dead letter of function, in either
// subject layout.
func functionDeadLetters(function string) string { return DeadLetterPrefix + function + ".>" }

// Before, a dead letter's subject named no tenant:
// sluice.dead.<function>.<id>. Open moves such letters to their subjects
// of now (moveLegacyDeadLetters); until it has (a letter an older replica
// stored since, or one a full stream left where it was), they are read
// where they are.
func legacyDeadLetterSubject(function, id string) string {
	return DeadLetterPrefix + function + "." + id
}

// legacyDeadLetters matches function's dead letters stored without a
// tenant in their subject; "*" for every function's.
func legacyDeadLetters(function string) string { return DeadLetterPrefix + function + ".*" }

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
		exists := false
		if !written {
			_, err := q.lastDeadLetter(ctx, DeadLetterSubject(job.Function, job.Tenant, job.Id), legacyDeadLetterSubject(job.Function, job.Id))
			switch {
			case err == nil:
				exists = true
			case !errors.Is(err, jetstream.ErrMsgNotFound):
				return fmt.Errorf("buffer: read dead letter %s: %w", job.Id, err)
			}
		}
		if !exists {
			if err := q.publishDeadLetter(ctx, job, payload); err != nil {
				return err
			}
		}
	}
	if job.GetCallbackUrl() != "" {
		return q.publishCallback(ctx, job)
	}
	return nil
}

func (q *Queue) publishDeadLetter(ctx context.Context, job *sluicev1.Job, payload []byte) error {
	kept := proto.CloneOf(job)
	if r := kept.GetResult(); len(r.GetBody()) > maxDeadResultBytes {
		r.Body = r.Body[:maxDeadResultBytes]
	}
	if len(payload) > 0 && q.deadShares.Over(ctx, job.Tenant, job.Function) {
		payload = nil
		kept.Notice = leanDeadLetter
		q.update(ctx, job.Id, nil, nil, func(j *sluicev1.Job) error { //nolint:errcheck // the dead letter says it too
			j.Notice = leanDeadLetter
			return nil
		})
	}
	b, err := proto.Marshal(&sluicev1.DeadLetter{
		Job:            kept,
		Reason:         job.Error,
		DeadLetterTime: job.DeadLetterTime,
		Payload:        payload,
	})
	if err != nil {
		return fmt.Errorf("buffer: encode dead letter: %w", err)
	}
	msg := nats.NewMsg(DeadLetterSubject(job.Function, job.Tenant, job.Id))
	msg.Data = b
	if job.Tenant != "" {
		msg.Header.Set(headerTenant, job.Tenant) // for the share its tenant holds
	}
	msgID := job.Id + ".dead." + strconv.Itoa(int(job.Redrives))
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID)); err != nil {
		return store.MarkFull(store.DeadLetters, fmt.Errorf("buffer: dead-letter job %s: %w", job.Id, store.PublishError(err)))
	}
	q.deadShares.Add(job.Tenant, job.Function, len(b))
	return nil
}

// ErrPayloadNotKept: the dead letter was kept without its payload (see
// leanDeadLetter), so its job cannot be redriven.
var ErrPayloadNotKept = errors.New("buffer: the dead letter was kept without its payload and cannot be redriven")

// lean says whether a dead letter was kept without its payload.
func lean(dl *sluicev1.DeadLetter) bool { return dl.GetJob().GetNotice() == leanDeadLetter }

// leanDeadLetter is what a dead letter kept without its payload says.
const leanDeadLetter = "the payload was not kept in the dead letter: its tenant or function holds more than its share of the dead-letter store; it cannot be redriven"

func decodeDeadLetter(msg *jetstream.RawStreamMsg) (*sluicev1.DeadLetter, error) {
	dl := new(sluicev1.DeadLetter)
	if err := proto.Unmarshal(msg.Data, dl); err != nil {
		return nil, fmt.Errorf("buffer: decode dead letter %s: %w", msg.Subject, err)
	}
	if dl.Job == nil {
		return nil, fmt.Errorf("buffer: dead letter %s holds no job", msg.Subject)
	}
	return dl, nil
}

// lastDeadLetter reads the last message on subject, or if there is none
// on legacy (the subject in the layout of before): jetstream.ErrMsgNotFound
// when neither has one.
func (q *Queue) lastDeadLetter(ctx context.Context, subject, legacy string) (*jetstream.RawStreamMsg, error) {
	msg, err := q.dead.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		msg, err = q.dead.GetLastMsgForSubject(ctx, legacy)
	}
	return msg, err
}

// moveLegacyDeadLetters moves the dead letters stored in the subject layout
// of before that filter matches to their subjects of now: each is published
// there (unless it is there already) and then removed. A moved letter goes
// to the end of the stream, and its retention counts from the move. A full
// stream stops the move without an error: the letters left are read where
// they are.
func (q *Queue) moveLegacyDeadLetters(ctx context.Context, filter string) error {
	for seq := uint64(1); ; {
		msg, err := q.dead.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("buffer: read dead letters: %w", err)
		}
		seq = msg.Sequence + 1
		dl, err := decodeDeadLetter(msg)
		if err != nil {
			return err
		}
		job := dl.Job
		to := DeadLetterSubject(job.Function, job.Tenant, job.Id)
		switch _, err := q.dead.GetLastMsgForSubject(ctx, to); {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			m := nats.NewMsg(to)
			m.Header = provision.CopyHeader(msg.Header) // the letter's own headers
			m.Data = msg.Data
			msgID := job.Id + ".dead." + strconv.Itoa(int(job.Redrives)) + ".moved"
			if _, err := q.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID)); err != nil {
				if err := store.PublishError(err); errors.Is(err, ErrFull) {
					return nil
				}
				return fmt.Errorf("buffer: move dead letter %s: %w", job.Id, err)
			}
		case err != nil:
			return fmt.Errorf("buffer: read dead letter %s: %w", job.Id, err)
		}
		if err := q.dead.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("buffer: remove moved dead letter %s: %w", job.Id, err)
		}
	}
}

// DeadLetterPage is one page of a function's dead letters.
type DeadLetterPage struct {
	// Letters are the dead letters, oldest first.
	Letters []*sluicev1.DeadLetter
	// Next is where the next page starts; 0 on the last page.
	Next uint64
}

// DeadLetters returns up to limit of the function's dead letters of jobs
// of tenant, oldest first, starting at position from (0 for the first page;
// a page's Next for the one after). Payloads are left out unless
// withPayload. A page reads the tenant's letters only: about limit of them.
func (q *Queue) DeadLetters(ctx context.Context, function, tenant string, from uint64, limit int, withPayload bool) (DeadLetterPage, error) {
	var page DeadLetterPage
	err := q.eachDeadLetter(ctx, function, tenant, from, 0, func(sl storedLetter) (bool, error) {
		if len(page.Letters) == limit {
			page.Next = sl.seq // there is more
			return false, nil
		}
		if !withPayload {
			sl.Payload = nil
		}
		page.Letters = append(page.Letters, sl.DeadLetter)
		return true, nil
	})
	return page, err
}

// storedLetter is a dead letter, decoded, and its place in the stream.
type storedLetter struct {
	*sluicev1.DeadLetter
	seq uint64
}

// eachDeadLetter calls f with the function's dead letters of jobs of
// tenant, oldest first, from stream position from up to until (0: to the
// end), one at a time, until f returns false or an error. It reads the
// tenant's letters by their subjects, and those in the subject layout of
// before (normally none: see moveLegacyDeadLetters) one by one.
func (q *Queue) eachDeadLetter(ctx context.Context, function, tenant string, from, until uint64, f func(storedLetter) (bool, error)) error {
	cursors := []*letterCursor{
		{filter: tenantDeadLetters(function, tenant)},
		{filter: legacyDeadLetters(function)}, // any tenant's: checked below
	}
	for _, c := range cursors {
		if err := c.read(ctx, q.dead, max(from, 1)); err != nil {
			return err
		}
	}
	for {
		var c *letterCursor // the one whose next letter comes first
		for _, cc := range cursors {
			if cc.next != nil && (c == nil || cc.next.Sequence < c.next.Sequence) {
				c = cc
			}
		}
		if c == nil || until > 0 && c.next.Sequence > until {
			return nil
		}
		msg := c.next
		dl, err := decodeDeadLetter(msg)
		if err != nil {
			return err
		}
		if dl.Job.Tenant == tenant {
			more, err := f(storedLetter{dl, msg.Sequence})
			if !more || err != nil {
				return err
			}
		}
		if err := c.read(ctx, q.dead, msg.Sequence+1); err != nil {
			return err
		}
	}
}

// letterCursor reads the dead letters on one subject filter in stream
// order.
type letterCursor struct {
	filter string
	next   *jetstream.RawStreamMsg // the next letter; nil past the last
}

// read reads the first letter at position from or after it.
func (c *letterCursor) read(ctx context.Context, s jetstream.Stream, from uint64) error {
	msg, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(c.filter))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		c.next = nil
		return nil
	case err != nil:
		return fmt.Errorf("buffer: read dead letters: %w", err)
	}
	c.next = msg
	return nil
}

// DeadLetterCount is how many dead letters the function has, of every
// tenant.
func (q *Queue) DeadLetterCount(ctx context.Context, function string) (int64, error) {
	info, err := q.dead.Info(ctx, jetstream.WithSubjectFilter(functionDeadLetters(function)))
	if err != nil {
		return 0, fmt.Errorf("buffer: count dead letters of %s: %w", function, err)
	}
	var n int64
	for _, c := range info.State.Subjects {
		n += int64(c)
	}
	return n, nil
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
	for _, id := range ids {
		sl, err := q.deadLetter(ctx, function, tenant, id)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidID) {
			notFound = append(notFound, id)
			continue
		}
		if err != nil {
			return jobs, notFound, err
		}
		if lean(sl.DeadLetter) {
			return jobs, notFound, fmt.Errorf("%w: %s", ErrPayloadNotKept, sl.Job.Id)
		}
		job, err := q.redriveOne(ctx, sl)
		if err != nil {
			return jobs, notFound, err
		}
		jobs = append(jobs, job)
	}
	return jobs, notFound, nil
}

// RedrivePage is what one call of a redrive of all did.
type RedrivePage struct {
	// Jobs are the jobs queued again, as [Queue.Redrive] returns them.
	Jobs []*sluicev1.Job
	// Next is where the next call goes on; 0 when none are left.
	Next uint64
	// Until is the last stream position the redrive covers: the dead
	// letters there were when it started. Pass it to every call after the
	// first.
	Until uint64
}

// RedriveAll queues the dead-lettered jobs of function and tenant again,
// as [Queue.Redrive] does, oldest first, up to limit of them: those at
// stream position from (0 to start) up to until (0 to start: the stream's
// last position now, which the page returns). It reads and redrives one
// letter at a time, holding two payloads at most. Call it again with the
// page's Next and Until while Next is not 0.
func (q *Queue) RedriveAll(ctx context.Context, function, tenant string, from, until uint64, limit int) (RedrivePage, error) {
	if until == 0 {
		info, err := q.dead.Info(ctx)
		if err != nil {
			return RedrivePage{}, fmt.Errorf("buffer: dead letters: %w", err)
		}
		if until = info.State.LastSeq; until == 0 {
			return RedrivePage{}, nil // none was ever stored
		}
	}
	page := RedrivePage{Until: until}
	err := q.eachDeadLetter(ctx, function, tenant, from, until, func(sl storedLetter) (bool, error) {
		if len(page.Jobs) == limit {
			page.Next = sl.seq // there is more
			return false, nil
		}
		if lean(sl.DeadLetter) {
			return true, nil // nothing to run: it stays, to be read and discarded
		}
		job, err := q.redriveOne(ctx, sl)
		if err != nil {
			return false, err
		}
		page.Jobs = append(page.Jobs, job)
		return true, nil
	})
	return page, err
}

// deadLetter is the dead letter of the job, if it is the tenant's:
// another tenant's is [ErrNotFound], as if it were not there.
func (q *Queue) deadLetter(ctx context.Context, function, tenant, id string) (storedLetter, error) {
	if !ValidJobID(id) {
		return storedLetter{}, ErrInvalidID
	}
	msg, err := q.lastDeadLetter(ctx, DeadLetterSubject(function, tenant, id), legacyDeadLetterSubject(function, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return storedLetter{}, ErrNotFound
	}
	if err != nil {
		return storedLetter{}, fmt.Errorf("buffer: read dead letter %s: %w", id, err)
	}
	dl, err := decodeDeadLetter(msg)
	if err != nil {
		return storedLetter{}, err
	}
	if dl.Job.Tenant != tenant {
		return storedLetter{}, ErrNotFound
	}
	return storedLetter{dl, msg.Sequence}, nil
}

// errStaleDeadLetter: the dead letter's job is no longer dead-lettered.
var errStaleDeadLetter = errors.New("buffer: dead letter is stale")

// redriveOne queues one dead letter's job again. The state is written
// first, then the job's message, then the dead letter is removed: a crash
// in between leaves the dead letter in place, and redriving it again
// finishes the work.
func (q *Queue) redriveOne(ctx context.Context, dl storedLetter) (*sluicev1.Job, error) {
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
		if err := q.dead.DeleteMsg(ctx, dl.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("buffer: discard stale dead letter %s: %w", id, err)
		}
		return snap.job, nil
	case err != nil && !errors.Is(err, ErrFinished):
		return nil, err
	}
	job := snap.job
	if err := q.requeue(ctx, job, dl.Payload); err != nil {
		return nil, err
	}
	if err := q.dead.DeleteMsg(ctx, dl.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("buffer: remove redriven dead letter %s: %w", id, err)
	}
	return proto.CloneOf(job), nil
}

// requeue publishes a redriven job's message, unless it is already there.
// An earlier message of the job may be there too, finished and not yet
// removed: the message of this redrive carries its number.
func (q *Queue) requeue(ctx context.Context, job *sluicev1.Job, payload []byte) error {
	last, err := q.stream.GetLastMsgForSubject(ctx, jobSubject(job.Function, LaneOf(job), job.Id))
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
	sl, err := q.deadLetter(ctx, function, tenant, id)
	if err != nil {
		return err
	}
	// The state first: a redelivered message of the job finds it no longer
	// dead-lettered and does not publish the dead letter again.
	_, err = q.update(ctx, id, nil, nil, func(j *sluicev1.Job) error {
		if j.DeadLetterTime == nil {
			return ErrFinished // nothing to change
		}
		j.DeadLetterTime = nil
		return nil
	})
	if err != nil && !errors.Is(err, ErrFinished) && !errors.Is(err, ErrNotFound) {
		return err
	}
	if err := q.dead.DeleteMsg(ctx, sl.seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return ErrNotFound // discarded meanwhile by another caller
		}
		return fmt.Errorf("buffer: discard dead letter %s: %w", id, err)
	}
	return nil
}

// deadLetterJob is the job as its dead letter keeps it, for a job whose
// state entry has expired: [ErrNotFound] if there is none.
func (q *Queue) deadLetterJob(ctx context.Context, id string) (*sluicev1.Job, error) {
	msg, err := q.lastDeadLetter(ctx, DeadLetterSubject("*", "*", id), legacyDeadLetterSubject("*", id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("buffer: read dead letter %s: %w", id, err)
	}
	dl, err := decodeDeadLetter(msg)
	if err != nil {
		return nil, err
	}
	return dl.Job, nil
}
