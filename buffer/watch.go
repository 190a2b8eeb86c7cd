package buffer

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// WatchJobs calls changed with every job state written from now on, by any
// process, with its revision, until ctx ends. One watcher serves a whole gateway process, so
// waiting for jobs costs no polling. It returns once the watch is in place;
// the watch runs in a goroutine that ends with ctx.
func (q *Queue) WatchJobs(ctx context.Context, changed func(job *sluicev1.Job, rev uint64)) error {
	w, err := q.state.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
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
