// Package parked keeps the finishes that a full store refused: a finished
// job's dead letter or callback, parked in the job stream until there is
// room for it.
//
// A finished job leads to a dead letter (FAILED, EXPIRED) and a callback
// (when it has a callback URL), each in a stream of its own. When that
// stream is full, the job is parked rather than kept in its function's
// window: its payload goes to a parked message in the job stream, its
// state says what is pending, its delivery is acknowledged, and one
// consumer shared by every gateway process stores what is pending once
// there is room. A full dead-letter or callback store so costs the job
// stream's room (bounded by buffer.max_bytes, as queued jobs are), never a
// dispatch slot.
package parked

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/store"
)

const (
	// Prefix starts a parked finish's subject in the job stream; the
	// function's name and the job's ID follow it.
	Prefix = "sluice.parked."
	// ConsumerName is the durable consumer that settles parked finishes.
	ConsumerName = "sluice-parked"
)

// A parked message carries its job's ID and redrive in the headers a job's
// message carries them in.
const (
	headerJobID    = "Sluice-Job-Id"
	headerRedrives = "Sluice-Redrives"
)

// How a parked finish is retried: doubling from firstRetry up to
// maxRetry, with at most inFlight waiting at once (a wait holds no
// process, only the consumer's count).
const (
	firstRetry = time.Second
	maxRetry   = time.Minute
	inFlight   = 10_000
	ackWait    = 30 * time.Second
)

// Park stores the finished job's parked message, holding payload, in the
// job stream. duplicate says it was parked before, by a delivery of the
// job that came back.
func Park(ctx context.Context, js jetstream.JetStream, job *sluicev1.Job, payload []byte) (duplicate bool, err error) {
	msg := nats.NewMsg(Prefix + job.Function + "." + job.Id)
	msg.Data = payload
	msg.Header.Set(headerJobID, job.Id)
	msg.Header.Set(headerRedrives, strconv.Itoa(int(job.Redrives)))
	id := job.Id + ".parked." + strconv.Itoa(int(job.Redrives))
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		return false, fmt.Errorf("buffer: park finish of %s: %w", job.Id, store.PublishError(err))
	}
	return ack.Duplicate, nil
}

// Count is how many finished jobs wait in the job stream for room to
// store their dead letter or callback.
func Count(ctx context.Context, jobs jetstream.Stream) (uint64, error) {
	info, err := jobs.Info(ctx, jetstream.WithSubjectFilter(Prefix+">"))
	if err != nil {
		return 0, fmt.Errorf("buffer: parked finishes: %w", err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// Outcome is what settling a parked finish came to.
type Outcome int

const (
	// Done: what was pending is stored, or moot (the job was redriven
	// since, and the new run makes its own); the parked message goes.
	Done Outcome = iota
	// Expired: the job's state has expired; the parked message goes.
	Expired
	// Later: the job could not be read; it is tried again shortly.
	Later
	// Refused: what was pending could not be stored (a full store, say);
	// it is tried again later each time, up to a minute.
	Refused
)

// Settler stores what the parked finish of job id, parked at its redrive
// redrives, is pending, with the job's payload. An error with Done is
// logged: what was pending is stored, but something after it failed.
type Settler func(ctx context.Context, id string, redrives int, payload []byte) (Outcome, error)

// Consume is how Run pulls the parked messages from their consumer: it
// calls handle with each until ctx ends.
type Consume func(ctx context.Context, cons jetstream.Consumer, maxBuffered int, handle func(jetstream.Msg), opts ...jetstream.PullMessagesOpt) error

// Run settles the parked finishes in the job stream jobs with settle, as
// room appears, until ctx ends; it returns nil then. Every gateway process
// runs it; they share the work. JetStream's troubles are logged and waited
// out.
func Run(ctx context.Context, jobs jetstream.Stream, log *slog.Logger, consume Consume, settle Settler) error {
	for ctx.Err() == nil {
		if err := run(ctx, jobs, log, consume, settle); err != nil && ctx.Err() == nil {
			log.Warn("parked dead letters and callbacks: will try again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(firstRetry):
			}
		}
	}
	return nil
}

func run(ctx context.Context, jobs jetstream.Stream, log *slog.Logger, consume Consume, settle Settler) error {
	cons, err := jobs.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "Sluice: dead letters and callbacks waiting for room",
		FilterSubject: Prefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: inFlight,
		MaxDeliver:    -1,
	})
	if err != nil {
		return fmt.Errorf("buffer: parked consumer: %w", err)
	}
	return consume(ctx, cons, 16, func(msg jetstream.Msg) { settleMsg(ctx, jobs, log, msg, settle) })
}

func settleMsg(ctx context.Context, jobs jetstream.Stream, log *slog.Logger, msg jetstream.Msg, settle Settler) {
	md, err := msg.Metadata()
	if err != nil {
		msg.Term() //nolint:errcheck // not a JetStream message: nothing to settle
		return
	}
	id := msg.Headers().Get(headerJobID)
	redrives, _ := strconv.Atoi(msg.Headers().Get(headerRedrives))
	switch outcome, err := settle(ctx, id, redrives, msg.Data()); outcome {
	case Expired:
		log.Warn("a parked dead letter or callback is dropped: its job's state has expired", "job", id)
	case Later:
		msg.NakWithDelay(firstRetry) //nolint:errcheck // it comes back after the ack wait at worst
		return
	case Refused:
		delay := firstRetry << min(md.NumDelivered-1, 6)
		if !errors.Is(err, store.ErrFull) {
			log.Warn("parked dead letter or callback not stored yet", "job", id, "err", err)
		}
		msg.NakWithDelay(min(delay, maxRetry)) //nolint:errcheck // it comes back after the ack wait at worst
		return
	case Done:
		if err != nil {
			log.Warn("parked finish stored, but the job's note of it not cleared", "job", id, "err", err)
		}
	}
	drop(ctx, jobs, log, msg, md)
}

// drop removes a settled (or moot) parked finish: the job stream keeps
// messages until they are removed, acknowledged or not.
func drop(ctx context.Context, jobs jetstream.Stream, log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata) {
	if err := jobs.DeleteMsg(ctx, md.Sequence.Stream); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Warn("parked finish not removed", "seq", md.Sequence.Stream, "err", err)
		msg.NakWithDelay(firstRetry) //nolint:errcheck // it comes back after the ack wait at worst
		return
	}
	msg.Ack() //nolint:errcheck // removed already: a redelivery finds nothing to do
}
