// Package groupcommit stores concurrent writes to one stream as JetStream
// atomic batches: group commit. With fsync before ack, JetStream stores messages published
// one at a time at the disk's fsync rate, however many publishers wait. An
// atomic batch is stored with one fsync for all its messages. So concurrent
// submits are coalesced: while a batch is being committed, the submits that
// arrive wait, and the next batch takes all of them (up to MaxBatch). A lone
// submit finds no batch in flight and goes at once, alone; under load the
// batches grow by themselves. Each job is still its own message.
package groupcommit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Headers of JetStream's atomic batch publish (nats-server 2.12 and later).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// batchHeaderBytes is room for the batch headers a message in an atomic
// batch carries besides its own (about 90 bytes: a NUID, a sequence of
// at most four digits, the commit mark).
const batchHeaderBytes = 128

// AtomicBatches reports whether a NATS server of that version (as its INFO
// gives it, "2.12.1" say) stores atomic batches: 2.12 and later. An older
// one ignores the batch headers and stores each message on its own.
func AtomicBatches(version string) bool {
	major, rest, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	minor, _, _ := strings.Cut(rest, ".")
	minor, _, _ = strings.Cut(minor, "-")
	ma, err := strconv.Atoi(major)
	if err != nil {
		return false
	}
	mi, err := strconv.Atoi(minor)
	if err != nil {
		return false
	}
	return ma > 2 || ma == 2 && mi >= 12
}

// Config tunes group commit. The zero value is the default.
type Config struct {
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

	// PerMessage publishes every write on its own, all at once, as for a
	// NATS server that stores no atomic batches (older than 2.12).
	PerMessage bool
}

// Defaults and bounds of Config.
const (
	DefaultMaxBatch    = 200
	DefaultMaxInFlight = 2
	// MaxBatchLimit is the NATS server's limit on the messages of one
	// atomic batch.
	MaxBatchLimit = 1000
)

