// Package idempotency makes a submit with an idempotency key create its
// job once: each key is claimed, for the job ID it names, in a key-value
// bucket of its own.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/jobid"
	"github.com/sluicehq/sluice/buffer/jsapi"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/buffer/store"
)

// Bucket maps a function's idempotency keys to job IDs.
const Bucket = "sluice-idempotency"

// BucketConfig is the configuration of the bucket of job IDs by
// idempotency key: a key is kept for window, the bucket holds maxBytes.
func BucketConfig(window time.Duration, maxBytes int64, replicas int) jetstream.KeyValueConfig {
	return provision.BucketConfig(Bucket, "Sluice: job ID by function and idempotency key", window, maxBytes, replicas)
}

// Submit submits a job for function with an idempotency key, claimed in
// kv: the first submit of key for function within the idempotency window
// creates the job; every other returns that job (created false), also when
// they arrive at once or through other gateway processes. If the first
// submit failed, a later one creates the job. publish stores the job under
// the ID given, deduplicated by it; get reads a job, or returns
// [jobid.ErrNotFound].
func Submit(ctx context.Context, kv jetstream.KeyValue, function, key string,
	publish func(id string) (*sluicev1.Job, error),
	get func(ctx context.Context, id string) (*sluicev1.Job, error),
) (job *sluicev1.Job, created bool, err error) {
	k := bucketKey(function, key)
	for {
		id := jobid.New()
		rev, err := kv.Create(ctx, k, []byte(id))
		if err == nil {
			job, err := publish(id)
			if err != nil {
				if refused(err) {
					// Surely not stored: let a retry of this submit create
					// the job at once.
					kv.Delete(context.WithoutCancel(ctx), k, jetstream.LastRevision(rev)) //nolint:errcheck // a later submit finds the job missing and takes the key over
				}
				// Otherwise (no answer in a leader election, the caller
				// gone while its batch was in flight) the job may be stored
				// all the same: keep the claim, so that a retry returns that
				// job if it was, and stores it under the same ID after
				// claimPatience if it was not. Releasing it gave two jobs for
				// one key in a rolling restart of NATS.
				return nil, false, err
			}
			return job, true, nil
		}
		if !jsapi.Conflict(err) {
			return nil, false, fmt.Errorf("buffer: claim idempotency key: %w", err)
		}
		entry, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: claim it again
		}
		if err != nil {
			return nil, false, fmt.Errorf("buffer: read idempotency key: %w", err)
		}
		job, err := awaitStored(ctx, get, string(entry.Value()), entry.Created())
		if err == nil {
			return job, false, nil
		}
		if !errors.Is(err, jobid.ErrNotFound) {
			return nil, false, err
		}
		// The first submit claimed the key and has not stored its job
		// within claimPatience: it crashed, or its publish is stuck. Store
		// the job under the claimed ID: the key keeps its one job ID
		// whatever happens, and should the stuck publish land after all,
		// JetStream's duplicate window (keyed by the job ID) drops one of
		// the two messages. (Releasing the key and claiming it anew gave two
		// jobs for one key when a stuck publish landed late, in a rolling
		// restart of NATS.)
		job, err = publish(string(entry.Value()))
		if err != nil {
			return nil, false, err
		}
		return job, true, nil
	}
}

// refused reports whether a publish error means the message was surely
// not stored: JetStream answered with a refusal (a full buffer among them),
// as opposed to no answer, or none waited for.
func refused(err error) bool {
	return errors.Is(err, store.ErrFull) || groupcommit.Refused(err)
}

// claimPatience is how long after claiming an idempotency key a submit
// may still store its job; past it, a claim without a job is abandoned.
const claimPatience = 15 * time.Second

// awaitStored waits, briefly, for the job that another submit of the same
// idempotency key, which claimed it at claimed, is storing right now. The
// wait is counted from the claim, not from now: a retry whose deadline is
// shorter than the patience must still get to take an abandoned key over.
func awaitStored(ctx context.Context, get func(ctx context.Context, id string) (*sluicev1.Job, error), id string, claimed time.Time) (*sluicev1.Job, error) {
	const step = 10 * time.Millisecond
	for deadline := claimed.Add(claimPatience); ; {
		job, err := get(ctx, id)
		if !errors.Is(err, jobid.ErrNotFound) || time.Now().After(deadline) {
			return job, err
		}
		select {
		case <-time.After(step):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// bucketKey is the bucket key for a function's idempotency key: a
// digest, so that any string the client chose is a valid key.
func bucketKey(function, key string) string {
	sum := sha256.Sum256([]byte(function + "\x00" + key))
	return hex.EncodeToString(sum[:])
}
