package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The dead-letter and callback stores are shared by every function and
// tenant. So that no one of them can take all of either, once a store is
// past shareFrom full, a tenant, or a tenant's function, holding more than
// its fair share of it (the store's limit divided among the tenants, or the
// tenants' functions, holding anything there, itself included, and one
// more) has what it adds
// stored lean: a dead letter without its payload (which the job's state
// then says, and which cannot be redriven), a callback without the
// function's response (result_omitted, as for a large one). Below
// shareFrom, nothing is read and nothing limited.
const (
	shareFrom = 0.5
	// sharesEvery is how long a reading of who holds what is reused: a
	// reading scans the store's headers.
	sharesEvery = 5 * time.Second
)

// holdings is who holds how many bytes of one store.
type holdings struct {
	tenants map[string]uint64
	// functions is by tenant and function: one tenant's functions share
	// its share, and no tenant's function is limited for another's.
	functions map[string]uint64
}

// Shares reads and caches who holds what of one store, and says who is
// past their share.
type Shares struct {
	name   string // the store's, as the Gauge reads it
	gauge  *Gauge
	stream jetstream.Stream
	prefix string // subject prefix; the function's name follows it
	mu     sync.Mutex
	at     time.Time
	held   holdings
}

// NewShares reads the holdings of the store named name, held in stream on
// subjects that start with prefix and then the function's name; gauge
// reads how full it is.
func NewShares(gauge *Gauge, name string, stream jetstream.Stream, prefix string) *Shares {
	return &Shares{name: name, gauge: gauge, stream: stream, prefix: prefix}
}

// Over says whether tenant or function holds more than its share of the
// store.
func (g *Shares) Over(ctx context.Context, tenant, function string) bool {
	u, ok := g.gauge.usage(ctx, g.name)
	if !ok || u.Fill() < shareFrom {
		return false
	}
	limit := u.MaxBytes
	if limit <= 0 {
		return false
	}
	// The holdings' maps are the cache's, which Add changes: read them
	// under its lock.
	g.mu.Lock()
	defer g.mu.Unlock()
	held, err := g.read(ctx)
	if err != nil {
		return false // unread: the store's own limit still holds
	}
	return over(held.tenants, tenant, limit) || over(held.functions, tenant+"\x00"+function, limit)
}

// over says whether key holds more than its share of limit: limit divided
// among the holders (key among them) and one more, so that a newcomer
// always finds room, also when one holder was alone.
func over(held map[string]uint64, key string, limit int64) bool {
	n := len(held) + 1
	if _, ok := held[key]; !ok {
		n++
	}
	return held[key] > uint64(limit)/uint64(n)
}

// Add counts what this process just stored, until the next reading.
func (g *Shares) Add(tenant, function string, size int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held.tenants != nil {
		g.held.tenants[tenant] += uint64(size)
		g.held.functions[tenant+"\x00"+function] += uint64(size)
	}
}

// read returns the holdings, read again if the last reading is older than
// sharesEvery. g.mu is held.
func (g *Shares) read(ctx context.Context) (holdings, error) {
	if time.Since(g.at) < sharesEvery && g.held.tenants != nil {
		return g.held, nil
	}
	held, err := g.scan(ctx)
	if err != nil {
		return holdings{}, err
	}
	g.held, g.at = held, time.Now()
	return held, nil
}

// scanBatch is how many messages' headers one fetch of a scan takes.
const scanBatch = 1000

// scan reads the headers of every message in the store, not their bodies,
// and sums their sizes by tenant and by function.
func (g *Shares) scan(ctx context.Context) (holdings, error) {
	held := holdings{tenants: map[string]uint64{}, functions: map[string]uint64{}}
	cons, err := g.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return held, fmt.Errorf("buffer: read holdings: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return held, fmt.Errorf("buffer: read holdings: %w", err)
	}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, scanBatch)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return held, fmt.Errorf("buffer: read holdings: %w", err)
		}
		n := uint64(0)
		for msg := range batch.Messages() {
			n++
			size, _ := strconv.ParseUint(msg.Headers().Get(nats.MsgSize), 10, 64)
			size += uint64(len(msg.Subject()))
			tenant := msg.Headers().Get(TenantHeader)
			function, _, _ := strings.Cut(strings.TrimPrefix(msg.Subject(), g.prefix), ".")
			held.tenants[tenant] += size
			held.functions[tenant+"\x00"+function] += size
		}
		if err := batch.Error(); err != nil {
			return held, fmt.Errorf("buffer: read holdings: %w", err)
		}
		if n == 0 {
			break // the rest went meanwhile (expired, redriven, delivered)
		}
		left -= min(n, left)
	}
	return held, nil
}
