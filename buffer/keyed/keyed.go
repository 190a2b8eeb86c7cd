// Package keyed holds back a function's jobs by concurrency key: at most a
// function's key_concurrency of one key's jobs are in flight at once,
// across every gateway process, first in first out within the key, while
// other keys' jobs go on.
//
// A key's slots are a set of held jobs in a bucket entry (<function>.<key
// hash>), changed only by compare-and-set. A job whose key has room and
// nothing waiting is held at its submit and stored straight into dispatch
// (its function's subjects, in its lane): the fast way, which costs the
// set's write and nothing more (see Claim). Any other is stored where
// dispatch does not read it, on its key's waiting subject,
// sluice.keyed.<function>.<key hash>.<id>, in the job stream, and released
// into dispatch when it is first among its key's waiting jobs and the set
// has room: it is added to the set, then copied to dispatch, then its
// waiting message is removed. When a held job reaches its end, whatever
// that is, it leaves the set and the next waiting job takes its place in
// the same write.
//
// A waiting job's delivery, from the consumer that every process shares
// (see Run), stays unacknowledged while it waits on a full key: it comes
// back to look again a minute later, then less and less often (30 minutes
// at most). A process that dies midway through a release leaves a held
// job whose waiting message is still there; the next settle that mends (a
// waiting job's delivery come back) copies it (the copy is deduplicated)
// and removes the message. A job's place is given back after its dispatch
// delivery is acknowledged, so that its window slot is free meanwhile; a
// process that dies between the two leaves a held job that has finished.
// That, and a job held at its submit whose message was never stored (its
// gateway died between the two), is dropped by the next settle of its full
// key once claimGrace has passed since it was held.
//
// A set also marks whether jobs wait for its key: the settle of a job that
// ends looks for waiting jobs only then, which spares a request to the job
// stream per job of a key that nobody waits for (the common case). A job
// that waits sets the mark in the settle it runs once stored, by
// compare-and-set, so that a job ending at the same time either sees the
// mark or makes that settle read the set again and find room.
//
// A key's set exists while the key has a job released or waiting; an
// empty set is purged, its marker kept for a minute. Its size is bounded
// by the jobs in the job stream, which is bounded itself.
package keyed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/jsapi"
	"github.com/sluicehq/sluice/buffer/provision"
)

const (
	// Prefix starts a waiting keyed job's subject in the job stream.
	Prefix = "sluice.keyed."
	// Bucket holds each key's set of released jobs.
	Bucket = "sluice-keys"
	// Header carries a job's concurrency key on its messages.
	Header = "Sluice-Concurrency-Key"
	// MaxConcurrency is the highest key_concurrency a function may have.
	MaxConcurrency = 1000
	// MaxKeyBytes is the longest concurrency key accepted.
	MaxKeyBytes = 256
	// markerTTL is how long the marker of a purged set is kept.
	markerTTL = time.Minute
	// claimGrace is how long a held job may take to be stored, and its
	// place to be given back after it finished: past it, a held job that
	// does not exist never will, and one that finished lost its settle.
	claimGrace = time.Minute
	// maxRecheck bounds how long a waiting job whose key is full waits
	// before it looks again for a lost place.
	maxRecheck = 30 * time.Minute
)

// CheckKey says what is wrong with a concurrency key, if anything.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyBytes || strings.IndexFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("concurrency key must be 1 to %d bytes of printable characters", MaxKeyBytes)
	}
	return nil
}

// Hash names a tenant's key in subjects and the bucket: keys are the
// tenant's own, so that one tenant's jobs never wait behind another's
// that happened to choose the same key.
func Hash(tenant, key string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + key))
	return hex.EncodeToString(sum[:16])
}

// Subject is the waiting subject of job id of function under key hash.
func Subject(function, hash, id string) string {
	return Prefix + function + "." + hash + "." + id
}

// Subjects matches every waiting job of function under key hash.
func Subjects(function, hash string) string { return Prefix + function + "." + hash + ".*" }

// Parse reads a waiting job's subject: its function and key hash.
func Parse(subject string) (function, hash string, ok bool) {
	rest, ok := strings.CutPrefix(subject, Prefix)
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// BucketConfig is the configuration of the bucket of held sets.
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	// No byte limit of its own (-1, as the server stores it): an entry
	// lives while a job of its key is released, so the job stream's
	// limits bound it.
	cfg := provision.BucketConfig(Bucket, "Sluice: jobs in flight by function and concurrency key", 0, -1, replicas)
	cfg.LimitMarkerTTL = markerTTL
	return cfg
}

