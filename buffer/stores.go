package buffer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoreLimits sizes the streams and buckets besides the job stream. Every
// one has a limit: JetStream reserves each against the server's storage
// when it is made (a configuration that does not fit is refused at start),
// so no store can grow into another's room or fill the server's disk.
type StoreLimits struct {
	// StateBytes bounds the job-state bucket: every started job's state,
	// its result included, until its retention passes. Default 1 GiB.
	StateBytes int64
	// IdempotencyBytes bounds the idempotency-key bucket. Default 64 MiB.
	IdempotencyBytes int64
	// DeadLetterBytes bounds the dead letters. Default: the job stream's
	// MaxBytes.
	DeadLetterBytes int64
	// CallbackBytes bounds the callbacks waiting for delivery. Default: the
	// job stream's MaxBytes.
	CallbackBytes int64
	// HighWater is the fraction of the state or idempotency bucket past
	// which submits are refused (ErrStoreFull, 503 with Retry-After), so
	// that the jobs already accepted still find room for their state and
	// results. Default 0.9.
	HighWater float64
}

// Defaults of StoreLimits.
const (
	DefaultStateBytes       = 1 << 30
	DefaultIdempotencyBytes = 64 << 20
	DefaultHighWater        = 0.9
	// pacingBucketBytes bounds the pacing bucket: one small entry per
	// function and lane.
	pacingBucketBytes = 8 << 20
)

func (l *StoreLimits) setDefaults(jobBytes int64) {
	if l.StateBytes == 0 {
		l.StateBytes = DefaultStateBytes
	}
	if l.IdempotencyBytes == 0 {
		l.IdempotencyBytes = DefaultIdempotencyBytes
	}
	if l.DeadLetterBytes == 0 {
		l.DeadLetterBytes = jobBytes
	}
	if l.CallbackBytes == 0 {
		l.CallbackBytes = jobBytes
	}
	if l.HighWater == 0 {
		l.HighWater = DefaultHighWater
	}
}

// Check says what is wrong with the limits, if anything.
func (l StoreLimits) Check() error {
	for _, v := range []struct {
		name string
		n    int64
	}{{"state", l.StateBytes}, {"idempotency", l.IdempotencyBytes}, {"dead letters", l.DeadLetterBytes}, {"callbacks", l.CallbackBytes}} {
		if v.n < 0 {
			return fmt.Errorf("buffer: %s store limit %d: must not be negative", v.name, v.n)
		}
	}
	if l.HighWater < 0 || l.HighWater > 1 {
		return fmt.Errorf("buffer: high water %v: must be between 0 and 1", l.HighWater)
	}
	return nil
}

// Names of the stores, as StoreUsage, metrics and /readyz give them.
const (
	StoreJobs        = "jobs"
	StoreState       = "state"
	StoreIdempotency = "idempotency"
	StoreDeadLetters = "dead_letters"
	StoreCallbacks   = "callbacks"
)

// StoreUsage is how full one store is.
type StoreUsage struct {
	Name     string
	Bytes    uint64
	MaxBytes int64 // -1: unbounded
	Msgs     uint64
	MaxMsgs  int64 // -1: unbounded
}

// Fill is the larger of the store's byte and message fill, from 0 to 1.
func (u StoreUsage) Fill() float64 {
	var f float64
	if u.MaxBytes > 0 {
		f = float64(u.Bytes) / float64(u.MaxBytes)
	}
	if u.MaxMsgs > 0 {
		f = max(f, float64(u.Msgs)/float64(u.MaxMsgs))
	}
	return min(f, 1)
}

// ErrStoreFull: a store that accepted jobs still need is past its high
// water mark, and new work is refused until it drains. It is an [ErrFull].
var ErrStoreFull = fmt.Errorf("%w: a store the accepted jobs need is past its high water mark", ErrFull)

// storesEvery is how long a reading of the stores' usage is reused: the
// readings cost one request per store, and submits consult them.
const storesEvery = time.Second

// storeGauge caches the stores' usage. One caller at a time renews a
// stale reading; the others go on with the last one (none, before the
// first) meanwhile, so that submits, which consult it, never queue behind
// the requests it makes.
type storeGauge struct {
	mu         sync.Mutex
	at         time.Time
	read       []StoreUsage
	err        error
	refreshing bool
}

