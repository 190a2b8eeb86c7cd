package buffer

import (
	"context"

	"github.com/sluicehq/sluice/buffer/shared"
)

// Pool returns a pool's shared state; the zero Pool if none has been
// written yet.
func (q *Queue) Pool(ctx context.Context, pool string) (shared.Pool, error) {
	p, _, err := q.pool(ctx, pool)
	return p, err
}

func (q *Queue) pool(ctx context.Context, pool string) (shared.Pool, uint64, error) {
	return shared.Read[shared.Pool](ctx, q.pacingKV, shared.PoolKey(pool), "pool "+pool)
}

// UpdatePool applies change to a pool's shared state with compare-and-set,
// retrying when another process changed it in between. change reports
// whether it changed anything; if not, nothing is written. It is called
// again after each conflict, on a fresh read.
func (q *Queue) UpdatePool(ctx context.Context, pool string, change func(*shared.Pool) bool) (shared.Pool, error) {
	return shared.Update(ctx, q.pacingKV, shared.PoolKey(pool), "pool "+pool, change)
}