// set is a key's entry in the bucket: its released jobs, and whether jobs
// wait for it. An entry written before the mark existed (a bare list of
// held jobs) reads as marked: it is looked behind once and rewritten.
type set struct {
	Held    []Held `json:"held,omitempty"`
	Waiting bool   `json:"waiting,omitempty"`
}

func (s *set) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		s.Waiting = true
		return json.Unmarshal(b, &s.Held)
	}
	type plain set
	return json.Unmarshal(b, (*plain)(s))
}

// Held is one released job of a key.
type Held struct {
	// ID is the job's ID.
	ID string `json:"id"`
	// Redrives is which run of the job it is: a redrive releases it anew.
	Redrives int32 `json:"r,omitempty"`
	// Seq is its waiting message's sequence in the job stream; 0 for a
	// job held at its submit, never waiting.
	Seq uint64 `json:"seq,omitempty"`
	// At is when it was held (Unix ns).
	At int64 `json:"at,omitempty"`
}

// recent reports whether h was held too recently for its job's absence,
// or end, to tell that its place is lost: it may be on its way to being
// stored, or its settle on its way.
func (h Held) recent(now time.Time) bool {
	return now.Sub(time.Unix(0, h.At)) < claimGrace
}

// Gate releases keyed jobs. Its fields are set before first use.
type Gate struct {
	// Sets is the stream of the bucket of held sets, read directly: a
	// purged set's marker has a revision the next write must name.
	Sets jetstream.Stream
	// Publish stores a write to the bucket, a message on its stream,
	// coalesced with concurrent writes (group commit: a set is written at
	// each keyed submit and each keyed job's end, and one fsync'd write
	// apiece would bound keyed jobs by the disk's fsync rate). A lost
	// compare-and-set is an error [jsapi.Conflict] recognises.
	Publish func(ctx context.Context, msg *nats.Msg) (uint64, error)
	// Stream is the job stream.
	Stream jetstream.Stream
	// Limit is function's key_concurrency; 0 for a function that has
	// none (any more): its waiting jobs are released MaxConcurrency at a
	// time.
	Limit func(function string) int
	// Copy stores the dispatch copy of a waiting job's message,
	// deduplicated by the job and its run, so that copying it twice stores
	// one.
	Copy func(ctx context.Context, msg *jetstream.RawStreamMsg) error
	// ID and Redrives read a waiting message's job and run.
	ID       func(msg *jetstream.RawStreamMsg) string
	Redrives func(msg *jetstream.RawStreamMsg) int32
	// Gone reports whether run redrives of job id holds no place any
	// more: the job does not exist, or that run of it has finished.
	Gone func(ctx context.Context, id string, redrives int32) (bool, error)
	// Now is the time; time.Now if nil.
	Now func() time.Time
}

func (g *Gate) now() time.Time {
	if g.Now == nil {
		return time.Now()
	}
	return g.Now()
}

func (g *Gate) limit(function string) int {
	if n := g.Limit(function); n > 0 {
		return n
	}
	return MaxConcurrency
}

// Claim holds job id in its key's set at its submit, if the key has room:
// the caller then stores the job straight into dispatch, and gives the
// slot back with Settle if the store was refused. held false: store it on
// its key's waiting subject, and then Settle the key before the submit
// returns. A key contended by other writers is not fought over: the job
// waits.
//
// A key with room has no job waiting whose submit has returned: each
// settles its key after it is stored, which lets it go if there is room,
// and every settle that frees a slot fills it from the waiting first. So
// a job that finds room goes before none submitted before it, and Claim
// need not look for waiting jobs (a request per submit); it waits behind
// them all the same while the set says some wait.
func (g *Gate) Claim(ctx context.Context, function, hash, id string, now time.Time) (held bool, err error) {
	key := function + "." + hash
	for range 3 {
		s, rev, err := g.read(ctx, key)
		if err != nil {
			return false, err
		}
		if holds(s.Held, id) {
			return true, nil // held by an earlier store of this job
		}
		if len(s.Held) >= g.limit(function) || s.Waiting {
			return false, nil // behind the jobs waiting, if any
		}
		err = g.write(ctx, key, rev, set{Held: append(s.Held, Held{ID: id, At: now.UnixNano()})})
		if !jsapi.Conflict(err) {
			if err != nil {
				return false, fmt.Errorf("buffer: hold job %s for its key: %w", id, err)
			}
			return true, nil
		}
	}
	return false, nil
}