// Stores reports how full each store is, read at most once a second.
func (q *Queue) Stores(ctx context.Context) ([]StoreUsage, error) {
	g := &q.gauge
	g.mu.Lock()
	read, err := g.read, g.err
	renew := time.Since(g.at) >= storesEvery && !g.refreshing
	if renew {
		g.refreshing = true
	}
	g.mu.Unlock()
	if !renew {
		// Until the first reading is made there is none: every caller
		// takes no reading as no news.
		return read, err
	}
	read, err = q.readStores(ctx)
	g.mu.Lock()
	g.read, g.err, g.at, g.refreshing = read, err, time.Now(), false
	g.mu.Unlock()
	return read, err
}

func (q *Queue) readStores(ctx context.Context) ([]StoreUsage, error) {
	streams := []struct {
		name string
		s    jetstream.Stream
	}{{StoreJobs, q.stream}, {StoreState, q.stateLog}, {StoreIdempotency, q.idemLog}, {StoreDeadLetters, q.dead}, {StoreCallbacks, q.callbacks}}
	out := make([]StoreUsage, 0, len(streams))
	for _, st := range streams {
		info, err := st.s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("buffer: usage of %s: %w", st.name, err)
		}
		out = append(out, StoreUsage{
			Name: st.name, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes,
			Msgs: info.State.Msgs, MaxMsgs: info.Config.MaxMsgs,
		})
	}
	return out, nil
}

// Pressure returns an error wrapping [ErrStoreFull] when a store that
// accepted jobs still write to (job state, idempotency keys) is past its
// high water mark: a new job would take room the accepted ones need. When
// the stores cannot be read it says nothing: the write that follows meets
// the same trouble and says it.
func (q *Queue) Pressure(ctx context.Context) error {
	stores, err := q.Stores(ctx)
	if err != nil {
		return nil
	}
	for _, u := range stores {
		if q.pastHighWater(u) {
			return fmt.Errorf("%w: %s store %.0f%% full", ErrStoreFull, u.Name, 100*u.Fill())
		}
	}
	return nil
}

// pastHighWater says whether u is a store accepted jobs still write to
// (job state, idempotency keys) and is past its high water mark.
func (q *Queue) pastHighWater(u StoreUsage) bool {
	return (u.Name == StoreState || u.Name == StoreIdempotency) && u.Fill() >= q.limits.HighWater
}

// storeUsage is the reading of the store named name; ok false when there
// is none.
func storeUsage(stores []StoreUsage, name string) (_ StoreUsage, ok bool) {
	for _, u := range stores {
		if u.Name == name {
			return u, true
		}
	}
	return StoreUsage{}, false
}

// storeNearlyFull is the fill from which FullStores names a store: past it
// a large write may already be refused.
const storeNearlyFull = 0.95

// stateTight says whether the job-state store is past its high water
// mark: finishing jobs then keep their outcome without the response body.
func (q *Queue) stateTight(ctx context.Context) bool {
	stores, err := q.Stores(ctx)
	if err != nil {
		return false
	}
	u, ok := storeUsage(stores, StoreState)
	return ok && q.pastHighWater(u)
}

// FullStores says, one line each, which stores refuse writes or submits
// now; none when all have room or they cannot be read.
func (q *Queue) FullStores(ctx context.Context) []string {
	stores, err := q.Stores(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, u := range stores {
		switch fill := u.Fill(); {
		case q.pastHighWater(u):
			out = append(out, fmt.Sprintf("store %s: %.0f%% full, past its high water mark: submits are refused", u.Name, 100*fill))
		case fill >= storeNearlyFull:
			out = append(out, fmt.Sprintf("store %s: %.0f%% full", u.Name, 100*fill))
		}
	}
	return out
}

// explainStorage adds to JetStream's refusal to reserve a store's room
// what Sluice asked for in all, and which settings set it.
func explainStorage(err error, cfg Config) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeInsufficientResources {
		return err
	}
	total := cfg.MaxBytes + cfg.Stores.StateBytes + cfg.Stores.IdempotencyBytes + cfg.Stores.DeadLetterBytes +
		cfg.Stores.CallbackBytes + pacingBucketBytes
	return fmt.Errorf("%w (Sluice's stores reserve %d bytes × %d replicas in all: jobs %d, state %d, "+
		"idempotency %d, dead letters %d, callbacks %d, pacing %d; lower the buffer's limits or give "+
		"JetStream more storage)", err, total, cfg.Replicas, cfg.MaxBytes, cfg.Stores.StateBytes,
		cfg.Stores.IdempotencyBytes, cfg.Stores.DeadLetterBytes, cfg.Stores.CallbackBytes, pacingBucketBytes)
}

// errCodeInsufficientResources is nats-server's JSInsufficientResourcesErr:
// a stream's limits cannot be reserved on the server's storage.
const errCodeInsufficientResources jetstream.ErrorCode = 10047
