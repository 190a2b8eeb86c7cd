package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// Creating or updating a stream that already has the wanted configuration
// is not free: nats-server 2.15 rewrites the store's configuration, which
// races (under the race detector) with consumers being created on it by
// another gateway process starting at the same moment. So the resources are
// created when missing and updated only when their settings differ.

// ensureStream creates the stream, or updates it if its settings differ.
// It returns [ErrDurability], changing nothing, if the stream exists with
// a replica count or durability that contradicts cfg.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
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
		have.MaxBytes == want.MaxBytes && have.MaxMsgSize == want.MaxMsgSize && have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates && have.Description == want.Description && have.MaxAge == want.MaxAge &&
		have.AllowAtomicPublish == want.AllowAtomicPublish
}

// ensureKeyValue creates the bucket, or updates it if its settings differ.
// It returns [ErrDurability], changing nothing, if the bucket exists with
// a replica count or durability that contradicts cfg.
func ensureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
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

// allowAtomicPublish turns on atomic batch publishing on a stream made by
// other means (a key-value bucket's), if it is not on already.
func allowAtomicPublish(ctx context.Context, js jetstream.JetStream, name string) error {
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

// migrateWorkQueue deletes a job stream made by an earlier Sluice with
// work-queue retention, which cannot be changed in place, if it is empty;
// Open then creates it anew (and dispatch its consumers). A non-empty one
// is an error: its jobs must drain first.
func migrateWorkQueue(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: stream %s: %w", StreamName, err)
	}
	info := s.CachedInfo()
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		return nil
	}
	if info.State.Msgs > 0 {
		return fmt.Errorf("buffer: stream %s has work-queue retention, from an earlier Sluice, and %d jobs in it: run that version until they are done, then start this one (it recreates the stream)", StreamName, info.State.Msgs)
	}
	if err := js.DeleteStream(ctx, StreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("buffer: recreate stream %s with limits retention: %w", StreamName, err)
	}
	return nil
}