// Settle brings the set of function's key hash up to date: done, if not
// nil, leaves it (its job ended), and waiting jobs, first come first, take
// the room there is. With mend, it first finishes the release of held jobs
// whose waiting message is still there (see the package comment); a full
// key drops held jobs that are gone (never stored, or finished) once
// claimGrace has passed since they were held. A job that ends (done not
// nil) looks for waiting jobs only if the set says some wait. recheck
// says the key is still full: a later settle may find a place lost.
func (g *Gate) Settle(ctx context.Context, function, hash string, done *Held, mend bool) (recheck bool, err error) {
	limit, key := g.limit(function), function+"."+hash
	for {
		s, rev, err := g.read(ctx, key)
		if err != nil {
			return false, err
		}
		if mend {
			for _, h := range s.Held {
				if err := g.mend(ctx, h); err != nil {
					return false, err
				}
			}
			mend = false
		}
		keep := s.Held[:0:0]
		for _, h := range s.Held {
			if done == nil || h.ID != done.ID || h.Redrives != done.Redrives {
				keep = append(keep, h)
			}
		}
		if len(keep) >= limit {
			if keep, err = g.dropGone(ctx, keep); err != nil {
				return false, err
			}
		}
		// A job that ends looks for waiting ones only if the set says
		// there are; any other settle is a waiting job's, and looks.
		var next []*jetstream.RawStreamMsg
		stillWaiting := false
		if s.Waiting || done == nil {
			if next, stillWaiting, err = g.waiting(ctx, function, hash, keep, limit-len(keep)); err != nil {
				return false, err
			}
		}
		if len(next) == 0 && len(keep) == len(s.Held) && stillWaiting == s.Waiting {
			return len(keep) >= limit, nil
		}
		err = g.write(ctx, key, rev, set{Held: append(keep, heldOf(g, next)...), Waiting: stillWaiting})
		if jsapi.Conflict(err) {
			continue // another process changed it meanwhile: read it again
		}
		if err != nil {
			return false, fmt.Errorf("buffer: jobs in flight of a key of %s: %w", function, err)
		}
		for _, msg := range next {
			if err := g.release(ctx, msg); err != nil {
				return false, err
			}
		}
		return false, nil
	}
}

// dropGone leaves out of held the jobs held longer than claimGrace that
// hold no place any more: never stored (their gateway died first), or
// finished (their process died before giving the place back).
func (g *Gate) dropGone(ctx context.Context, held []Held) ([]Held, error) {
	keep := held[:0:0]
	for _, h := range held {
		if !h.recent(g.now()) {
			gone, err := g.Gone(ctx, h.ID, h.Redrives)
			if err != nil {
				return nil, err
			}
			if gone {
				continue
			}
		}
		keep = append(keep, h)
	}
	return keep, nil
}

// read reads a key's set and its revision: none and 0 if it never had
// one, none and the marker's revision if it was purged.
func (g *Gate) read(ctx context.Context, key string) (set, uint64, error) {
	msg, err := g.Sets.GetLastMsgForSubject(ctx, setSubject(key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return set{}, 0, nil
	}
	if err != nil {
		return set{}, 0, fmt.Errorf("buffer: read jobs in flight of key %s: %w", key, err)
	}
	if jsapi.Deleted(msg.Header) {
		return set{}, msg.Sequence, nil
	}
	var s set
	if err := json.Unmarshal(msg.Data, &s); err != nil {
		return set{}, 0, fmt.Errorf("buffer: read jobs in flight of key %s: %w", key, err)
	}
	return s, msg.Sequence, nil
}

// write replaces the set read at rev by s (purging it, its marker kept
// for markerTTL, when it is empty), and fails with a conflict if it
// changed since.
func (g *Gate) write(ctx context.Context, key string, rev uint64, s set) error {
	msg := nats.NewMsg(setSubject(key))
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	if len(s.Held) == 0 && !s.Waiting {
		// What KeyValue.Purge with a TTL writes.
		msg.Header.Set(jsapi.KVOperation, "PURGE")
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		msg.Header.Set(jetstream.MsgTTLHeader, markerTTL.String())
	} else {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		msg.Data = b
	}
	_, err := g.Publish(ctx, msg)
	return err
}

// setSubject is the subject of a key's set in its bucket's stream.
func setSubject(key string) string { return jsapi.KVSubject(Bucket, key) }

// waiting returns up to room of the key's waiting jobs, first stored
// first, that are not held already, and whether more wait behind them.
func (g *Gate) waiting(ctx context.Context, function, hash string, held []Held, room int) (next []*jetstream.RawStreamMsg, more bool, err error) {
	for seq := uint64(1); ; {
		msg, err := g.Stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(Subjects(function, hash)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return next, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("buffer: read waiting jobs of a key of %s: %w", function, err)
		}
		seq = msg.Sequence + 1
		if holds(held, g.ID(msg)) {
			continue // released, its waiting message not removed yet
		}
		if len(next) == room {
			return next, true, nil
		}
		next = append(next, msg)
	}
}

func holds(held []Held, id string) bool {
	for _, h := range held {
		if h.ID == id {
			return true
		}
	}
	return false
}

func heldOf(g *Gate, msgs []*jetstream.RawStreamMsg) []Held {
	out := make([]Held, len(msgs))
	for i, m := range msgs {
		out[i] = Held{ID: g.ID(m), Redrives: g.Redrives(m), Seq: m.Sequence, At: g.now().UnixNano()}
	}
	return out
}

// release copies a held job's waiting message to dispatch, then removes
// it.
func (g *Gate) release(ctx context.Context, msg *jetstream.RawStreamMsg) error {
	if err := g.Copy(ctx, msg); err != nil {
		return fmt.Errorf("buffer: release keyed job %s: %w", g.ID(msg), err)
	}
	if err := g.Stream.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("buffer: release keyed job %s: %w", g.ID(msg), err)
	}
	return nil
}

