// Package jobstate keeps each started job's state: one entry in a
// key-value bucket, keyed by job ID, holding a [sluicev1.Job] in protobuf
// form, read straight from the bucket's stream, written with
// compare-and-set through group commit, and watched for changes.
package jobstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/jobid"
	"github.com/sluicehq/sluice/buffer/jsapi"
	"github.com/sluicehq/sluice/buffer/provision"
)

// Bucket is the key-value bucket holding each job's state.
const Bucket = "sluice-jobs"

// BucketConfig is the configuration of the bucket of job state: an entry
// is kept for retention after its last change, the bucket holds maxBytes.
func BucketConfig(retention time.Duration, maxBytes int64, replicas int) jetstream.KeyValueConfig {
	return provision.BucketConfig(Bucket, "Sluice: job state by job ID", retention, maxBytes, replicas)
}

// Get reads the job's state entry, from the bucket's stream log, and its
// revision: [jobid.ErrInvalid] for a string that cannot be a job ID,
// [jobid.ErrNotFound] for a job without one.
func Get(ctx context.Context, log jetstream.Stream, id string) (*sluicev1.Job, uint64, error) {
	if !jobid.Valid(id) {
		return nil, 0, jobid.ErrInvalid
	}
	// The entry's last message, read straight from the bucket's stream:
	// what KeyValue.Get does, without checking the key again by regular
	// expression (jobid.Valid did), which cost a twentieth of dispatch's CPU.
	msg, err := log.GetLastMsgForSubject(ctx, subject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && jsapi.Deleted(msg.Header) {
		return nil, 0, jobid.ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("buffer: read job %s: %w", id, err)
	}
	job := new(sluicev1.Job)
	if err := proto.Unmarshal(msg.Data, job); err != nil {
		return nil, 0, fmt.Errorf("buffer: decode job %s: %w", id, err)
	}
	return job, msg.Sequence, nil
}

// subject is the subject of a job's state entry in the bucket's stream.
func subject(id string) string { return jsapi.KVSubject(Bucket, id) }

// Put writes a job's state entry if its revision is still rev (0: it
// has none yet), coalesced with concurrent writes into atomic batches, and
// returns the entry's new revision. A lost race is an error [jsapi.Conflict]
// recognises.
func Put(ctx context.Context, b *groupcommit.Batcher, id string, value []byte, rev uint64) (uint64, error) {
	msg := nats.NewMsg(subject(id))
	msg.Data = value
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	return b.Publish(ctx, msg)
}

// Watch calls changed with every job state written to kv from now on, by any
// process, with its revision, until ctx ends. One watcher serves a whole gateway process, so
// waiting for jobs costs no polling. It returns once the watch is in place;
// the watch runs in a goroutine that ends with ctx.
func Watch(ctx context.Context, kv jetstream.KeyValue, changed func(job *sluicev1.Job, rev uint64)) error {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("buffer: watch jobs: %w", err)
	}
	go func() {
		defer w.Stop() //nolint:errcheck // nothing to do at shutdown
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil {
					continue // the end of the initial values, of which there are none
				}
				job := new(sluicev1.Job)
				if proto.Unmarshal(entry.Value(), job) == nil {
					changed(job, entry.Revision())
				}
			}
		}
	}()
	return nil
}
