package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/store"
)

// An earlier Sluice kept jobs in a stream of the same name with work-queue
// retention, which cannot be changed in place: the stream has to be
// replaced, and no job in it, nor one an older replica submits meanwhile,
// may be lost. So the upgrade
//
//  1. seals the old stream: from then on it refuses every new message (an
//     older replica's submit fails, unacknowledged, and its client may try
//     again), while older replicas may still finish the jobs in it;
//  2. copies what it holds into the holding stream [UpgradeStream], one
//     subject per message, so that copying again (another process, or
//     after a crash) adds nothing;
//  3. deletes the old stream, and the caller creates the new one;
//  4. moves the copies into the new stream, each unless its job's message
//     is already there, removing each copy once moved, and then removes
//     the holding stream.
//
// A crash at any point leaves what the next Open finishes. A job finished by
// an older replica after its copy was taken is delivered once more and,
// finished, only removed.
type Upgrade struct {
	JS jetstream.JetStream
	// Stream is the job stream's name; Jobs is a subject filter matching
	// every job message in it.
	Stream, Jobs string
	// Replicas is the holding stream's replica count.
	Replicas int
	// Step, if set, is called at each step of the upgrade (for tests).
	Step func(step string)
}

const (
	// UpgradeStream holds the jobs of an earlier Sluice's work-queue stream
	// while the stream is replaced.
	UpgradeStream = "SLUICE_JOBS_UPGRADE"
	// upgradePrefix starts the subject of each copy; the old stream's
	// sequence of the message follows it.
	upgradePrefix = "sluice.upgrade.jobs."
	// headerUpgradeSubject keeps a copied message's subject.
	headerUpgradeSubject = "Sluice-Upgrade-Subject"
)

func (u Upgrade) step(step string) {
	if u.Step != nil {
		u.Step(step)
	}
}

// Begin takes the job stream of an earlier Sluice, one with work-queue
// retention, out of the way: sealed, its jobs copied aside, deleted (steps
// 1 to 3 above). [Upgrade.Finish] moves the jobs back once the new stream
// exists.
func (u Upgrade) Begin(ctx context.Context) error {
	js := u.JS
	s, err := js.Stream(ctx, u.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: stream %s: %w", u.Stream, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy {
		return nil
	}
	u.step("found")
	if !cfg.Sealed {
		cfg.Sealed = true
		if s, err = js.UpdateStream(ctx, cfg); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil // another process is done with it
			}
			return fmt.Errorf("buffer: seal stream %s from an earlier Sluice: %w", u.Stream, err)
		}
	}
	u.step("sealed")
	if s.CachedInfo().State.Msgs > 0 {
		if err := u.copyAside(ctx, s); err != nil {
			return err
		}
	}
	u.step("copied")
	if err := js.DeleteStream(ctx, u.Stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("buffer: recreate stream %s with limits retention: %w", u.Stream, err)
	}
	u.step("deleted")
	return nil
}

// copyAside copies every message of the sealed old stream into the
// holding stream, unless copied already.
func (u Upgrade) copyAside(ctx context.Context, old jetstream.Stream) error {
	js := u.JS
	hold, err := Stream(ctx, js, jetstream.StreamConfig{
		Name:        UpgradeStream,
		Description: "Sluice: jobs of an earlier Sluice's stream, while it is replaced",
		Subjects:    []string{upgradePrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    u.Replicas,
	})
	if err != nil {
		return fmt.Errorf("buffer: create stream %s: %w", UpgradeStream, err)
	}
	for seq := uint64(1); ; {
		msg, err := old.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(u.Jobs))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return nil // another process copied it all and deleted it
		case err != nil:
			return fmt.Errorf("buffer: read stream %s from an earlier Sluice: %w", u.Stream, err)
		}
		seq = msg.Sequence + 1
		subj := upgradePrefix + strconv.FormatUint(msg.Sequence, 10)
		switch _, err := hold.GetLastMsgForSubject(ctx, subj); {
		case err == nil:
			continue // copied before
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("buffer: read stream %s: %w", UpgradeStream, err)
		}
		cp := nats.NewMsg(subj)
		cp.Header = CopyHeader(msg.Header)
		cp.Header.Set(headerUpgradeSubject, msg.Subject)
		cp.Data = msg.Data
		if _, err := js.PublishMsg(ctx, cp); err != nil {
			return fmt.Errorf("buffer: copy job to stream %s: %w", UpgradeStream, err)
		}
	}
}

// CopyHeader is a stored message's headers as a new publish of it may
// carry them: without the server's own (batch, expectations), but with the
// message ID, which deduplicates as it did.
func CopyHeader(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "Nats-") && k != jetstream.MsgIDHeader {
			continue
		}
		out[k] = slices.Clone(v)
	}
	return out
}

// Finish moves the jobs an upgrade copied aside into the job stream
// (step 4 above), if there are any.
func (u Upgrade) Finish(ctx context.Context, stream jetstream.Stream) error {
	js := u.JS
	hold, err := js.Stream(ctx, UpgradeStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: stream %s: %w", UpgradeStream, err)
	}
	for {
		msg, err := hold.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(upgradePrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("buffer: read stream %s: %w", UpgradeStream, err)
		}
		subj := msg.Header.Get(headerUpgradeSubject)
		switch _, err := stream.GetLastMsgForSubject(ctx, subj); {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			m := nats.NewMsg(subj)
			m.Header = CopyHeader(msg.Header)
			m.Header.Del(headerUpgradeSubject)
			m.Data = msg.Data
			if _, err := js.PublishMsg(ctx, m); err != nil {
				return fmt.Errorf("buffer: move job back from stream %s: %w", UpgradeStream, store.PublishError(err))
			}
		case err != nil:
			return fmt.Errorf("buffer: read job %s: %w", subj, err)
		}
		// Moved, now or before.
		if err := hold.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("buffer: remove moved job from stream %s: %w", UpgradeStream, err)
		}
	}
	u.step("moved")
	if err := js.DeleteStream(ctx, UpgradeStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("buffer: remove stream %s: %w", UpgradeStream, err)
	}
	return nil
}
