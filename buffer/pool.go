package buffer

import (
	"context"
	"time"
)

// Pool is a concurrency pool shared by several functions as every gateway
// process sees it: one entry in [PacingBucket] under the key "pool.<name>"
// (function names hold no dot, so the keys never meet). The dispatcher owns
// its meaning; buffer only stores it, changing it by compare-and-set.
type Pool struct {
	// Limit is how many invocations the pool allows in flight now, across
	// its functions and processes: the configured concurrency, less what
	// the platform's throttles took off.
	Limit float64 `json:"limit"`
	// Leader is the process that sets the pool's consumer caps, and
	// LeaseUntil when its claim lapses unless renewed.
	Leader     string    `json:"leader,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// LastThrottle is when the limit last shrank for a throttle.
	LastThrottle time.Time `json:"last_throttle,omitzero"`
	// Members are the pool's functions, by name, as the leader last saw
	// and capped them.
	Members map[string]PoolMember `json:"members,omitempty"`
	// Updated is when the leader last wrote the entry.
	Updated time.Time `json:"updated,omitzero"`
}

// PoolMember is one function's share of a pool.
type PoolMember struct {
	// Reserved is the share the function is guaranteed while it has work.
	Reserved int `json:"reserved,omitempty"`
	// Granted is the cap the leader aims at for the function now.
	Granted int `json:"granted"`
	// Cap is the cap the server enforces now (its consumer's
	// MaxAckPending): below Granted while others still give slots back.
	Cap int `json:"cap"`
	// InFlight is how many of its jobs were in flight, and Backlog how
	// many waited.
	InFlight int `json:"in_flight"`
	Backlog  int `json:"backlog,omitempty"`
}

// PoolKey is the key of a pool's entry in [PacingBucket].
func PoolKey(pool string) string { return "pool." + pool }

// Pool returns a pool's shared state; the zero Pool if none has been
// written yet.
func (q *Queue) Pool(ctx context.Context, pool string) (Pool, error) {
	p, _, err := q.pool(ctx, pool)
	return p, err
}

func (q *Queue) pool(ctx context.Context, pool string) (Pool, uint64, error) {
	return readDoc[Pool](ctx, q.pacingKV, PoolKey(pool), "pool "+pool)
}

// UpdatePool applies change to a pool's shared state with compare-and-set,
// retrying when another process changed it in between. change reports
// whether it changed anything; if not, nothing is written. It is called
// again after each conflict, on a fresh read.
func (q *Queue) UpdatePool(ctx context.Context, pool string, change func(*Pool) bool) (Pool, error) {
	return updateDoc(ctx, q.pacingKV, PoolKey(pool), "pool "+pool, change)
}

// Borrowed is how many of the member's jobs in flight run above its
// reserved share, on slots other members lend or nobody reserved.
func (m PoolMember) Borrowed() int { return max(0, m.InFlight-m.Reserved) }

// Lent is how many of the member's reserved slots it does not use now,
// free for the others.
func (m PoolMember) Lent() int { return max(0, m.Reserved-m.InFlight) }
