package buffer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Group commit. With fsync before ack, JetStream stores messages published
// one at a time at the disk's fsync rate, however many publishers wait. An
// atomic batch is stored with one fsync for all its messages. So concurrent
// submits are coalesced: while a batch is being committed, the submits that
// arrive wait, and the next batch takes all of them (up to MaxBatch). A lone
// submit finds no batch in flight and goes at once, alone; under load the
// batches grow by themselves. Each job is still its own message.

// Headers of JetStream's atomic batch publish (nats-server 2.12 and later).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// BatchConfig tunes group commit. The zero value is the default.
type BatchConfig struct {
	// MaxBatch is the most submits stored in one atomic batch. 1 turns
	// group commit off. Default 200; the server's limit is 1,000.
	MaxBatch int
	// MaxInFlight is how many batches may be committing at once. More
	// overlap the network with the disk; fewer make larger batches.
	// Default 2.
	MaxInFlight int
	// Linger is how long a batch waits for more submits once one is
	// waiting and a commit slot is free. Zero, the default, waits for
	// nothing: batches grow only while earlier ones are committing, so a
	// lone submit pays no delay.
	Linger time.Duration
	// Timeout bounds one batch's commit. Default 10s.
	Timeout time.Duration
}

func (c *BatchConfig) setDefaults() {
	if c.MaxBatch == 0 {
		c.MaxBatch = 200
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 2
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// ErrCommitUnknown: a batch's commit was not answered in time, so whether
// its writes were stored is unknown. They were not acknowledged.
var ErrCommitUnknown = errors.New("buffer: no answer to the batch commit; its writes may or may not be stored")

// batcher coalesces concurrent publishes into atomic batches. Its flusher
// goroutine runs only while publishes wait and exits when none do; each
// batch's commit runs in a goroutine of its own that ends when the commit
// is answered or times out.
type batcher struct {
	nc    *nats.Conn
	cfg   BatchConfig
	slots chan struct{} // one per batch committing

	mu       sync.Mutex
	waiting  []*pendingPublish
	flushing bool

	stats batchStats
}

type pendingPublish struct {
	msg       *nats.Msg
	done      chan published // buffered: the flusher never blocks on it
	abandoned atomic.Bool
}

// published is the outcome of one message's publish: its stream sequence,
// or why it was not stored.
type published struct {
	seq uint64
	err error
}

// batchStats counts what group commit did, for benchmarks and tests.
type batchStats struct {
	batches, messages, fallbacks atomic.Int64
}

func newBatcher(nc *nats.Conn, cfg BatchConfig) *batcher {
	cfg.setDefaults()
	return &batcher{nc: nc, cfg: cfg, slots: make(chan struct{}, cfg.MaxInFlight)}
}

// publish stores msg, in a batch with whatever else is waiting, and returns
// once it is stored (with its stream sequence) or surely not stored (the
// reason). ctx bounds the wait: a publish abandoned after its batch was
// sent may still be stored. All messages given to one batcher must go to
// one stream.
func (b *batcher) publish(ctx context.Context, msg *nats.Msg) (uint64, error) {
	p := &pendingPublish{msg: msg, done: make(chan published, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, p)
	if !b.flushing {
		b.flushing = true
		go b.flush()
	}
	b.mu.Unlock()
	select {
	case r := <-p.done:
		return r.seq, r.err
	case <-ctx.Done():
		p.abandoned.Store(true)
		return 0, ctx.Err()
	}
}

// flush sends batches while publishes wait, each as soon as a commit slot
// is free, and returns when none wait.
func (b *batcher) flush() {
	for {
		b.slots <- struct{}{}
		if b.cfg.Linger > 0 {
			time.Sleep(b.cfg.Linger)
		}
		b.mu.Lock()
		n := min(len(b.waiting), b.cfg.MaxBatch)
		batch := make([]*pendingPublish, 0, n)
		for _, p := range b.waiting[:n] {
			if !p.abandoned.Load() {
				batch = append(batch, p)
			}
		}
		b.waiting = append(b.waiting[:0], b.waiting[n:]...)
		if n == 0 {
			b.flushing = false
			b.mu.Unlock()
			<-b.slots
			return
		}
		b.mu.Unlock()
		if len(batch) == 0 {
			<-b.slots
			continue
		}
		go func() {
			defer func() { <-b.slots }()
			b.commit(batch)
		}()
	}
}

// commit stores batch and tells each of its publishes the outcome.
func (b *batcher) commit(batch []*pendingPublish) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	if len(batch) == 1 {
		batch[0].done <- b.publishOne(ctx, batch[0].msg)
		return
	}
	last, err := b.publishAtomic(ctx, batch)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// Refused as a whole, so nothing of it is stored: one message's
		// fault (too large, say, a full stream it alone would not fit, or
		// a compare-and-set it alone lost) must not fail the others, so
		// each is tried on its own.
		b.stats.fallbacks.Add(1)
		for _, p := range batch {
			p.done <- b.publishOne(ctx, p.msg)
		}
		return
	}
	for i, p := range batch {
		if err != nil {
			p.done <- published{err: err}
			continue
		}
		// An atomic batch is stored in one piece, in order.
		p.done <- published{seq: last - uint64(len(batch)-1-i)}
	}
}

// publishOne stores one message the ordinary way.
func (b *batcher) publishOne(ctx context.Context, msg *nats.Msg) published {
	resp, err := b.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return published{err: requestError(err)}
	}
	seq, err := pubAck(resp.Data)
	return published{seq: seq, err: err}
}