// mend finishes the release of a held job whose waiting message is still
// there: a process stopped between holding it and removing the message.
func (g *Gate) mend(ctx context.Context, h Held) error {
	if h.Seq == 0 {
		return nil // held at its submit: never waiting
	}
	msg, err := g.Stream.GetMsg(ctx, h.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // released in full
	}
	if err != nil {
		return fmt.Errorf("buffer: read keyed job %s: %w", h.ID, err)
	}
	if !strings.HasPrefix(msg.Subject, Prefix) || g.ID(msg) != h.ID {
		return nil
	}
	return g.release(ctx, msg)
}

// Consumption of the waiting jobs (see Run).
const (
	// ConsumerName is the durable consumer that every gateway process
	// shares to see waiting jobs as they are stored.
	ConsumerName = "sluice-keyed"
	// settlers is how many waiting jobs a process settles at once.
	settlers = 64
	ackWait  = 30 * time.Second
	retry    = time.Second
)

// Consume is how Run pulls the waiting jobs from their consumer: it calls
// handle with each until ctx ends.
type Consume func(ctx context.Context, cons jetstream.Consumer, maxBuffered int, handle func(jetstream.Msg), opts ...jetstream.PullMessagesOpt) error

// Run settles each waiting job's key as the job is stored, releasing it if
// its key has room, until ctx ends; it returns nil then. Every gateway
// process runs it; they share the work. A job its key has no room for
// stays waiting, and is released when one of its key's jobs ends.
func (g *Gate) Run(ctx context.Context, log *slog.Logger, consume Consume) error {
	for ctx.Err() == nil {
		if err := g.run(ctx, log, consume); err != nil && ctx.Err() == nil {
			log.Warn("keyed jobs: will try again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
		}
	}
	return nil
}

func (g *Gate) run(ctx context.Context, log *slog.Logger, consume Consume) error {
	cons, err := g.Stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "Sluice: keyed jobs waiting for their key",
		FilterSubject: Prefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		// Waiting jobs that come back to check a claim (see settleMsg)
		// stay pending meanwhile; the job stream bounds how many.
		MaxAckPending: -1,
		MaxDeliver:    -1,
	})
	if err != nil {
		return fmt.Errorf("buffer: keyed jobs' consumer: %w", err)
	}
	var busy sync.WaitGroup
	defer busy.Wait()
	slots := make(chan struct{}, settlers)
	return consume(ctx, cons, settlers, func(msg jetstream.Msg) {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return // it comes back after the ack wait
		}
		busy.Go(func() {
			defer func() { <-slots }()
			g.settleMsg(ctx, log, msg)
		})
	})
}

// settleMsg settles the key of one waiting job's delivery; one delivered
// before mends what its first settle may have left half done.
func (g *Gate) settleMsg(ctx context.Context, log *slog.Logger, msg jetstream.Msg) {
	function, hash, ok := Parse(msg.Subject())
	md, err := msg.Metadata()
	if !ok || err != nil {
		msg.Term() //nolint:errcheck // not a waiting job: nothing to settle
		return
	}
	recheck, err := g.Settle(ctx, function, hash, nil, md.NumDelivered > 1)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("keyed job not released yet", "function", function, "err", err)
		}
		msg.NakWithDelay(retry) //nolint:errcheck // it comes back after the ack wait at worst
		return
	}
	if recheck {
		// Its key is full: come back to look again, in case a place was
		// lost (see the package comment), a minute later, then less and
		// less often. Should it be let go meanwhile, its message goes,
		// and no redelivery comes.
		delay := min(claimGrace<<min(md.NumDelivered-1, 5), maxRecheck)
		msg.NakWithDelay(delay) //nolint:errcheck // it comes back after the ack wait at worst
		return
	}
	// Released, or waiting for its key: either way its key's next
	// settle takes it from here. Acknowledging keeps the message.
	msg.Ack() //nolint:errcheck // a redelivery settles again, at no harm
}
