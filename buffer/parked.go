package buffer

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

// A finished job leads to a dead letter (FAILED, EXPIRED) and a callback
// (when it has a callback URL), each in a stream of its own. When that
// stream is full, the job is parked rather than kept in its function's
// window: its payload goes to a parked message in the job stream, its
// state says what is pending, its delivery is acknowledged, and one
// consumer shared by every gateway process stores what is pending once
// there is room. A full dead-letter or callback store so costs the job
// stream's room (bounded by buffer.max_bytes, as queued jobs are), never a
// dispatch slot.
const (
	// ParkedPrefix starts a parked finish's subject in the job stream; the
	// function's name and the job's ID follow it.
	ParkedPrefix = "sluice.parked."
	// ParkedConsumerName is the durable consumer that settles parked
	// finishes.
	ParkedConsumerName = "sluice-parked"
)

// How a parked finish is retried: doubling from parkedFirstRetry up to
// parkedMaxRetry, with at most parkedInFlight waiting at once (a wait
// holds no process, only the consumer's count).
const (
	parkedFirstRetry = time.Second
	parkedMaxRetry   = time.Minute
	parkedInFlight   = 10_000
	parkedAckWait    = 30 * time.Second
)

// storeFullError is a finished job's dead letter or callback refused by a
// full store.
type storeFullError = store.FullError

// park keeps what a finished job still leads to, which a full store
// refused, for RunParked to store later, and says so in the job's state.
func (d *Delivery) park(ctx context.Context, full *storeFullError) error {
	job := d.last.job
	msg := nats.NewMsg(ParkedPrefix + job.Function + "." + job.Id)
	msg.Data = d.Payload
	msg.Header.Set(headerJobID, job.Id)
	msg.Header.Set(headerRedrives, strconv.Itoa(int(job.Redrives)))
	id := job.Id + ".parked." + strconv.Itoa(int(job.Redrives))
	ack, err := d.q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		return fmt.Errorf("buffer: park finish of %s: %w", job.Id, store.PublishError(err))
	}
	if ack.Duplicate {
		// Parked before, by a delivery of this job that came back: that
		// park wrote the note, and RunParked may have stored what was
		// pending and cleared it since. Writing it again would leave it
		// standing for good.
		return nil
	}
	// The parked message is what counts; the note in the state is for
	// readers, and a job whose note could not be written is parked all
	// the same.
	d.change(ctx, func(j *sluicev1.Job) error { //nolint:errcheck // see above
		j.Pending = full.PendingText()
		return nil
	})
	return nil
}

// ParkedCount is how many finished jobs wait for room to store their dead
// letter or callback.
func (q *Queue) ParkedCount(ctx context.Context) (uint64, error) {
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(ParkedPrefix+">"))
	if err != nil {
		return 0, fmt.Errorf("buffer: parked finishes: %w", err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// RunParked stores the dead letters and callbacks that full stores
// refused, as room appears, until ctx ends; it returns nil then. Every
// gateway process runs it; they share the work. JetStream's troubles are
// logged and waited out.
func (q *Queue) RunParked(ctx context.Context, log *slog.Logger) error {
	for ctx.Err() == nil {
		if err := q.runParked(ctx, log); err != nil && ctx.Err() == nil {
			log.Warn("parked dead letters and callbacks: will try again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(parkedFirstRetry):
			}
		}
	}
	return nil
}

func (q *Queue) runParked(ctx context.Context, log *slog.Logger) error {
	cons, err := q.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ParkedConsumerName,
		Description:   "Sluice: dead letters and callbacks waiting for room",
		FilterSubject: ParkedPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       parkedAckWait,
		MaxAckPending: parkedInFlight,
		MaxDeliver:    -1,
	})
	if err != nil {
		return fmt.Errorf("buffer: parked consumer: %w", err)
	}
	return consume(ctx, cons, 16, func(msg jetstream.Msg) { q.settleParked(ctx, log, msg) })
}

func (q *Queue) settleParked(ctx context.Context, log *slog.Logger, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		msg.Term() //nolint:errcheck // not a JetStream message: nothing to settle
		return
	}
	id := msg.Headers().Get(headerJobID)
	redrives, _ := strconv.Atoi(msg.Headers().Get(headerRedrives))
	job, err := q.Get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidID):
		log.Warn("a parked dead letter or callback is dropped: its job's state has expired", "job", id)
		q.dropParked(ctx, log, msg, md)
		return
	case err != nil:
		msg.NakWithDelay(parkedFirstRetry) //nolint:errcheck // it comes back after the ack wait at worst
		return
	case !Terminal(job.State) || int(job.Redrives) != redrives:
		// Redriven since: the new run makes its own.
		q.dropParked(ctx, log, msg, md)
		return
	}
	if err := q.afterFinish(ctx, job, msg.Data(), false); err != nil {
		delay := parkedFirstRetry << min(md.NumDelivered-1, 6)
		if !errors.Is(err, ErrFull) {
			log.Warn("parked dead letter or callback not stored yet", "job", id, "err", err)
		}
		msg.NakWithDelay(min(delay, parkedMaxRetry)) //nolint:errcheck // it comes back after the ack wait at worst
		return
	}
	_, err = q.update(ctx, id, nil, nil, func(j *sluicev1.Job) error {
		if j.Pending == "" {
			return ErrFinished
		}
		j.Pending = ""
		return nil
	})
	if err != nil && !errors.Is(err, ErrFinished) {
		log.Warn("parked finish stored, but the job's note of it not cleared", "job", id, "err", err)
	}
	q.dropParked(ctx, log, msg, md)
}

// dropParked removes a settled (or moot) parked finish: the job stream
// keeps messages until they are removed, acknowledged or not.
func (q *Queue) dropParked(ctx context.Context, log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata) {
	if err := q.stream.DeleteMsg(ctx, md.Sequence.Stream); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Warn("parked finish not removed", "seq", md.Sequence.Stream, "err", err)
		msg.NakWithDelay(parkedFirstRetry) //nolint:errcheck // it comes back after the ack wait at worst
		return
	}
	msg.Ack() //nolint:errcheck // removed already: a redelivery finds nothing to do
}