// publishAtomic stores batch as one atomic batch: every message but the
// last is published without waiting, and the last commits the lot. It
// returns the last message's stream sequence.
func (b *batcher) publishAtomic(ctx context.Context, batch []*pendingPublish) (uint64, error) {
	id := nuid.Next()
	for i, p := range batch {
		m := *p.msg
		m.Header = make(nats.Header, len(p.msg.Header)+3)
		for k, v := range p.msg.Header {
			m.Header[k] = v
		}
		m.Header.Set(headerBatchID, id)
		m.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		if i < len(batch)-1 {
			if err := b.nc.PublishMsg(&m); err != nil {
				return 0, fmt.Errorf("buffer: publish batch: %w", err)
			}
			continue
		}
		m.Header.Set(headerBatchCommit, "1")
		resp, err := b.nc.RequestMsgWithContext(ctx, &m)
		if err != nil {
			return 0, requestError(err)
		}
		seq, err := pubAck(resp.Data)
		if err != nil {
			return 0, err
		}
		b.stats.batches.Add(1)
		b.stats.messages.Add(int64(len(batch)))
		return seq, nil
	}
	return 0, errors.New("buffer: empty batch")
}

// requestError names a commit that was never answered.
func requestError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return ErrCommitUnknown
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("buffer: publish: %w", jetstream.ErrNoStreamResponse)
	}
	return fmt.Errorf("buffer: publish: %w", err)
}

// pubAck reads JetStream's answer to a publish: the stored message's
// sequence, or the API error of a refusal.
func pubAck(data []byte) (uint64, error) {
	var ack struct {
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
		Error  *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(data, &ack); err != nil {
		return 0, fmt.Errorf("buffer: publish: malformed answer %q: %w", data, err)
	}
	if ack.Error != nil {
		return 0, ack.Error
	}
	if ack.Stream == "" {
		return 0, fmt.Errorf("buffer: publish: unexpected answer %q", data)
	}
	return ack.Seq, nil
}

// BatchStats counts what group commit has done since the queue opened.
type BatchStats struct {
	// Batches is how many atomic batches were stored.
	Batches int64
	// Messages is how many writes those batches held.
	Messages int64
	// Fallbacks is how many batches were refused as a whole and had their
	// writes made one at a time.
	Fallbacks int64
}

func (s *batchStats) snapshot() BatchStats {
	return BatchStats{Batches: s.batches.Load(), Messages: s.messages.Load(), Fallbacks: s.fallbacks.Load()}
}

// BatchStats reports what group commit has done with submitted jobs'
// messages (jobs) and with job state entries (states).
func (q *Queue) BatchStats() (jobs, states BatchStats) {
	return q.batcher.stats.snapshot(), q.stateBat.stats.snapshot()
}
