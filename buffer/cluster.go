package buffer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrDurability: a stream or bucket Sluice uses already exists with a
// replica count or durability settings that contradict the [Config]. Open
// returns it, wrapped with what is wrong and what to do, rather than change
// the stream: a replica started with the wrong count must not scale down
// the streams the others rely on.
var ErrDurability = errors.New("buffer: existing stream contradicts the configured durability")

// checkDurability reports how an existing stream's configuration, have,
// contradicts the one Sluice wants: its replica count, its storage, or an
// asynchronous persist mode. It returns nil if nothing does.
func checkDurability(have, want jetstream.StreamConfig) error {
	var problems []string
	if h, w := max(have.Replicas, 1), max(want.Replicas, 1); h != w {
		problems = append(problems, fmt.Sprintf(
			"it has %d replicas and the configuration asks for %d: configure %d (every Sluice replica must agree), or, to change it on purpose, first scale each of Sluice's streams and buckets with `nats stream edit NAME --replicas %d`",
			h, w, h, w))
	}
	if have.Storage != want.Storage {
		problems = append(problems, fmt.Sprintf(
			"it keeps its messages in %s storage, not %s: storage cannot change in place; once it holds nothing you need, delete it (`nats stream rm %s`) and Sluice makes it anew",
			have.Storage, want.Storage, have.Name))
	}
	if have.PersistMode == jetstream.AsyncPersistMode && want.PersistMode != jetstream.AsyncPersistMode {
		problems = append(problems, fmt.Sprintf(
			"it has persist_mode async, which acknowledges writes before they are stored and can lose acknowledged jobs: set it back to the default persist mode (`nats stream edit %s`), or recreate the stream once it holds nothing you need",
			have.Name))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: stream %s: %s", ErrDurability, have.Name, strings.Join(problems, "; "))
}

// checkBucketDurability is checkDurability for an existing key-value
// bucket, whose stream is KV_<bucket>.
func checkBucketDurability(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	s, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return err
	}
	return checkDurability(s.CachedInfo().Config, jetstream.StreamConfig{Replicas: cfg.Replicas, Storage: cfg.Storage})
}

// errCodeDuplicateInProcess is JetStream's JSStreamDuplicateMessageConflict:
// "duplicate message id is in process".
const errCodeDuplicateInProcess = 10158

// Unavailable reports whether err, from a Queue method, means JetStream
// could not be reached or had no leader to answer (a node down, a leader
// election, a network cut, this process draining its connection as it
// stops) rather than that the request was wrong: the
// caller may try again shortly. A write that failed so may or may not have
// been stored.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrCommitUnknown), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDrainTimeout),
		errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrJetStreamNotEnabled):
		return true
	case errors.As(err, &apiErr):
		// 503: JetStream system temporarily unavailable, no quorum.
		// 10158: a publish with the same message ID is still being
		// replicated (an idempotent submit taken over during a leader
		// change); asked again shortly, JetStream answers with that one.
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeDuplicateInProcess
	}
	return false
}
