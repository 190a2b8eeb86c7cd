package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrHighWater: a store that accepted jobs still need is past its high
// water mark, and new work is refused until it drains. It is an [ErrFull].
var ErrHighWater = fmt.Errorf("%w: a store the accepted jobs need is past its high water mark", ErrFull)

// storesEvery is how long a reading of the stores' usage is reused: the
// readings cost one request per store, and submits consult them.
const storesEvery = time.Second

// Stream is one store to read: its name and the stream that holds it (a
// bucket's, for a bucket).
type Stream struct {
	Name   string
	Stream jetstream.Stream
}

// Gauge reads the stores' usage, and caches it. One caller at a time
// renews a stale reading; the others go on with the last one (none, before
// the first) meanwhile, so that submits, which consult it, never queue
// behind the requests it makes.
type Gauge struct {
	streams   []Stream
	highWater float64

	mu         sync.Mutex
	at         time.Time
	read       []Usage
	err        error
	refreshing bool
}

// NewGauge reads the usage of streams, against the high water mark of
// [Limits.HighWater].
func NewGauge(highWater float64, streams ...Stream) *Gauge {
	return &Gauge{streams: streams, highWater: highWater}
}

// Read reports how full each store is, read at most once a second.
func (g *Gauge) Read(ctx context.Context) ([]Usage, error) {
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
	read, err = g.readStores(ctx)
	g.mu.Lock()
	g.read, g.err, g.at, g.refreshing = read, err, time.Now(), false
	g.mu.Unlock()
	return read, err
}

func (g *Gauge) readStores(ctx context.Context) ([]Usage, error) {
	out := make([]Usage, 0, len(g.streams))
	for _, st := range g.streams {
		info, err := st.Stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("buffer: usage of %s: %w", st.Name, err)
		}
		out = append(out, Usage{
			Name: st.Name, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes,
			Msgs: info.State.Msgs, MaxMsgs: info.Config.MaxMsgs,
		})
	}
	return out, nil
}

// Pressure returns an error wrapping [ErrHighWater] when a store that
// accepted jobs still write to (job state, idempotency keys) is past its
// high water mark: a new job would take room the accepted ones need. When
// the stores cannot be read it says nothing: the write that follows meets
// the same trouble and says it.
func (g *Gauge) Pressure(ctx context.Context) error {
	stores, err := g.Read(ctx)
	if err != nil {
		return nil
	}
	for _, u := range stores {
		if g.pastHighWater(u) {
			return fmt.Errorf("%w: %s store %.0f%% full", ErrHighWater, u.Name, 100*u.Fill())
		}
	}
	return nil
}

// pastHighWater says whether u is a store accepted jobs still write to
// (job state, idempotency keys) and is past its high water mark.
func (g *Gauge) pastHighWater(u Usage) bool {
	return (u.Name == State || u.Name == Idempotency) && u.Fill() >= g.highWater
}

// usage is the reading of the store named name; ok false when there is
// none, or the stores cannot be read.
func (g *Gauge) usage(ctx context.Context, name string) (_ Usage, ok bool) {
	stores, err := g.Read(ctx)
	if err != nil {
		return Usage{}, false
	}
	for _, u := range stores {
		if u.Name == name {
			return u, true
		}
	}
	return Usage{}, false
}

// storeNearlyFull is the fill from which Full names a store: past it a
// large write may already be refused.
const storeNearlyFull = 0.95

// StateTight says whether the job-state store is past its high water
// mark: finishing jobs then keep their outcome without the response body.
func (g *Gauge) StateTight(ctx context.Context) bool {
	u, ok := g.usage(ctx, State)
	return ok && g.pastHighWater(u)
}

// KeyedPressure is Pressure for a keyed submit, which also stops at the
// job store's high water mark: a keyed job let go from waiting is copied
// before its waiting message is removed, so it needs room for one more
// message for a moment, which the room above the mark keeps for it.
func (g *Gauge) KeyedPressure(ctx context.Context) error {
	if err := g.Pressure(ctx); err != nil {
		return err
	}
	if u, ok := g.usage(ctx, Jobs); ok && u.Fill() >= g.highWater {
		return fmt.Errorf("%w: %s store %.0f%% full, and a keyed job needs room to be let go", ErrHighWater, u.Name, 100*u.Fill())
	}
	return nil
}

// Full says, one line each, which stores refuse writes or submits now;
// none when all have room or they cannot be read.
func (g *Gauge) Full(ctx context.Context) []string {
	stores, err := g.Read(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, u := range stores {
		switch fill := u.Fill(); {
		case g.pastHighWater(u):
			out = append(out, fmt.Sprintf("store %s: %.0f%% full, past its high water mark: submits are refused", u.Name, 100*fill))
		case fill >= storeNearlyFull:
			out = append(out, fmt.Sprintf("store %s: %.0f%% full", u.Name, 100*fill))
		}
	}
	return out
}
