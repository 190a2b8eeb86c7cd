package buffer

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/keyed"
	"github.com/sluicehq/sluice/buffer/store"
)

// keyGate is the gate that releases the queue's keyed jobs (see package
// keyed), each function's key_concurrency in limits.
func (q *Queue) keyGate(kv jetstream.KeyValue, limits map[string]int) *keyed.Gate {
	return &keyed.Gate{
		KV:       kv,
		Stream:   q.stream,
		Limit:    func(function string) int { return limits[function] },
		Copy:     q.copyKeyed,
		ID:       func(msg *jetstream.RawStreamMsg) string { return msg.Header.Get(headerJobID) },
		Redrives: func(msg *jetstream.RawStreamMsg) int32 { return headerRedrivesOf(msg.Header) },
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
	return d.q.keys.Settle(ctx, d.Function, keyed.Hash(d.Tenant, d.ConcurrencyKey), done, d.Redelivered())
}
