package buffer

import (
	"context"

	"github.com/sluicehq/sluice/buffer/store"
)

// Stores reports how full each store is, read at most once a second.
func (q *Queue) Stores(ctx context.Context) ([]store.Usage, error) { return q.gauge.Read(ctx) }

// Pressure returns an error wrapping [store.ErrHighWater] when a store
// that accepted jobs still write to is past its high water mark (see
// [store.Gauge.Pressure]).
func (q *Queue) Pressure(ctx context.Context) error { return q.gauge.Pressure(ctx) }

// FullStores says, one line each, which stores refuse writes or submits
// now; none when all have room or they cannot be read.
func (q *Queue) FullStores(ctx context.Context) []string { return q.gauge.Full(ctx) }

// stateTight says whether the job-state store is past its high water
// mark: finishing jobs then keep their outcome without the response body.
func (q *Queue) stateTight(ctx context.Context) bool { return q.gauge.StateTight(ctx) }