func (c *Config) setDefaults() {
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// ErrCommitUnknown: a batch's commit was not answered in time, or answered
// for its last message only, so whether its writes were stored is unknown.
// They were not acknowledged.
var ErrCommitUnknown = errors.New("buffer: no answer to the batch commit; its writes may or may not be stored")

// ErrTooLarge: a write is larger than the NATS server takes (its
// max_payload), so it was not sent. Nothing else fails with it.
var ErrTooLarge = errors.New("buffer: write larger than the NATS server's max_payload; not sent")

// Batcher coalesces concurrent publishes into atomic batches. Its flusher
// goroutine runs only while publishes wait and exits when none do; each
// batch's commit runs in a goroutine of its own that ends when the commit
// is answered or times out (and, publishing one by one, the goroutines of
// its publishes with it).
type Batcher struct {
	nc    *nats.Conn
	cfg   Config
	log   *slog.Logger
	slots chan struct{} // one per batch committing
	// perMessage: the server stores no atomic batches (older than 2.12,
	// or it answered a commit for its own message only), so each batch's
	// messages are published one by one, all at once.
	perMessage atomic.Bool

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

// New returns a Batcher publishing on nc, which logs to log (nil:
// slog.Default()) when it finds the server stores no atomic batches.
func New(nc *nats.Conn, cfg Config, log *slog.Logger) *Batcher {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	b := &Batcher{nc: nc, cfg: cfg, log: log, slots: make(chan struct{}, cfg.MaxInFlight)}
	b.perMessage.Store(cfg.PerMessage)
	return b
}

// Publish stores msg, in a batch with whatever else is waiting, and returns
// once it is stored (with its stream sequence) or surely not stored (the
// reason). ctx bounds the wait: a publish abandoned after its batch was
// sent may still be stored. All messages given to one batcher must go to
// one stream.
func (b *Batcher) Publish(ctx context.Context, msg *nats.Msg) (uint64, error) {
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
func (b *Batcher) flush() {
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
func (b *Batcher) commit(batch []*pendingPublish) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	if b.perMessage.Load() {
		b.publishEach(ctx, batch)
		return
	}
	// A message with no room for the batch headers goes on its own (and is
	// refused alone if it is too large even so): the client refuses a
	// message over the server's max_payload before sending it, and in a
	// batch that failed the whole batch.
	room := b.nc.MaxPayload() - batchHeaderBytes
	fit := batch[:0:0]
	var alone []*pendingPublish
	for _, p := range batch {
		if msgSize(p.msg) > room {
			alone = append(alone, p)
		} else {
			fit = append(fit, p)
		}
	}
	b.publishEach(ctx, alone)
	switch len(fit) {
	case 0:
		return
	case 1:
		fit[0].done <- b.publishOne(ctx, fit[0].msg)
		return
	}
	last, err := b.publishAtomic(ctx, fit)
	var (
		apiErr  *jetstream.APIError
		unsent  *unsentError
		partial *unbatchedAck
	)
	switch {
	case errors.As(err, &apiErr), errors.As(err, &unsent):
		// Refused as a whole, or never committed, so nothing of it is
		// stored: one message's fault (too large, say, a full stream it
		// alone would not fit, or a compare-and-set it alone lost) must not
		// fail the others, so each is tried on its own.
		b.stats.fallbacks.Add(1)
		b.publishEach(ctx, fit)
	case errors.As(err, &partial):
		// The server stored the commit message on its own; the others were
		// sent with no reply asked, so whether they are stored is unknown.
		// They are not sent again: a plain submit would be stored twice,
		// and a state change applied twice.
		if partial.batch == "" && b.perMessage.CompareAndSwap(false, true) {
			b.log.Warn("the NATS server stores no atomic batches (it is older than 2.12): writes are now published one by one; their group commit is off",
				"nats_server", b.nc.ConnectedServerName(), "nats_version", b.nc.ConnectedServerVersion())
		}
		for _, p := range fit[:len(fit)-1] {
			p.done <- published{err: partial}
		}
		fit[len(fit)-1].done <- published{seq: last}
	case err != nil:
		for _, p := range fit {
			p.done <- published{err: err}
		}
	default:
		b.stats.batches.Add(1)
		b.stats.messages.Add(int64(len(fit)))
		for i, p := range fit {
			// An atomic batch is stored in one piece, in order.
			p.done <- published{seq: last - uint64(len(fit)-1-i)}
		}
	}
}

// publishEach stores each message of batch the ordinary way, all at once,
// and returns when every one is answered.
func (b *Batcher) publishEach(ctx context.Context, batch []*pendingPublish) {
	if len(batch) == 1 {
		batch[0].done <- b.publishOne(ctx, batch[0].msg)
		return
	}
	var wg sync.WaitGroup
	for _, p := range batch {
		wg.Go(func() { p.done <- b.publishOne(ctx, p.msg) })
	}
	wg.Wait()
}

// msgSize is what the client counts against the server's max_payload for
// msg: its data and its encoded headers.
func msgSize(msg *nats.Msg) int64 {
	n := len(msg.Data)
	if len(msg.Header) > 0 {
		n += len("NATS/1.0\r\n") + len("\r\n")
		for k, vs := range msg.Header {
			for _, v := range vs {
				n += len(k) + len(": ") + len(v) + len("\r\n")
			}
		}
	}
	return int64(n)
}

// publishOne stores one message the ordinary way.
func (b *Batcher) publishOne(ctx context.Context, msg *nats.Msg) published {
	resp, err := b.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return published{err: requestError(err)}
	}
	a, err := readAck(resp.Data)
	return published{seq: a.Seq, err: err}
}

// unsentError: a batch failed before its commit was sent, so nothing of it
// is stored (the server drops a batch that is never committed).
type unsentError struct{ err error }

func (e *unsentError) Error() string { return "buffer: publish batch: " + e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// unbatchedAck: the answer to a batch's commit is not the batch's: it
// names another batch, another count, or none (a server older than 2.12
// stores each message on its own and acknowledges the commit message
// alone). It is an [ErrCommitUnknown].
type unbatchedAck struct {
	batch string
	count uint64
	want  int
}

func (e *unbatchedAck) Error() string {
	if e.batch == "" {
		return ErrCommitUnknown.Error() + ": the server acknowledged the last write of the batch alone (atomic batches need NATS 2.12 or later)"
	}
	return fmt.Sprintf("%s: the server acknowledged %d writes of batch %q for a batch of %d", ErrCommitUnknown, e.count, e.batch, e.want)
}

func (e *unbatchedAck) Unwrap() error { return ErrCommitUnknown }

// publishAtomic stores batch as one atomic batch: every message but the
// last is published without waiting, and the last commits the lot. It
// returns the last message's stream sequence; an [*unsentError] if the
// batch failed before its commit was sent, and an [*unbatchedAck] (with
// the last message's sequence) if the server's answer is not for the batch.
func (b *Batcher) publishAtomic(ctx context.Context, batch []*pendingPublish) (uint64, error) {
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
				return 0, &unsentError{err}
			}
			continue
		}
		m.Header.Set(headerBatchCommit, "1")
		resp, err := b.nc.RequestMsgWithContext(ctx, &m)
		if err != nil {
			if notSent(err) {
				return 0, &unsentError{err}
			}
			return 0, requestError(err)
		}
		a, err := readAck(resp.Data)
		if err != nil {
			return 0, err
		}
		if a.Batch != id || a.Count != uint64(len(batch)) {
			return a.Seq, &unbatchedAck{batch: a.Batch, count: a.Count, want: len(batch)}
		}
		return a.Seq, nil
	}
	return 0, errors.New("buffer: empty batch")
}

