package buffer

import (
	"context"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/arrivals"
	"github.com/sluicehq/sluice/buffer/jobstate"
)

// WatchJobs calls changed with every job state written from now on, by any
// process, with its revision, until ctx ends: see [jobstate.Watch].
func (q *Queue) WatchJobs(ctx context.Context, changed func(job *sluicev1.Job, rev uint64)) error {
	return jobstate.Watch(ctx, q.state, changed)
}

// NewArrivals returns an Arrivals of this queue's jobs for up to watches
// watches at once: see [arrivals.Arrivals].
func (q *Queue) NewArrivals(watches int) *arrivals.Arrivals {
	return arrivals.New(q.js.Conn(), functionSubjects, watches)
}
