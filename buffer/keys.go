package buffer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/keyed"
	"github.com/sluicehq/sluice/buffer/store"
)

// keyGate is the gate that releases the queue's keyed jobs (see package
// keyed): the keys' sets are read from sets, the bucket's stream, and
// written through batcher; each function's key_concurrency is in limits.
func (q *Queue) keyGate(sets jetstream.Stream, batcher *groupcommit.Batcher, limits map[string]int) *keyed.Gate {
	return &keyed.Gate{
		Sets:     sets,
		Publish:  batcher.Publish,
		Stream:   q.stream,
		Limit:    func(function string) int { return limits[function] },
		Copy:     q.copyKeyed,
		ID:       func(msg *jetstream.RawStreamMsg) string { return msg.Header.Get(headerJobID) },
		Redrives: func(msg *jetstream.RawStreamMsg) int32 { return headerRedrivesOf(msg.Header) },
		Gone: func(ctx context.Context, id string, redrives int32) (bool, error) {
			job, _, err := q.GetRevision(ctx, id)
			switch {
			case errors.Is(err, ErrNotFound):
				return true, nil
			case err != nil:
				return false, err
			}
			return job.Redrives > redrives || job.Redrives == redrives && Terminal(job.State), nil
		},
		Now: q.now,
	}
}

// copyKeyed stores the dispatch copy of a keyed job's waiting message, in
// its lane, with the same headers (its trace's included) and payload,
// deduplicated by the job and its run.
func (q *Queue) copyKeyed(ctx context.Context, waiting *jetstream.RawStreamMsg) error {
	job := queuedJob(waiting)
	msg := nats.NewMsg(jobSubject(job.Function, LaneOf(job), job.Id))
	msg.Data = waiting.Data
	for name, values := range waiting.Header {
		if !strings.HasPrefix(name, "Nats-") { // JetStream's own, the submit's message ID among them
			msg.Header[name] = values
		}
	}
	msg.Header.Set(jetstream.MsgIDHeader, job.Id+".keyed."+strconv.Itoa(int(headerRedrivesOf(waiting.Header))))
	if _, err := q.batcher.Publish(ctx, msg); err != nil {
		return store.PublishError(err)
	}
	return nil
}

// publishKeyed stores a keyed job's message: straight into its lane when
// its key has room and nothing waiting, held in the key's set first (the
// fast way: no waiting message, no copy); on its key's waiting subject
// otherwise, for the key's next settle to release.
func (q *Queue) publishKeyed(ctx context.Context, job *sluicev1.Job, msg *nats.Msg) error {
	hash := keyed.Hash(job.Tenant, job.ConcurrencyKey)
	claimed, err := q.keys.Claim(ctx, job.Function, hash, job.Id, q.now())
	if err != nil {
		return err
	}
	if claimed {
		msg.Subject = jobSubject(job.Function, LaneOf(job), job.Id)
	}
	if _, err := q.batcher.Publish(ctx, msg); err != nil {
		if claimed && groupcommit.Refused(err) {
			// Surely not stored: give the slot back. Should that fail
			// too, the claim is found unused once claimGrace has passed.
			q.keys.Settle(context.WithoutCancel(ctx), job.Function, hash, &keyed.Held{ID: job.Id}, false) //nolint:errcheck // see above
		}
		return store.PublishError(err)
	}
	if !claimed {
		// Waiting: let it go now if a slot freed meanwhile, so that no
		// later submit finds the key with room while it waits (see
		// keyed.Gate.Claim). Should this fail, the consumer of waiting
		// jobs settles the key in a moment; the job is stored either way.
		q.keys.Settle(ctx, job.Function, hash, nil, false) //nolint:errcheck // see above
	}
	return nil
}

// RunKeyed releases keyed jobs as they are stored, each as soon as its key
// has room, until ctx ends; it returns nil then: see [keyed.Gate.Run].
// Every gateway process whose functions take keyed jobs runs it.
func (q *Queue) RunKeyed(ctx context.Context, log *slog.Logger) error {
	return q.keys.Run(ctx, log, consume)
}

// settleKey lets the delivery's job go from its key's jobs in flight,
// releasing the next one waiting in its place; a job without a key has
// nothing to settle.
func (d *Delivery) settleKey(ctx context.Context) error {
	if d.ConcurrencyKey == "" {
		return nil
	}
	done := &keyed.Held{ID: d.JobID, Redrives: d.redrives}
	_, err := d.q.keys.Settle(ctx, d.Function, keyed.Hash(d.Tenant, d.ConcurrencyKey), done, d.Redelivered())
	return err
}
