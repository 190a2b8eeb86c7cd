// Package provision creates Sluice's JetStream streams and key-value
// buckets, or updates them to the configuration wanted, refusing to change
// one whose replica count or durability contradicts it ([ErrDurability]);
// and it upgrades the job stream of an earlier Sluice ([Upgrade]).
package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/store"
)

// Creating or updating a stream that already has the wanted configuration
// is not free: nats-server 2.15 rewrites the store's configuration, which
// races (under the race detector) with consumers being created on it by
// another gateway process starting at the same moment. So the resources are
// created when missing and updated only when their settings differ.

// Stream creates the stream, or updates it if its settings differ.
// It returns [ErrDurability], changing nothing, if the stream exists with
// a replica count or durability that contradicts cfg.
func Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, cfg.Name) // another process made it just now
		}
	}
	if err != nil {
		return nil, err
	}
	if err := checkDurability(s.CachedInfo().Config, cfg); err != nil {
		return nil, err
	}
	if have := s.CachedInfo().Config; sameStream(have, cfg) {
		return s, nil
	}
	return js.UpdateStream(ctx, cfg)
}

// sameStream compares the settings Sluice chooses.
func sameStream(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Retention == want.Retention &&
		have.Storage == want.Storage && have.Discard == want.Discard && have.MaxMsgs == want.MaxMsgs &&
		have.MaxBytes == want.MaxBytes && unset(have.MaxMsgSize) == unset(want.MaxMsgSize) && have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates && have.Description == want.Description && have.MaxAge == want.MaxAge &&
		have.AllowAtomicPublish == want.AllowAtomicPublish && unset(have.MaxConsumers) == unset(want.MaxConsumers)
}

// unset is a stream's limit as the server stores it: -1 for none, which a
// config asks for with 0. Compared as written, a limit left unset would
// differ at every start, and the stream be updated every time (an update
// needs the stream's peers, which a fault may have taken away).
func unset[T int | int32](limit T) T {
	if limit <= 0 {
		return -1
	}
	return limit
}

// KeyValue creates the bucket, or updates it if its settings differ.
// It returns [ErrDurability], changing nothing, if the bucket exists with
// a replica count or durability that contradicts cfg.
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := checkBucketDurability(ctx, js, cfg); err != nil {
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.TTL() == cfg.TTL && st.History() == int64(cfg.History) && st.BackingStore() == "JetStream" &&
		st.Config().Replicas == cfg.Replicas && st.Config().Description == cfg.Description &&
		st.Config().MaxBytes == cfg.MaxBytes {
		return kv, nil
	}
	return js.UpdateKeyValue(ctx, cfg)
}

// AllowAtomicPublish turns on atomic batch publishing on a stream made by
// other means (a key-value bucket's), if it is not on already.
func AllowAtomicPublish(ctx context.Context, js jetstream.JetStream, name string) error {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	if cfg.AllowAtomicPublish {
		return nil
	}
	cfg.AllowAtomicPublish = true
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// ErrDurability: a stream or bucket Sluice uses already exists with a
// replica count or durability settings that contradict the configuration.
// buffer.Open returns it, wrapped with what is wrong and what to do, rather than change
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

// Bucket creates or updates a bucket, lets it take atomic batches when
// atomic is set, and returns it with its stream, which a caller may read
// directly (job state) or for its usage.
func Bucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, atomic bool) (jetstream.KeyValue, jetstream.Stream, error) {
	kv, err := KeyValue(ctx, js, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: create bucket %s: %w", cfg.Bucket, err)
	}
	if atomic {
		if err := AllowAtomicPublish(ctx, js, "KV_"+cfg.Bucket); err != nil {
			return nil, nil, fmt.Errorf("buffer: bucket %s: %w", cfg.Bucket, err)
		}
	}
	log, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: bucket %s: %w", cfg.Bucket, err)
	}
	return kv, log, nil
}

// JobStream sizes the stream of queued jobs.
type JobStream struct {
	Name     string
	Subjects []string
	// MaxJobs and MaxBytes bound what it holds; MaxMsgSize bounds one
	// job's message.
	MaxJobs, MaxBytes int64
	MaxMsgSize        int32
	Replicas          int
	// MaxConsumers bounds the consumers that pull from it: dispatch's.
	MaxConsumers int
}

// Config is the configuration of the stream of queued jobs.
func (j JobStream) Config() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        j.Name,
		Description: "Sluice: queued jobs, one message per job until it finishes",
		Subjects:    j.Subjects,
		// Limits, not work-queue, retention: a work queue removes each
		// acknowledged message on its own, one fsync'd tombstone per job.
		// Dispatch removes finished jobs' messages in batches instead
		// (Consumer.RemoveFinished), one fsync for many.
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		// Discard new: a full buffer refuses new jobs, never evicts
		// accepted ones. No MaxAge for the same reason.
		Discard:    jetstream.DiscardNew,
		MaxMsgs:    j.MaxJobs,
		MaxBytes:   j.MaxBytes,
		MaxMsgSize: j.MaxMsgSize,
		Replicas:   j.Replicas,
		Duplicates: 10 * time.Minute,
		// Group commit stores concurrent submits as atomic batches.
		AllowAtomicPublish: true,
		MaxConsumers:       j.MaxConsumers,
	}
}

// PacingBucketConfig is the configuration of the bucket of dispatch
// windows, named name.
func PacingBucketConfig(name string, replicas int) jetstream.KeyValueConfig {
	return BucketConfig(name, "Sluice: dispatch window by function", 0, store.PacingBytes, replicas)
}

// BucketConfig is the configuration of one of Sluice's buckets: one value
// a key, kept for ttl after its last change (0: for good), on file
// storage, maxBytes at most.
func BucketConfig(name, description string, ttl time.Duration, maxBytes int64, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      name,
		Description: description,
		History:     1,
		TTL:         ttl,
		MaxBytes:    maxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// StreamLimits bound a stream that keeps what finished jobs lead to (dead
// letters, callbacks).
type StreamLimits struct {
	// MaxAge is how long a message is kept.
	MaxAge time.Duration
	// MaxMsgs and MaxBytes bound what the stream holds; MaxMsgSize, if
	// set, bounds one message.
	MaxMsgs, MaxBytes int64
	MaxMsgSize        int32
	Replicas          int
}

// Apply sets the limits on cfg, and what such streams share: file
// storage, a ten-minute duplicate window, and, when full, the refusal of
// new messages (the job that leads to one waits) rather than dropping old
// ones.
func (l StreamLimits) Apply(cfg jetstream.StreamConfig) jetstream.StreamConfig {
	cfg.Storage, cfg.Discard, cfg.Duplicates = jetstream.FileStorage, jetstream.DiscardNew, 10*time.Minute
	cfg.MaxAge, cfg.MaxMsgs, cfg.MaxBytes, cfg.MaxMsgSize, cfg.Replicas = l.MaxAge, l.MaxMsgs, l.MaxBytes, l.MaxMsgSize, l.Replicas
	return cfg
}

// Ready reports whether JetStream answers and the streams and the bucket
// kv are in place.
func Ready(ctx context.Context, kv jetstream.KeyValue, streams ...jetstream.Stream) error {
	for _, s := range streams {
		if _, err := s.Info(ctx); err != nil {
			return fmt.Errorf("buffer: stream %s: %w", s.CachedInfo().Config.Name, err)
		}
	}
	if _, err := kv.Status(ctx); err != nil {
		return fmt.Errorf("buffer: bucket %s: %w", kv.Bucket(), err)
	}
	return nil
}