// notSent reports whether a request failed in the client, before its
// message was sent.
func notSent(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrHeadersNotSupported)
}

// requestError names a commit that was never answered.
func requestError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return ErrCommitUnknown
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		return ErrTooLarge
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("buffer: publish: %w", jetstream.ErrNoStreamResponse)
	}
	return fmt.Errorf("buffer: publish: %w", err)
}

// pubAck is JetStream's answer to a publish. The answer to an atomic
// batch's commit names the batch and how many messages it stored; Seq is
// then the last one's sequence.
type pubAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  uint64              `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// readAck reads JetStream's answer to a publish: what was stored, or the
// API error of a refusal.
func readAck(data []byte) (pubAck, error) {
	var ack pubAck
	if err := json.Unmarshal(data, &ack); err != nil {
		return pubAck{}, fmt.Errorf("buffer: publish: malformed answer %q: %w", data, err)
	}
	if ack.Error != nil {
		return pubAck{}, ack.Error
	}
	if ack.Stream == "" {
		return pubAck{}, fmt.Errorf("buffer: publish: unexpected answer %q", data)
	}
	return ack, nil
}

// Stats counts what group commit has done since the batcher was made.
type Stats struct {
	// Batches is how many atomic batches were stored.
	Batches int64
	// Messages is how many writes those batches held.
	Messages int64
	// Fallbacks is how many batches were refused as a whole and had their
	// writes made one at a time.
	Fallbacks int64
}

// Stats reports what the batcher has done.
func (b *Batcher) Stats() Stats {
	s := &b.stats
	return Stats{Batches: s.batches.Load(), Messages: s.messages.Load(), Fallbacks: s.fallbacks.Load()}
}

// Refused reports whether an error of Publish means the message was surely
// not stored: too large to send, or JetStream answered with a refusal (a
// full stream among them), as opposed to no answer, or none waited for.
func Refused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, ErrTooLarge) || (errors.As(err, &apiErr) && apiErr.Code != 503)
}
