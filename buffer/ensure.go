package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
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

// An earlier Sluice kept jobs in a stream of the same name with work-queue
// retention, which cannot be changed in place: the stream has to be
// replaced, and no job in it, nor one an older replica submits meanwhile,
// may be lost. So the upgrade
//
//  1. seals the old stream: from then on it refuses every new message (an
//     older replica's submit fails, unacknowledged, and its client may try
//     again), while older replicas may still finish the jobs in it;
//  2. copies what it holds into the holding stream [upgradeStream], one
//     subject per message, so that copying again (another process, or
//     after a crash) adds nothing;
//  3. deletes the old stream, and Open creates the new one;
//  4. moves the copies into the new stream, each unless its job's message
//     is already there, removing each copy once moved, and then removes
//     the holding stream.
//
// A crash at any point leaves what the next Open finishes. A job finished by
// an older replica after its copy was taken is delivered once more and,
// finished, only removed.
const (
	// upgradeStream holds the jobs of an earlier Sluice's work-queue stream
	// while the stream is replaced.
	upgradeStream = "SLUICE_JOBS_UPGRADE"
	// upgradePrefix starts the subject of each copy; the old stream's
	// sequence of the message follows it.
	upgradePrefix = "sluice.upgrade.jobs."
	// headerUpgradeSubject keeps a copied message's subject.
	headerUpgradeSubject = "Sluice-Upgrade-Subject"
)

// testHookUpgrade, if set, is called at each step of the upgrade.
var testHookUpgrade func(step string)

func upgradeStep(step string) {
	if testHookUpgrade != nil {
		testHookUpgrade(step)
	}
}

// migrateWorkQueue takes the job stream of an earlier Sluice, one with
// work-queue retention, out of the way: sealed, its jobs copied aside,
// deleted (steps 1 to 3 above). [finishUpgrade] moves the jobs back once the
// new stream exists.
func migrateWorkQueue(ctx context.Context, js jetstream.JetStream, replicas int) error {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: stream %s: %w", StreamName, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy {
		return nil
	}
	upgradeStep("found")
	if !cfg.Sealed {
		cfg.Sealed = true
		if s, err = js.UpdateStream(ctx, cfg); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil // another process is done with it
			}
			return fmt.Errorf("buffer: seal stream %s from an earlier Sluice: %w", StreamName, err)
		}
	}
	upgradeStep("sealed")
	if s.CachedInfo().State.Msgs > 0 {
		if err := copyAside(ctx, js, s, replicas); err != nil {
			return err
		}
	}
	upgradeStep("copied")
	if err := js.DeleteStream(ctx, StreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("buffer: recreate stream %s with limits retention: %w", StreamName, err)
	}
	upgradeStep("deleted")
	return nil
}

// copyAside copies every message of the sealed old stream into the
// holding stream, unless copied already.
func copyAside(ctx context.Context, js jetstream.JetStream, old jetstream.Stream, replicas int) error {
	hold, err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        upgradeStream,
		Description: "Sluice: jobs of an earlier Sluice's stream, while it is replaced",
		Subjects:    []string{upgradePrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return fmt.Errorf("buffer: create stream %s: %w", upgradeStream, err)
	}
	for seq := uint64(1); ; {
		msg, err := old.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(SubjectPrefix+">"))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return nil // another process copied it all and deleted it
		case err != nil:
			return fmt.Errorf("buffer: read stream %s from an earlier Sluice: %w", StreamName, err)
		}
		seq = msg.Sequence + 1
		subj := upgradePrefix + strconv.FormatUint(msg.Sequence, 10)
		switch _, err := hold.GetLastMsgForSubject(ctx, subj); {
		case err == nil:
			continue // copied before
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("buffer: read stream %s: %w", upgradeStream, err)
		}
		cp := nats.NewMsg(subj)
		cp.Header = copyHeader(msg.Header)
		cp.Header.Set(headerUpgradeSubject, msg.Subject)
		cp.Data = msg.Data
		if _, err := js.PublishMsg(ctx, cp); err != nil {
			return fmt.Errorf("buffer: copy job to stream %s: %w", upgradeStream, err)
		}
	}
}

// copyHeader is a stored message's headers as a new publish of it may
// carry them: without the server's own (batch, expectations), but with the
// message ID, which deduplicates as it did.
func copyHeader(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "Nats-") && k != jetstream.MsgIDHeader {
			continue
		}
		out[k] = slices.Clone(v)
	}
	return out
}

// finishUpgrade moves the jobs an upgrade copied aside into the job stream
// (step 4 above), if there are any.
func finishUpgrade(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream) error {
	hold, err := js.Stream(ctx, upgradeStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: stream %s: %w", upgradeStream, err)
	}
	for {
		msg, err := hold.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(upgradePrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("buffer: read stream %s: %w", upgradeStream, err)
		}
		subj := msg.Header.Get(headerUpgradeSubject)
		switch _, err := stream.GetLastMsgForSubject(ctx, subj); {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			m := nats.NewMsg(subj)
			m.Header = copyHeader(msg.Header)
			m.Header.Del(headerUpgradeSubject)
			m.Data = msg.Data
			if _, err := js.PublishMsg(ctx, m); err != nil {
				return fmt.Errorf("buffer: move job back from stream %s: %w", upgradeStream, classifyPublishError(err))
			}
		case err != nil:
			return fmt.Errorf("buffer: read job %s: %w", subj, err)
		}
		// Moved, now or before.
		if err := hold.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("buffer: remove moved job from stream %s: %w", upgradeStream, err)
		}
	}
	upgradeStep("moved")
	if err := js.DeleteStream(ctx, upgradeStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("buffer: remove stream %s: %w", upgradeStream, err)
	}
	return nil
}
